package procfs

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/bastion-fw/bastion/internal/flow"
)

// Source is the flow.Process.Source value of every identity found here.
const Source = "procfs"

// Bounds on what is read from files another user controls.
const (
	maxCmdlineBytes = 32 << 10 // argv beyond this is cut off
	maxArgs         = 256      // and so are arguments beyond this many
	maxStatBytes    = 4 << 10  // /proc/<pid>/stat is < 1 KiB in practice
	maxStatusBytes  = 16 << 10 // /proc/<pid>/status is ~1.5 KiB in practice
)

// userHZ is USER_HZ, the unit of the times in /proc/<pid>/stat. The kernel
// exports 100 on every architecture Bastion runs on (it is fixed by the ABI,
// independent of CONFIG_HZ; sysconf(_SC_CLK_TCK) returns it), so it is a
// constant here rather than a cgo call.
const userHZ = 100

const nsPerTick = 1_000_000_000 / userHZ

// ReadProcess reads a live process's identity from a /proc file system. fsys
// is usually os.DirFS("/proc"); tests use fstest.MapFS.
//
// tgid is normally a process ID. If it names a thread instead, the result has
// PID set to that thread and TGID to its process. Otherwise PID equals TGID:
// /proc cannot tell which thread of a process sent a packet.
//
// StartTime is the stat start time (field 22, clock ticks since boot)
// converted to nanoseconds at USER_HZ=100, so it has 10 ms resolution and
// matches the kernel's start_boottime only to that precision.
//
// Exe is the target of the exe link, read only if fsys implements
// fs.ReadLinkFS (os.DirFS does). It is "" when the link cannot be read
// (kernel threads, or another user's process without CAP_SYS_PTRACE). The
// kernel appends " (deleted)" when the executable was unlinked or replaced
// after exec (common after package upgrades); that suffix is stripped, so
// Exe names the path the program was started from, whose current content may
// differ.
//
// Args is argv split on NUL, limited to 256 arguments and 32 KiB; it is nil
// for kernel threads and zombies.
//
// An error wraps fs.ErrNotExist when the process does not exist (any more).
func ReadProcess(fsys fs.FS, tgid uint32) (flow.Process, error) {
	if tgid == 0 {
		return flow.Process{}, fmt.Errorf("read process 0: %w", fs.ErrNotExist)
	}
	dir := strconv.FormatUint(uint64(tgid), 10)
	stat1, err := readStat(fsys, dir)
	if err != nil {
		return flow.Process{}, err
	}
	b, err := readBounded(fsys, dir+"/status", maxStatusBytes)
	if err != nil {
		return flow.Process{}, fmt.Errorf("read process %d: %w", tgid, err)
	}
	st, err := parseStatus(b)
	if err != nil {
		return flow.Process{}, fmt.Errorf("read process %d: parse status: %w", tgid, err)
	}
	p := flow.Process{
		PID:       tgid,
		TGID:      tgid,
		PPID:      st.ppid,
		UID:       st.uid,
		GID:       st.gid,
		Comm:      stat1.comm,
		StartTime: stat1.startTicks * nsPerTick,
		Source:    Source,
	}
	if st.tgid != 0 {
		p.TGID = st.tgid
	}
	// comm is also in stat; the comm file is the documented source and is
	// the same string. Prefer it when readable.
	if c, err := readBounded(fsys, dir+"/comm", 64); err == nil {
		p.Comm = string(bytes.TrimSuffix(c, []byte("\n")))
	}
	if c, err := readBounded(fsys, dir+"/cmdline", maxCmdlineBytes); err == nil {
		p.Args = splitCmdline(c)
	}
	if exe, err := fs.ReadLink(fsys, dir+"/exe"); err == nil {
		p.Exe = strings.TrimSuffix(exe, " (deleted)")
		readIdentity(fsys, dir, &p)
	}
	// SECURITY: if the PID was reused while we read, the files above may
	// describe two different processes. The start time tells them apart.
	stat2, err := readStat(fsys, dir)
	if err != nil {
		return flow.Process{}, err
	}
	if stat2.startTicks != stat1.startTicks {
		return flow.Process{}, fmt.Errorf("read process %d: process was replaced during the read: %w", tgid, fs.ErrNotExist)
	}
	return p, nil
}

func readStat(fsys fs.FS, dir string) (stat, error) {
	b, err := readBounded(fsys, dir+"/stat", maxStatBytes)
	if err != nil {
		return stat{}, fmt.Errorf("read process %s: %w", dir, err)
	}
	s, err := parseStat(b)
	if err != nil {
		return stat{}, fmt.Errorf("read process %s: parse stat: %w", dir, err)
	}
	return s, nil
}

// readBounded reads at most limit bytes of name.
func readBounded(fsys fs.FS, name string, limit int64) ([]byte, error) {
	f, err := fsys.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, limit))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", name, err)
	}
	return b, nil
}

// stat is what Bastion uses of /proc/<pid>/stat.
type stat struct {
	pid        uint32
	comm       string
	ppid       uint32
	startTicks uint64
}

var errMalformed = errors.New("malformed")

// parseStat parses /proc/<pid>/stat: "pid (comm) state ppid ... starttime ...".
// comm may contain spaces and parentheses, so it runs to the last ')'.
func parseStat(b []byte) (stat, error) {
	open := bytes.IndexByte(b, '(')
	closing := bytes.LastIndexByte(b, ')')
	if open < 1 || closing < open {
		return stat{}, fmt.Errorf("%w: no (comm)", errMalformed)
	}
	pid, err := strconv.ParseUint(string(bytes.TrimSpace(b[:open])), 10, 32)
	if err != nil {
		return stat{}, fmt.Errorf("%w: pid: %v", errMalformed, err)
	}
	// Fields after comm start at field 3 (state); starttime is field 22.
	rest := strings.Fields(string(b[closing+1:]))
	const (
		ppidIdx  = 4 - 3
		startIdx = 22 - 3
	)
	if len(rest) <= startIdx {
		return stat{}, fmt.Errorf("%w: %d fields after comm, want at least %d", errMalformed, len(rest), startIdx+1)
	}
	ppid, err := strconv.ParseUint(rest[ppidIdx], 10, 32)
	if err != nil {
		return stat{}, fmt.Errorf("%w: ppid: %v", errMalformed, err)
	}
	start, err := strconv.ParseUint(rest[startIdx], 10, 64)
	if err != nil {
		return stat{}, fmt.Errorf("%w: starttime: %v", errMalformed, err)
	}
	if start > math.MaxUint64/nsPerTick {
		return stat{}, fmt.Errorf("%w: starttime %d out of range", errMalformed, start)
	}
	return stat{
		pid:        uint32(pid),
		comm:       string(b[open+1 : closing]),
		ppid:       uint32(ppid),
		startTicks: start,
	}, nil
}

// status is what Bastion uses of /proc/<pid>/status.
type status struct {
	tgid, ppid uint32
	uid, gid   uint32
}

// parseStatus parses the Tgid, PPid, Uid and Gid lines of /proc/<pid>/status.
// Uid and Gid are required; their first column is the real ID.
func parseStatus(b []byte) (status, error) {
	var st status
	var haveUID, haveGID bool
	for line := range bytes.Lines(b) {
		key, val, ok := bytes.Cut(line, []byte(":"))
		if !ok {
			continue
		}
		var dst *uint32
		switch string(key) {
		case "Tgid":
			dst = &st.tgid
		case "PPid":
			dst = &st.ppid
		case "Uid":
			dst, haveUID = &st.uid, true
		case "Gid":
			dst, haveGID = &st.gid, true
		default:
			continue
		}
		f := bytes.Fields(val)
		if len(f) == 0 {
			return status{}, fmt.Errorf("%w: empty %s line", errMalformed, key)
		}
		n, err := strconv.ParseUint(string(f[0]), 10, 32)
		if err != nil {
			return status{}, fmt.Errorf("%w: %s: %v", errMalformed, key, err)
		}
		*dst = uint32(n)
	}
	if !haveUID || !haveGID {
		return status{}, fmt.Errorf("%w: no Uid or Gid line", errMalformed)
	}
	return st, nil
}

// splitCmdline splits NUL-separated argv, keeping empty arguments except the
// terminator. A process may overwrite its argv area, so this is best effort.
func splitCmdline(b []byte) []string {
	if len(b) == 0 {
		return nil
	}
	b = bytes.TrimSuffix(b, []byte{0})
	var args []string
	for len(args) < maxArgs {
		arg, rest, found := bytes.Cut(b, []byte{0})
		args = append(args, string(arg))
		if !found {
			break
		}
		b = rest
	}
	return args
}

// readIdentity sets p's executable device and inode from a stat of the exe
// link (which the kernel resolves to the very file the process runs, never
// to what its path names now) and its mount namespace from ns/mnt. Both
// need a file system whose FileInfo.Sys is a *syscall.Stat_t (os.DirFS);
// otherwise they stay unknown, and so does the executable's identity.
func readIdentity(fsys fs.FS, dir string, p *flow.Process) {
	exe, err := fs.Stat(fsys, dir+"/exe")
	if err != nil {
		return
	}
	ns, err := fs.Stat(fsys, dir+"/ns/mnt")
	if err != nil {
		return
	}
	est, ok1 := exe.Sys().(*syscall.Stat_t)
	nst, ok2 := ns.Sys().(*syscall.Stat_t)
	if !ok1 || !ok2 {
		return
	}
	// The kernel's dev_t encoding (MAJOR<<20|MINOR), as the eBPF side reads it.
	p.ExeDev = unix.Major(est.Dev)<<20 | unix.Minor(est.Dev)&0xfffff
	p.ExeIno = est.Ino
	p.MntNS = uint32(nst.Ino)
}
