package procid

// The eBPF objects are generated from bpf/procid.c and committed, so that
// building Bastion never needs clang. Regenerate with `go generate` after
// changing the C source (needs clang, llvm-strip and libbpf-dev).
//go:generate go tool bpf2go -cc clang -cflags "-O2 -g -Wall -mcpu=v3" -target bpfel -type flow_key -type flow_value -type exec_value -type parse_result -type recent_flow procid ../../bpf/procid.c -- -I../../bpf
