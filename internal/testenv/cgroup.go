package testenv

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/bastion-fw/bastion/internal/cgroup2"
)

// Cgroup is a cgroup v2 child made for one test, directly under the cgroup2
// mount.
type Cgroup struct {
	Path string // e.g. /sys/fs/cgroup/unified/bastion-test-1a2b3c4d
	dir  *os.File
}

// NewCgroup creates a child cgroup that is removed when t ends, after the
// processes still in it (all of which the test put there) are killed.
func NewCgroup(t testing.TB) *Cgroup {
	t.Helper()
	RequireRoot(t)
	cg, err := CreateCgroup()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := cg.Delete(); err != nil {
			t.Errorf("delete cgroup: %v", err)
		}
	})
	return cg
}

// CreateCgroup is NewCgroup for programs; the caller must Delete it.
func CreateCgroup() (*Cgroup, error) {
	root, err := cgroup2.Mount()
	if err != nil {
		return nil, err
	}
	path := filepath.Join(root, "bastion-test-"+randomSuffix(4))
	if err := os.Mkdir(path, 0o755); err != nil {
		return nil, fmt.Errorf("create cgroup: %w", err)
	}
	dir, err := os.Open(path)
	if err != nil {
		os.Remove(path)
		return nil, fmt.Errorf("open cgroup: %w", err)
	}
	return &Cgroup{Path: path, dir: dir}, nil
}

// FD is an open descriptor of the cgroup directory, for
// SysProcAttr.CgroupFD or BPF cgroup attachments. It stays valid until
// Delete.
func (c *Cgroup) FD() int { return int(c.dir.Fd()) }

// Add moves process pid into the cgroup.
func (c *Cgroup) Add(pid int) error {
	if err := os.WriteFile(filepath.Join(c.Path, "cgroup.procs"), []byte(strconv.Itoa(pid)), 0o644); err != nil {
		return fmt.Errorf("add pid %d to cgroup %s: %w", pid, c.Path, err)
	}
	return nil
}

// PIDs lists the processes in the cgroup.
func (c *Cgroup) PIDs() ([]int, error) {
	data, err := os.ReadFile(filepath.Join(c.Path, "cgroup.procs"))
	if err != nil {
		return nil, fmt.Errorf("list cgroup %s: %w", c.Path, err)
	}
	var pids []int
	for _, f := range strings.Fields(string(data)) {
		pid, err := strconv.Atoi(f)
		if err != nil {
			return nil, fmt.Errorf("list cgroup %s: %w", c.Path, err)
		}
		pids = append(pids, pid)
	}
	return pids, nil
}

// Delete kills, by PID, every process left in the cgroup (only the test
// puts processes there), waits for it to empty and removes it.
func (c *Cgroup) Delete() error {
	defer c.dir.Close()
	// Bounded: each round kills what is listed; children forked meanwhile
	// are caught by the next round.
	for range 50 {
		pids, err := c.PIDs()
		if err != nil {
			return err
		}
		if len(pids) == 0 {
			break
		}
		for _, pid := range pids {
			syscall.Kill(pid, syscall.SIGKILL)
		}
		Poll(200*time.Millisecond, func() bool {
			p, err := c.PIDs()
			return err != nil || len(p) == 0
		})
	}
	var err error
	// rmdir fails with EBUSY until the killed tasks are fully gone.
	Poll(5*time.Second, func() bool {
		err = os.Remove(c.Path)
		return err == nil
	})
	if err != nil {
		return fmt.Errorf("remove cgroup: %w", err)
	}
	return nil
}
