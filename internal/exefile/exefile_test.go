package exefile

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestIs(t *testing.T) {
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a"), filepath.Join(dir, "b")
	for _, p := range []string{a, b} {
		if err := os.WriteFile(p, []byte(p), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	link := filepath.Join(dir, "link")
	if err := os.Symlink(a, link); err != nil {
		t.Fatal(err)
	}
	var st unix.Stat_t
	if err := unix.Stat(a, &st); err != nil {
		t.Fatal(err)
	}
	dev := KernelDevOf(st.Dev)
	c := New()
	for _, tc := range []struct {
		path string
		dev  uint32
		ino  uint64
		want bool
	}{
		{a, dev, st.Ino, true},
		{link, dev, st.Ino, true},   // symlinks are followed, as exec does
		{b, dev, st.Ino, false},     // another file
		{a, dev + 1, st.Ino, false}, // same inode number, another file system
		{filepath.Join(dir, "gone"), dev, st.Ino, false},
		{"a", dev, st.Ino, false}, // relative
		{a, dev, 0, false},
	} {
		if got := c.Is(tc.path, tc.dev, tc.ino); got != tc.want {
			t.Errorf("Is(%q, %d, %d) = %v, want %v", tc.path, tc.dev, tc.ino, got, tc.want)
		}
	}
}

func TestReadMountDevs(t *testing.T) {
	p := filepath.Join(t.TempDir(), "mountinfo")
	if err := os.WriteFile(p, []byte("22 1 254:0 / / rw,relatime - ext4 /dev/vda rw\nbad line\n40 22 0:33 / /mnt rw - btrfs x rw\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	devs, err := readMountDevs(p)
	if err != nil {
		t.Fatal(err)
	}
	if devs[22] != 254<<20 || devs[40] != 33 || len(devs) != 2 {
		t.Errorf("readMountDevs = %v", devs)
	}
}

// TestNewHostLooksUpInPID1sRoot: the agent's Checker looks paths up in
// PID 1's root, symbolic links resolved inside it, not in the agent's own
// (a sandbox's mount namespace can have another /tmp). A fake /proc whose
// 1/root is a directory stands in for PID 1.
func TestNewHostLooksUpInPID1sRoot(t *testing.T) {
	proc := t.TempDir()
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(proc, "1"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(root, filepath.Join(proc, "1", "root")); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(proc, "1", "ns"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/proc/self/ns/mnt", filepath.Join(proc, "1", "ns", "mnt")); err != nil {
		t.Fatal(err)
	}
	mi, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(proc, "1", "mountinfo"), mi, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(root, "usr/bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	inRoot := filepath.Join(root, "usr/bin/tool")
	if err := os.WriteFile(inRoot, []byte("x"), 0o755); err != nil {
		t.Fatal(err)
	}
	// An absolute link inside the root leads to the root's file.
	if err := os.Symlink("/usr/bin/tool", filepath.Join(root, "usr/bin/link")); err != nil {
		t.Fatal(err)
	}
	c, ns, ok := NewHost(proc)
	if !ok || ns == 0 {
		t.Fatal("NewHost: no root")
	}
	defer c.Close()
	var st unix.Stat_t
	if err := unix.Stat(inRoot, &st); err != nil {
		t.Fatal(err)
	}
	dev := KernelDevOf(st.Dev)
	if !c.Is("/usr/bin/tool", dev, st.Ino) || !c.Is("/usr/bin/link", dev, st.Ino) {
		t.Error("the root's file (or a link to it inside the root) is not found through the root")
	}
	want := File{Dev: dev, Ino: st.Ino, CtimeSec: st.Ctim.Sec, CtimeNsec: uint32(st.Ctim.Nsec), Nlink: 1}
	if f, ok := c.Identity("/usr/bin/tool"); !ok || f != want {
		t.Errorf("Identity = %+v, %v; want %+v", f, ok, want)
	}
	// A rename changes the file's ctime, which the kernel compares. (On
	// a kernel without fine-grained timestamps, a rename within the same
	// clock tick as the last change keeps it: rename until a tick passed.)
	for deadline := time.Now().Add(time.Second); ; {
		if err := os.Rename(inRoot, inRoot+".new"); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(inRoot+".new", inRoot); err != nil {
			t.Fatal(err)
		}
		f, ok := c.Identity("/usr/bin/tool")
		if !ok || f.Ino != want.Ino || f.Dev != want.Dev {
			t.Fatalf("Identity after two renames = %+v, %v; want the same file (%+v)", f, ok, want)
		}
		if f.CtimeSec != want.CtimeSec || f.CtimeNsec != want.CtimeNsec {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("renames for 1s did not change the file's ctime (%+v)", f)
		}
	}
	if c.Is(inRoot, dev, st.Ino) {
		t.Error("the caller's path to the file was looked up in the caller's root")
	}
	if c, ns, ok := NewHost(filepath.Join(proc, "missing")); ok || ns != 0 {
		t.Errorf("NewHost with neither PID 1 nor the parent in reach: %v, %d; want its own (none here)", ok, ns)
		c.Close()
	}
}
