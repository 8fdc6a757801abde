// Package kernelfeature probes the running kernel for the eBPF features
// Bastion's process identification uses: kernel BTF, the netfilter BPF link,
// cgroup sockops and sock_addr hooks, and tp_btf tracepoints.
//
// It is the one place that knows how each feature is probed. The agent
// reports the results in its status (procid.Detect), and the tests gate on
// them (testenv.RequireKernelFeature): a feature the kernel lacks is skipped,
// a feature it has must work.
//
// Trust boundary: none. The probes load tiny programs of their own and need
// the same privileges as the agent (CAP_BPF, or root); they read nothing
// another user controls.
package kernelfeature
