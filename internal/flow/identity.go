package flow

import "strconv"

// ExeIdentity says how far Process.Exe can be trusted to name the program a
// process runs.
//
// A path alone proves nothing: in a mount namespace of its own (`unshare
// -Urm`, which any user may run) a process can bind-mount any program over
// /usr/bin/curl, and the kernel then reports /usr/bin/curl as its
// executable. What a process cannot fake is the file itself — the
// executable's device and inode, read by the kernel — and the mount
// namespace it runs in. The agent compares both with its own namespace (the
// host's): only an ExeHost process is the program the host has at Exe.
type ExeIdentity uint8

const (
	// ExeUnchecked: the executable's identity is not known (the process
	// was not identified, or it is gone and was never checked).
	ExeUnchecked ExeIdentity = iota
	// ExeHost: the process runs in the host's mount namespace and the
	// host's file at Exe is the very file it runs.
	ExeHost
	// ExeDeleted: the process runs in the host's mount namespace, but
	// the file it runs was deleted or replaced at Exe since it started.
	ExeDeleted
	// ExeOtherNSHostFile: the process runs in another mount namespace
	// (a container, Flatpak, Snap); the host's file at Exe is the file it
	// runs.
	ExeOtherNSHostFile
	// ExeOtherNS: the process runs in another mount namespace, and Exe
	// is only the path inside it: the host has another file there, or
	// none.
	ExeOtherNS
)

func (i ExeIdentity) String() string {
	switch i {
	case ExeHost:
		return "host"
	case ExeDeleted:
		return "deleted"
	case ExeOtherNSHostFile:
		return "other-mount-ns-host-file"
	case ExeOtherNS:
		return "other-mount-ns"
	}
	return "unchecked"
}

// ExeVerified reports whether Exe names the program: the process runs in
// the host's mount namespace and the host's file at Exe is the one it runs.
//
// SECURITY: path and glob rules, and cached decisions keyed by path, apply
// only to processes for which this holds.
func (p Process) ExeVerified() bool { return p.ExeIdentity == ExeHost && p.Exe != "" }

// ExeDisplay is Exe as people should read it: for a process whose path is
// known not to be the host's file, it says so, and in which mount namespace
// the process runs ("" when Exe is unknown). An unchecked path is shown as
// it is; no path rule matches it either way.
func (p Process) ExeDisplay() string {
	if p.Exe == "" {
		return ""
	}
	ns := strconv.FormatUint(uint64(p.MntNS), 10)
	switch p.ExeIdentity {
	case ExeDeleted:
		return p.Exe + " (deleted)"
	case ExeOtherNSHostFile:
		return p.Exe + " (in mount namespace " + ns + ", the host's file)"
	case ExeOtherNS:
		return p.Exe + " (in mount namespace " + ns + ", not the host's file)"
	}
	return p.Exe
}
