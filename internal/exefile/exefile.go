// Package exefile tells whether the file at a path, in the caller's own
// mount namespace, is a given file: the same inode on the same file system,
// as the kernel identifies an executable that a process runs.
//
// Trust boundary: the path and the identity come from other processes (the
// path is whatever a process's own mount namespace shows); only the stat
// made here, from the caller's root, is trusted.
package exefile

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

// Checker compares files with kernel identities. It is safe for concurrent
// use.
type Checker struct {
	mountinfo string

	mu sync.Mutex
	// devs maps the caller's mount IDs to their file system's kernel
	// dev_t, from mountinfo. stat(2) reports a per-subvolume device on
	// btrfs, not the super block's, which the kernel side reads; the
	// mount's entry gives the super block's.
	devs map[uint64]uint32
}

// New returns a Checker that reads the caller's mounts from
// /proc/self/mountinfo when it needs them.
func New() *Checker {
	return &Checker{mountinfo: "/proc/self/mountinfo", devs: make(map[uint64]uint32)}
}

// Is reports whether the file at path (symlinks followed, as exec would)
// is the file with kernel dev_t dev (MAJOR<<20|MINOR, super_block.s_dev)
// and inode ino. A relative path is never the file.
func (c *Checker) Is(path string, dev uint32, ino uint64) bool {
	if !strings.HasPrefix(path, "/") || ino == 0 {
		return false
	}
	var stx unix.Statx_t
	if err := unix.Statx(unix.AT_FDCWD, path, 0, unix.STATX_INO|unix.STATX_MNT_ID, &stx); err != nil {
		return false
	}
	if stx.Ino != ino {
		return false
	}
	if KernelDev(stx.Dev_major, stx.Dev_minor) == dev {
		return true
	}
	if stx.Mask&unix.STATX_MNT_ID == 0 {
		return false
	}
	return c.mountDev(stx.Mnt_id) == dev
}

// Identity returns the kernel's identity of the file at path (symlinks
// followed, as exec would): its file system's dev_t, as Is compares it, and
// its inode.
func (c *Checker) Identity(path string) (dev uint32, ino uint64, ok bool) {
	if !strings.HasPrefix(path, "/") {
		return 0, 0, false
	}
	var stx unix.Statx_t
	if err := unix.Statx(unix.AT_FDCWD, path, 0, unix.STATX_INO|unix.STATX_MNT_ID, &stx); err != nil || stx.Ino == 0 {
		return 0, 0, false
	}
	dev = KernelDev(stx.Dev_major, stx.Dev_minor)
	// On btrfs stat reports the subvolume's device; the kernel side
	// reads the super block's, which the mount names.
	if stx.Mask&unix.STATX_MNT_ID != 0 {
		if d := c.mountDev(stx.Mnt_id); d != 0 {
			dev = d
		}
	}
	return dev, stx.Ino, true
}

// KernelDev encodes major:minor as the kernel's dev_t (MAJOR<<20|MINOR),
// the form eBPF programs read from super_block.s_dev.
func KernelDev(major, minor uint32) uint32 { return major<<20 | minor&0xfffff }

// KernelDevOf converts a stat(2) st_dev to the kernel's dev_t encoding.
func KernelDevOf(stDev uint64) uint32 { return KernelDev(unix.Major(stDev), unix.Minor(stDev)) }

// mountDev returns the super block dev_t of mount id, 0 when unknown.
// Mount IDs are not reused while the mount exists; a miss re-reads
// mountinfo once.
func (c *Checker) mountDev(id uint64) uint32 {
	c.mu.Lock()
	defer c.mu.Unlock()
	if d, ok := c.devs[id]; ok {
		return d
	}
	devs, err := readMountDevs(c.mountinfo)
	if err != nil {
		return 0
	}
	c.devs = devs
	return devs[id]
}

// readMountDevs parses "36 35 98:0 / /mnt rw ..." lines: the mount ID and
// the file system's major:minor.
func readMountDevs(path string) (map[uint64]uint32, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read mountinfo: %w", err)
	}
	defer f.Close()
	devs := make(map[uint64]uint32)
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	for sc.Scan() {
		fields := strings.SplitN(sc.Text(), " ", 4)
		if len(fields) < 3 {
			continue
		}
		id, err := strconv.ParseUint(fields[0], 10, 64)
		if err != nil {
			continue
		}
		maj, min, ok := strings.Cut(fields[2], ":")
		if !ok {
			continue
		}
		ma, err1 := strconv.ParseUint(maj, 10, 32)
		mi, err2 := strconv.ParseUint(min, 10, 32)
		if err1 != nil || err2 != nil {
			continue
		}
		devs[id] = KernelDev(uint32(ma), uint32(mi))
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read mountinfo: %w", err)
	}
	return devs, nil
}
