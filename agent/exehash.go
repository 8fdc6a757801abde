package agent

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"

	"github.com/bastion-fw/bastion/internal/exefile"
	"github.com/bastion-fw/bastion/internal/flow"
)

// Cost. Hashing an executable reads the whole file: ~1.1 ms per MiB from
// the page cache on the development VM (SHA-NI), so ~110 ms for a 100 MiB
// browser binary, more from disk. It happens on the queue's goroutine and
// every queued packet waits behind it, so it is done only when the
// connection's UID has a sha256 rule (uidRules.hashes) and the matcher gets
// as far as asking (rules.Conn.SHA256 is lazy), and each image is hashed
// once: the digest is cached by the file's identity. A connection of an
// image already hashed costs an open of /proc/<tgid>/exe, a read of
// /proc/<tgid>/stat and two fstats: ~45 us (BenchmarkExeHashCached), against
// ~1.5 us for the rest of Handle.

// maxHashedExeSize bounds the file read on the packet path; a larger file
// gets no hash, so sha256 rules do not match it.
const maxHashedExeSize = 1 << 30

// maxHashCache bounds the hash cache; past it, an arbitrary entry is evicted.
const maxHashCache = 1024

// exeIdentity names one version of one file: replacing or rewriting the
// file changes the inode, size, mtime or ctime.
type exeIdentity struct {
	path       string
	dev, ino   uint64
	size       int64
	mtimeNanos int64
	ctimeNanos int64
}

// exeHasher computes and caches executables' SHA-256 digests. It is safe for
// concurrent use.
type exeHasher struct {
	// procDir is the proc file system of the agent's PID namespace.
	procDir string

	// files checks host files against processes' executables, for rules
	// that name a host file for every mount namespace.
	files *exefile.Checker

	mu    sync.Mutex
	cache map[exeIdentity]string
}

func newExeHasher(procDir string) *exeHasher {
	return &exeHasher{procDir: procDir, cache: make(map[exeIdentity]string), files: exefile.New()}
}

// Sum returns the hex SHA-256 of the image proc runs. While the process is
// alive it reads /proc/<tgid>/exe, which is the file the kernel mapped even
// if the path has since been replaced or deleted; otherwise it reads
// proc.Exe, whose content may have changed since the process started.
func (h *exeHasher) Sum(proc flow.Process) (string, error) {
	if proc.Exe == "" {
		return "", errors.New("hash executable: unknown executable")
	}
	if f := h.openRunning(proc); f != nil {
		defer f.Close()
		return h.sumFile(f, proc.Exe)
	}
	// SECURITY: the host's file at the path is the process's only if its
	// identity was verified; a masquerader's path names someone else's.
	if !proc.ExeVerified() {
		return "", fmt.Errorf("hash executable %s: the process is gone and its path is not the host's file", proc.Exe)
	}
	f, err := os.Open(proc.Exe)
	if err != nil {
		return "", fmt.Errorf("hash executable: %w", err)
	}
	defer f.Close()
	return h.sumFile(f, proc.Exe)
}

// openRunning opens the image of the live process proc, or returns nil when
// that process is gone (or unknown).
func (h *exeHasher) openRunning(proc flow.Process) *os.File {
	if proc.TGID == 0 || proc.StartTime == 0 {
		return nil
	}
	dir := filepath.Join(h.procDir, strconv.FormatUint(uint64(proc.TGID), 10))
	f, err := os.Open(dir + "/exe")
	if err != nil {
		return nil
	}
	// SECURITY: the PID may have been reused by another program since the
	// packet was sent. The start time, read after the open, tells whether
	// the file we hold is the image of the very process that connected: a
	// PID cannot come back to an earlier process.
	ticks, err := readStartTicks(dir + "/stat")
	if err != nil || ticks*nsPerTick != proc.StartTime/nsPerTick*nsPerTick {
		f.Close()
		return nil
	}
	return f
}

func (h *exeHasher) sumFile(f *os.File, path string) (string, error) {
	fi, err := f.Stat()
	if err != nil {
		return "", fmt.Errorf("hash executable: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return "", fmt.Errorf("hash executable %s: not a regular file", path)
	}
	if fi.Size() > maxHashedExeSize {
		return "", fmt.Errorf("hash executable %s: %d bytes is more than the %d hashed on the packet path", path, fi.Size(), maxHashedExeSize)
	}
	id := exeIdentity{path: path, size: fi.Size(), mtimeNanos: fi.ModTime().UnixNano()}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		id.dev, id.ino = st.Dev, st.Ino
		id.ctimeNanos = st.Ctim.Nano()
	}
	h.mu.Lock()
	sum, ok := h.cache[id]
	h.mu.Unlock()
	if ok {
		return sum, nil
	}
	d := sha256.New()
	if _, err := io.Copy(d, io.LimitReader(f, maxHashedExeSize+1)); err != nil {
		return "", fmt.Errorf("hash executable %s: %w", path, err)
	}
	sum = hex.EncodeToString(d.Sum(nil))
	// A file that changed while it was read must not be cached under the
	// identity it had before.
	if fi2, err := f.Stat(); err != nil || fi2.Size() != fi.Size() || !fi2.ModTime().Equal(fi.ModTime()) {
		return sum, nil
	}
	h.mu.Lock()
	if len(h.cache) >= maxHashCache {
		for k := range h.cache {
			delete(h.cache, k)
			break
		}
	}
	h.cache[id] = sum
	h.mu.Unlock()
	return sum, nil
}

// nsPerTick converts /proc's clock ticks (USER_HZ, 100 on every Linux
// architecture Bastion supports) to nanoseconds.
const nsPerTick = 1_000_000_000 / 100

// readStartTicks reads field 22 (starttime) of a /proc/<pid>/stat file.
func readStartTicks(path string) (uint64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, fmt.Errorf("read start time: %w", err)
	}
	return parseStartTicks(b)
}

// parseStartTicks parses the start time out of a stat line. The command
// name (field 2) is chosen by the process and may hold spaces and
// parentheses, so fields are counted after its last ')'.
func parseStartTicks(b []byte) (uint64, error) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, errors.New("parse start time: no command name")
	}
	fields := bytes.Fields(b[i+1:])
	const startField = 22 - 3 // fields after the name start at field 3
	if len(fields) <= startField {
		return 0, errors.New("parse start time: too few fields")
	}
	v, err := strconv.ParseUint(string(fields[startField]), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("parse start time: %w", err)
	}
	return v, nil
}

// connHash is the lazy SHA256 function of one rules.Conn: the matcher may
// ask several times, the file is looked at once.
type connHash struct {
	h    *exeHasher
	proc flow.Process
	done bool
	sum  string
	err  error
}

func (c *connHash) sha256() (string, error) {
	if !c.done {
		c.sum, c.err = c.h.Sum(c.proc)
		c.done = true
	}
	return c.sum, c.err
}
