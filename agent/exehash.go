package agent

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/bastion-fw/bastion/internal/exefile"
	"github.com/bastion-fw/bastion/internal/flow"
)

// Cost. Hashing an executable reads the whole file: ~1.1 ms per MiB from
// the page cache on the development VM (SHA-NI), so ~110 ms for a 100 MiB
// browser binary and over a second for a 1 GB file. It never happens on the
// packet goroutine: a UID's rules are matched on that UID's worker
// (ruleworker.go), which asks the hasher and waits, at most until the
// connection's prompt deadline, for its own UID's hash. The hasher is one
// goroutine that reads HashChunk bytes at a time, taking turns between the
// UIDs that wait, within a global budget of hashBytesPerSec. Each image is
// hashed once: the digest is cached by the file's identity. A connection of
// an image already hashed costs an open of /proc/<tgid>/exe, a read of
// /proc/<tgid>/stat and an fstat (BenchmarkExeHashCached).

const (
	// maxHashedExeSize bounds the file read; a larger file gets no hash,
	// so sha256 rules do not match it.
	maxHashedExeSize = 1 << 30
	// maxHashCache bounds the hash cache; past it, an arbitrary entry is
	// evicted.
	maxHashCache = 1024
	// hashBytesPerSec is the global budget of bytes hashed per second,
	// shared fairly between the UIDs that wait for a hash: a 100 MiB binary
	// in ~2 s (once: digests are cached). At 96 MiB/s in 96 KiB chunks,
	// hashing another user's 1,000 MB executable delayed 1-3 of 100 of A's
	// connections by 10-22 ms on an idle 2-core VM (TestAttackHashSize);
	// at this rate in 32 KiB chunks A's p99 stayed at 2.6-4.4 ms.
	hashBytesPerSec = 48 << 20
	// hashChunk is what the hasher reads between turns (~20 us of work).
	hashChunk = 32 << 10
	// maxHashJobsPerUID bounds the hashes one UID can have queued.
	maxHashJobsPerUID = 4
)

var (
	errHashBusy  = errors.New("hash executable: too many hashes of this user pending")
	errHashLate  = errors.New("hash executable: not ready before the deadline")
	errHashClose = errors.New("hash executable: agent stopping")
)

// exeIdentity names one version of one file: replacing or rewriting the
// file changes the inode, size, mtime or ctime.
type exeIdentity struct {
	dev, ino   uint64
	size       int64
	mtimeNanos int64
	ctimeNanos int64
}

// hashJob is one file being hashed for one UID.
type hashJob struct {
	id   exeIdentity
	f    *os.File
	d    hash.Hash
	read int64
	done chan struct{}
	sum  string
	err  error
}

// exeHasher computes and caches executables' SHA-256 digests off the packet
// path. It is safe for concurrent use.
type exeHasher struct {
	// procDir is the proc file system of the agent's PID namespace.
	procDir string
	// rate is the budget in bytes per second.
	rate int64

	// files checks host files against processes' executables, for rules
	// that name a host file for every mount namespace.
	files *exefile.Checker

	mu    sync.Mutex
	cache map[exeIdentity]string
	// queues holds each UID's jobs, oldest first; order is the round
	// robin of the UIDs that have any.
	queues  map[uint32][]*hashJob
	order   []uint32
	running bool
	closed  bool
	quit    chan struct{}
	wg      sync.WaitGroup
}

func newExeHasher(procDir string) *exeHasher {
	files, _, _ := exefile.NewHost(procDir) // the host's files, as procid checks them
	return &exeHasher{
		procDir: procDir, rate: hashBytesPerSec,
		cache: make(map[exeIdentity]string), queues: make(map[uint32][]*hashJob), quit: make(chan struct{}), files: files,
	}
}

// Sum returns the hex SHA-256 of the image proc runs, waiting for it as long
// as it takes. Matching uses connHash, which waits only until a deadline.
func (h *exeHasher) Sum(proc flow.Process) (string, error) {
	c := connHash{h: h, proc: proc, wait: time.Duration(1<<63 - 1)}
	return c.sha256()
}

// open opens the image of the live process proc.
//
// SECURITY: only /proc/<tgid>/exe is hashed, the file the kernel mapped,
// never the path: a path can be replaced after exec (and is, by an attacker
// who wants an allowed binary's hash), and a process that is gone has no
// hash. The start time, read after the open, tells whether the file held is
// the image of the very process that connected: a PID cannot come back to
// an earlier process.
func (h *exeHasher) open(proc flow.Process) (*os.File, error) {
	if proc.TGID == 0 || proc.StartTime == 0 {
		return nil, errors.New("hash executable: process unknown")
	}
	dir := filepath.Join(h.procDir, strconv.FormatUint(uint64(proc.TGID), 10))
	f, err := os.Open(dir + "/exe")
	if err != nil {
		return nil, fmt.Errorf("hash executable: process gone: %w", err)
	}
	ticks, err := readStartTicks(dir + "/stat")
	if err != nil || ticks*nsPerTick != proc.StartTime/nsPerTick*nsPerTick {
		f.Close()
		return nil, errors.New("hash executable: process gone (pid reused)")
	}
	return f, nil
}

// lookup returns f's cached digest, or a job that would compute it (f then
// belongs to the job). On error or a cache hit, f is closed.
func (h *exeHasher) lookup(f *os.File) (string, *hashJob, error) {
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return "", nil, fmt.Errorf("hash executable: %w", err)
	}
	if !fi.Mode().IsRegular() {
		f.Close()
		return "", nil, errors.New("hash executable: not a regular file")
	}
	if fi.Size() > maxHashedExeSize {
		f.Close()
		return "", nil, fmt.Errorf("hash executable: %d bytes is more than the %d hashed", fi.Size(), maxHashedExeSize)
	}
	id := identityOf(fi)
	h.mu.Lock()
	sum, ok := h.cache[id]
	h.mu.Unlock()
	if ok {
		f.Close()
		return sum, nil, nil
	}
	return "", &hashJob{id: id, f: f, d: sha256.New(), done: make(chan struct{})}, nil
}

func identityOf(fi os.FileInfo) exeIdentity {
	id := exeIdentity{size: fi.Size(), mtimeNanos: fi.ModTime().UnixNano()}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		id.dev, id.ino = st.Dev, st.Ino
		id.ctimeNanos = st.Ctim.Nano()
	}
	return id
}

// submit queues j for uid, or returns the job of uid already queued for
// the same file (closing j's). A UID has at most maxHashJobsPerUID queued.
func (h *exeHasher) submit(uid uint32, j *hashJob) (*hashJob, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		j.f.Close()
		return nil, errHashClose
	}
	q := h.queues[uid]
	for _, o := range q {
		if o.id == j.id {
			j.f.Close()
			return o, nil
		}
	}
	if len(q) >= maxHashJobsPerUID {
		j.f.Close()
		return nil, errHashBusy
	}
	if len(q) == 0 {
		h.order = append(h.order, uid)
	}
	h.queues[uid] = append(q, j)
	if !h.running {
		h.running = true
		h.wg.Add(1)
		go h.run()
	}
	return j, nil
}

// run hashes the queued jobs a chunk at a time, one UID after the other,
// within the byte budget, until none is left or the hasher is closed.
func (h *exeHasher) run() {
	defer h.wg.Done()
	buf := make([]byte, hashChunk)
	next := time.Now()
	for {
		h.mu.Lock()
		if h.closed || len(h.order) == 0 {
			h.running = false
			h.mu.Unlock()
			return
		}
		uid := h.order[0]
		j := h.queues[uid][0]
		h.mu.Unlock()

		began := time.Now()
		n, err := j.f.Read(buf)
		j.d.Write(buf[:n])
		j.read += int64(n)
		finished := err != nil || j.read > maxHashedExeSize
		if finished {
			h.finish(uid, j, err)
		} else {
			h.mu.Lock()
			h.order = append(h.order[1:], uid) // the next UID's turn
			h.mu.Unlock()
		}
		// SECURITY: the budget is global, so that no user can make the
		// agent hash faster than it; sleeping (not runtime.Gosched) lets
		// the packet goroutine's network poller run between chunks.
		// The hasher also works at most a tenth of the time, however slow
		// the machine: a busy agent thread is one the kernel preempts.
		now := time.Now()
		next = next.Add(time.Duration(int64(n) * int64(time.Second) / h.rate))
		if rest := now.Add(9 * now.Sub(began)); next.Before(rest) {
			next = rest
		}
		select {
		case <-h.quit:
		case <-time.After(time.Until(next)):
		}
	}
}

// finish completes j, the head of uid's queue.
func (h *exeHasher) finish(uid uint32, j *hashJob, err error) {
	if errors.Is(err, io.EOF) {
		err = nil
	}
	var sum string
	if err == nil && j.read > maxHashedExeSize {
		err = fmt.Errorf("hash executable: more than %d bytes", maxHashedExeSize)
	}
	cacheable := false
	if err == nil {
		sum = hex.EncodeToString(j.d.Sum(nil))
		// A file that changed while it was read must not be cached
		// under the identity it had before.
		fi, serr := j.f.Stat()
		cacheable = serr == nil && identityOf(fi) == j.id && j.read == j.id.size
	} else {
		err = fmt.Errorf("hash executable: %w", err)
	}
	j.f.Close()
	h.mu.Lock()
	q := h.queues[uid][1:]
	if len(q) == 0 {
		delete(h.queues, uid)
		h.order = h.order[1:]
	} else {
		h.queues[uid] = q
		h.order = append(h.order[1:], uid)
	}
	if cacheable {
		if len(h.cache) >= maxHashCache {
			for k := range h.cache {
				delete(h.cache, k)
				break
			}
		}
		h.cache[j.id] = sum
	}
	h.mu.Unlock()
	j.sum, j.err = sum, err
	close(j.done)
}

// Close stops the hasher and fails the jobs still queued.
func (h *exeHasher) Close() {
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return
	}
	h.closed = true
	close(h.quit)
	h.mu.Unlock()
	h.wg.Wait()
	h.mu.Lock()
	defer h.mu.Unlock()
	for uid, q := range h.queues {
		for _, j := range q {
			j.f.Close()
			j.err = errHashClose
			close(j.done)
		}
		delete(h.queues, uid)
	}
	h.order = nil
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
// ask several times, the file is looked at once. It waits for a hash that
// is not ready for at most wait (0: not at all), and then says late.
type connHash struct {
	h    *exeHasher
	proc flow.Process
	wait time.Duration
	quit <-chan struct{}
	done bool
	late bool
	sum  string
	err  error
}

func (c *connHash) sha256() (string, error) {
	if c.done {
		return c.sum, c.err
	}
	c.done = true
	f, err := c.h.open(c.proc)
	if err != nil {
		c.err = err
		return "", err
	}
	sum, j, err := c.h.lookup(f)
	if err != nil || j == nil {
		c.sum, c.err = sum, err
		return sum, err
	}
	if j, err = c.h.submit(c.proc.UID, j); err != nil {
		c.late, c.err = true, err
		return "", err
	}
	if c.wait <= 0 {
		c.late, c.err = true, errHashLate
		return "", c.err
	}
	t := time.NewTimer(c.wait)
	defer t.Stop()
	select {
	case <-j.done:
		c.sum, c.err = j.sum, j.err
	case <-t.C:
		c.late, c.err = true, errHashLate
	case <-c.quit:
		c.late, c.err = true, errHashClose
	}
	return c.sum, c.err
}
