package agent

import (
	"strconv"

	"github.com/bastion-fw/bastion/internal/flow"
)

// exeKey is the executable as pending entries and cached decisions are keyed
// by: the path for a process whose path is verified to be the host's file
// (flow.Process.ExeVerified); otherwise a key no such process can have.
//
// SECURITY: a decision made for the real /usr/bin/curl must not cover a
// process that only shows that path from a mount namespace of its own, and
// two such processes must not share one pending entry (the answer to the
// first would decide the second). The key of an unverified process names
// its mount namespace and the file it runs (device and inode), or, when the
// file is unknown, the process itself. It starts with a NUL byte, which no
// path holds.
func exeKey(p flow.Process) string {
	if p.Exe == "" || p.ExeVerified() {
		return p.Exe
	}
	k := "\x00" + p.ExeIdentity.String() + " mnt_ns=" + strconv.FormatUint(uint64(p.MntNS), 10)
	if p.ExeIno != 0 {
		k += " dev=" + strconv.FormatUint(uint64(p.ExeDev), 10) + " ino=" + strconv.FormatUint(p.ExeIno, 10)
	} else {
		k += " tgid=" + strconv.FormatUint(uint64(p.TGID), 10) + " start=" + strconv.FormatUint(p.StartTime, 10)
	}
	return k + " " + p.Exe
}
