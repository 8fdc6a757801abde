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
	// root, when not -1, is a descriptor of the root paths are looked up
	// in (the host's, see NewHost); -1 is the caller's own.
	root int

	mu sync.Mutex
	// devs maps the caller's mount IDs to their file system's kernel
	// dev_t, from mountinfo. stat(2) reports a per-subvolume device on
	// btrfs, not the super block's, which the kernel side reads; the
	// mount's entry gives the super block's.
	devs map[uint64]uint32
}

// New returns a Checker that looks paths up from the caller's root and
// reads the caller's mounts from /proc/self/mountinfo when it needs them.
func New() *Checker {
	return &Checker{mountinfo: "/proc/self/mountinfo", root: -1, devs: make(map[uint64]uint32)}
}

// NewHost returns a Checker that looks paths up in the host's mount
// namespace, symbolic links resolved inside it, with that namespace's
// mounts, and the namespace's inode number. The agent may run in a mount
// namespace of its own (systemd's ProtectSystem= and PrivateTmp= make
// one) where /tmp, say, is not the host's, and its own namespace would
// then be no process's. The host's is PID 1's, when the caller may read
// it (root with CAP_SYS_PTRACE); else the caller's parent's at the time of
// the call (a wrapper such as unshare, or a shell, that started it; on
// machines whose PID 1 belongs to an outer user namespace); else the
// caller's own, with ok false.
func NewHost(procDir string) (c *Checker, mntNS uint32, ok bool) {
	for _, pid := range []int{1, os.Getppid()} {
		dir := procDir + "/" + strconv.Itoa(pid)
		root, err := unix.Open(dir+"/root", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			continue
		}
		ns, err := nsInode(dir + "/ns/mnt")
		if err != nil {
			unix.Close(root)
			continue
		}
		// The root stays open for the Checker's life: the process it
		// was reached through may end.
		return &Checker{mountinfo: dir + "/mountinfo", root: root, devs: make(map[uint64]uint32)}, ns, true
	}
	ns, _ := nsInode(procDir + "/self/ns/mnt")
	return New(), ns, false
}

// HostMountNS returns the inode number of the mount namespace NewHost
// takes for the host's, and whether it is not merely the caller's own.
func HostMountNS(procDir string) (uint32, bool) {
	c, ns, ok := NewHost(procDir)
	c.Close()
	return ns, ok
}

// Close releases the host root NewHost holds; the Checker then looks paths
// up from the caller's root.
func (c *Checker) Close() {
	if c.root >= 0 {
		unix.Close(c.root)
		c.root = -1
	}
}

func nsInode(path string) (uint32, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return 0, err
	}
	return uint32(st.Ino), nil
}

// statx stats path (symlinks followed) from c's root.
func (c *Checker) statx(path string, stx *unix.Statx_t) error {
	const mask = unix.STATX_INO | unix.STATX_MNT_ID | unix.STATX_CTIME | unix.STATX_NLINK
	if c.root < 0 {
		return unix.Statx(unix.AT_FDCWD, path, 0, mask, stx)
	}
	fd, err := unix.Openat2(c.root, path, &unix.OpenHow{Flags: unix.O_PATH | unix.O_CLOEXEC, Resolve: unix.RESOLVE_IN_ROOT})
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	return unix.Statx(fd, "", unix.AT_EMPTY_PATH, mask, stx)
}

// Is reports whether the file at path (symlinks followed, as exec would)
// is the file with kernel dev_t dev (MAJOR<<20|MINOR, super_block.s_dev)
// and inode ino. A relative path is never the file.
func (c *Checker) Is(path string, dev uint32, ino uint64) bool {
	if !strings.HasPrefix(path, "/") || ino == 0 {
		return false
	}
	var stx unix.Statx_t
	if err := c.statx(path, &stx); err != nil {
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

// File is a file's identity as the kernel knows it.
type File struct {
	// Dev is its file system's dev_t (MAJOR<<20|MINOR, super_block.s_dev),
	// as Is compares it; Ino its inode number.
	Dev uint32
	Ino uint64
	// CtimeSec and CtimeNsec are its status-change time.
	CtimeSec  int64
	CtimeNsec uint32
	// Nlink is its number of names (hard links).
	Nlink uint32
}

// Identity returns the kernel's identity of the file at path (symlinks
// followed, as exec would).
func (c *Checker) Identity(path string) (File, bool) {
	if !strings.HasPrefix(path, "/") {
		return File{}, false
	}
	var stx unix.Statx_t
	if err := c.statx(path, &stx); err != nil || stx.Ino == 0 || stx.Mask&unix.STATX_CTIME == 0 {
		return File{}, false
	}
	f := File{Dev: KernelDev(stx.Dev_major, stx.Dev_minor), Ino: stx.Ino, CtimeSec: stx.Ctime.Sec, CtimeNsec: stx.Ctime.Nsec, Nlink: stx.Nlink}
	// On btrfs stat reports the subvolume's device; the kernel side
	// reads the super block's, which the mount names.
	if stx.Mask&unix.STATX_MNT_ID != 0 {
		if d := c.mountDev(stx.Mnt_id); d != 0 {
			f.Dev = d
		}
	}
	return f, true
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
