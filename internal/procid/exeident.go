package procid

import (
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/bastion-fw/bastion/internal/exefile"
	"github.com/bastion-fw/bastion/internal/flow"
)

// exeChecker decides a process's flow.ExeIdentity: whether the file it
// runs (device and inode, from the kernel) is the file the agent's own mount
// namespace, the host's, has at the path the process was named by, and
// whether the process runs in that namespace.
//
// SECURITY: the path is what the process's own mount namespace shows, and
// any user can make a namespace in which /usr/bin/curl is another program.
// Only the device and inode (which no mount changes) and the namespace
// check tie the path to the host's file. Paths are looked up in PID 1's
// root, the host's, whatever mount namespace the agent runs in.
type exeChecker struct {
	hostMntNS uint32
	files     *exefile.Checker
}

// newExeChecker takes the host's mount namespace and files from
// exefile.NewHost: the agent may run in a mount namespace of its own
// (systemd's sandboxing makes one), and its own would then be no process's.
func newExeChecker(procDir string) (*exeChecker, error) {
	files, ns, _ := exefile.NewHost(procDir)
	if ns == 0 {
		return nil, fmt.Errorf("read the host's mount namespace in %s", procDir)
	}
	return &exeChecker{hostMntNS: ns, files: files}, nil
}

func nsInode(path string) (uint32, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return 0, err
	}
	return uint32(st.Ino), nil
}

// check sets p.ExeIdentity from p.Exe, p.ExeDev, p.ExeIno and p.MntNS.
func (c *exeChecker) check(p *flow.Process) {
	p.ExeIdentity = flow.ExeUnchecked
	if c == nil || p.Exe == "" || p.ExeIno == 0 || p.MntNS == 0 {
		return
	}
	same := c.files.Is(p.Exe, p.ExeDev, p.ExeIno)
	host := p.MntNS == c.hostMntNS
	switch {
	case host && same:
		p.ExeIdentity = flow.ExeHost
	case host:
		p.ExeIdentity = flow.ExeDeleted
	case same:
		p.ExeIdentity = flow.ExeOtherNSHostFile
	default:
		p.ExeIdentity = flow.ExeOtherNS
	}
}
