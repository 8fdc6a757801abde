package testenv

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Cgroup is a cgroup v2 child made for one test, directly under the cgroup2
// mount.
type Cgroup struct {
	Path string // e.g. /sys/fs/cgroup/unified/bastion-test-1a2b3c4d
	dir  *os.File
}

// Cgroup2Mount returns where the cgroup v2 hierarchy is mounted, read from
// /proc/self/mountinfo (here /sys/fs/cgroup/unified, elsewhere often
// /sys/fs/cgroup).
func Cgroup2Mount() (string, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return "", fmt.Errorf("find cgroup2 mount: %w", err)
	}
	defer f.Close()
	return parseCgroup2Mount(f)
}

func parseCgroup2Mount(f io.Reader) (string, error) {
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// "36 25 0:30 / /sys/fs/cgroup rw,... shared:9 - cgroup2 cgroup2 rw"
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		if !ok {
			continue
		}
		fields, postFields := strings.Fields(pre), strings.Fields(post)
		if len(fields) >= 5 && len(postFields) >= 1 && postFields[0] == "cgroup2" {
			return unescapeMountPath(fields[4]), nil
		}
	}
	if err := sc.Err(); err != nil {
		return "", fmt.Errorf("find cgroup2 mount: %w", err)
	}
	return "", errors.New("find cgroup2 mount: no cgroup2 file system is mounted")
}

// unescapeMountPath undoes mountinfo's octal escapes (\040 for a space).
func unescapeMountPath(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
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
	root, err := Cgroup2Mount()
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
