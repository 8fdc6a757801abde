package procfs

import (
	"errors"
	"fmt"
	"io/fs"
	"strconv"
	"strings"
)

// Bounds of the /proc/*/fd scan.
const (
	// maxScanFDs stops a scan after this many readlink calls, so that a
	// host with millions of descriptors cannot stall the caller for
	// seconds. A scan that hits it reports ErrNotFound.
	maxScanFDs = 1 << 20
	// maxCacheEntries bounds the inode cache; it is cleared when full.
	maxCacheEntries = 1 << 16
)

// errScanLimit is returned when a scan gave up at maxScanFDs.
var errScanLimit = errors.New("procfs: fd scan limit reached")

// fdRef says where a socket inode was last seen: /proc/<tgid>/fd/<fd>.
type fdRef struct {
	tgid uint32
	fd   string
}

// inodeScanner finds which process holds a socket inode.
//
// Cost: a miss reads /proc (one getdents per process), then one getdents per
// /proc/<pid>/fd and one readlink per descriptor until the inode turns up:
// on a desktop with ~400 processes and ~20k descriptors that is tens of
// milliseconds. Every socket seen on the way is remembered, so the sockets of
// the same and earlier-scanned processes hit the cache afterwards; a hit costs
// one readlink to confirm the entry is still true.
//
// Only /proc/<tgid>/fd is read: threads share their process's descriptor
// table, and /proc lists only thread-group leaders.
//
// Not safe for concurrent use.
type inodeScanner struct {
	fsys  fs.FS
	cache map[uint64]fdRef
}

func newInodeScanner(fsys fs.FS) *inodeScanner {
	return &inodeScanner{fsys: fsys, cache: make(map[uint64]fdRef)}
}

// find returns the TGID of a process holding socket inode, or an error
// wrapping ErrNotFound.
func (s *inodeScanner) find(inode uint64) (uint32, error) {
	if ref, ok := s.cache[inode]; ok {
		if s.holds(ref, inode) {
			return ref.tgid, nil
		}
		delete(s.cache, inode)
	}
	return s.scan(inode)
}

// holds reports whether ref still refers to socket inode.
func (s *inodeScanner) holds(ref fdRef, inode uint64) bool {
	target, err := fs.ReadLink(s.fsys, strconv.FormatUint(uint64(ref.tgid), 10)+"/fd/"+ref.fd)
	if err != nil {
		return false
	}
	got, ok := socketInode(target)
	return ok && got == inode
}

func (s *inodeScanner) scan(inode uint64) (uint32, error) {
	procs, err := fs.ReadDir(s.fsys, ".")
	if err != nil {
		return 0, fmt.Errorf("scan /proc: %w", err)
	}
	budget := maxScanFDs
	for _, p := range procs {
		tgid, err := strconv.ParseUint(p.Name(), 10, 32)
		if err != nil || tgid == 0 {
			continue // not a process: "self", "net", ...
		}
		dir := p.Name() + "/fd"
		fds, err := fs.ReadDir(s.fsys, dir)
		if err != nil {
			// Vanished mid-scan, a zombie, or another user's
			// process we may not look into: none is an error.
			continue
		}
		for _, fd := range fds {
			if budget == 0 {
				return 0, fmt.Errorf("find socket inode %d: %w: %w", inode, errScanLimit, ErrNotFound)
			}
			budget--
			target, err := fs.ReadLink(s.fsys, dir+"/"+fd.Name())
			if err != nil {
				continue // closed meanwhile
			}
			ino, ok := socketInode(target)
			if !ok {
				continue
			}
			if len(s.cache) >= maxCacheEntries {
				clear(s.cache)
			}
			ref := fdRef{tgid: uint32(tgid), fd: fd.Name()}
			s.cache[ino] = ref
			if ino == inode {
				return ref.tgid, nil
			}
		}
	}
	return 0, fmt.Errorf("find socket inode %d: %w", inode, ErrNotFound)
}

// socketInode parses a descriptor link target "socket:[12345]".
func socketInode(target string) (uint64, bool) {
	s, ok := strings.CutPrefix(target, "socket:[")
	if !ok {
		return 0, false
	}
	s, ok = strings.CutSuffix(s, "]")
	if !ok {
		return 0, false
	}
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, false
	}
	return n, true
}
