package exefile

import (
	"os"
	"path/filepath"
	"testing"

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
