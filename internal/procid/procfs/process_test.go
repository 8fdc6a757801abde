package procfs

import (
	"errors"
	"io/fs"
	"os"
	"slices"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/bastion-fw/bastion/internal/flow"
)

const (
	goodStat   = "77 (curl) S 1 77 77 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 1 0 500 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0\n"
	goodStatus = "Name:\tcurl\nTgid:\t77\nPPid:\t1\nUid:\t1000\t1000\t1000\t1000\nGid:\t1001\t1001\t1001\t1001\n"
)

func symlink(target string) *fstest.MapFile {
	return &fstest.MapFile{Mode: fs.ModeSymlink | 0o777, Data: []byte(target)}
}

// procFS builds a one-process /proc for pid 77 with the given files
// overriding the good defaults; a nil value removes the file.
func procFS(override map[string]*fstest.MapFile) fstest.MapFS {
	m := fstest.MapFS{
		"77/stat":    {Data: []byte(goodStat)},
		"77/status":  {Data: []byte(goodStatus)},
		"77/comm":    {Data: []byte("curl\n")},
		"77/cmdline": {Data: []byte("curl\x00-s\x00https://example.org/\x00")},
		"77/exe":     symlink("/usr/bin/curl"),
	}
	for k, v := range override {
		if v == nil {
			delete(m, k)
			continue
		}
		m[k] = v
	}
	return m
}

func TestReadProcess(t *testing.T) {
	want := flow.Process{
		PID: 77, TGID: 77, PPID: 1, UID: 1000, GID: 1001,
		Comm: "curl", Exe: "/usr/bin/curl",
		Args:      []string{"curl", "-s", "https://example.org/"},
		StartTime: 500 * 10_000_000,
		Source:    "procfs",
	}
	tests := []struct {
		name     string
		override map[string]*fstest.MapFile
		want     func(p *flow.Process)
		wantErr  string // substring; "" means success
	}{
		{name: "complete"},
		{
			name:     "deleted executable",
			override: map[string]*fstest.MapFile{"77/exe": symlink("/usr/bin/curl (deleted)")},
		},
		{
			name:     "exe unreadable",
			override: map[string]*fstest.MapFile{"77/exe": nil},
			want:     func(p *flow.Process) { p.Exe = "" },
		},
		{
			name:     "kernel thread has empty cmdline",
			override: map[string]*fstest.MapFile{"77/cmdline": {Data: nil}},
			want:     func(p *flow.Process) { p.Args = nil },
		},
		{
			name:     "cmdline without terminator and empty args",
			override: map[string]*fstest.MapFile{"77/cmdline": {Data: []byte("a\x00\x00b")}},
			want:     func(p *flow.Process) { p.Args = []string{"a", "", "b"} },
		},
		{
			name:     "comm with spaces and parens falls back to stat",
			override: map[string]*fstest.MapFile{"77/comm": nil, "77/stat": {Data: []byte(strings.Replace(goodStat, "(curl)", "(a) b (c))", 1))}},
			want:     func(p *flow.Process) { p.Comm = "a) b (c)" },
		},
		{
			name:     "thread id",
			override: map[string]*fstest.MapFile{"77/status": {Data: []byte(strings.Replace(goodStatus, "Tgid:\t77", "Tgid:\t70", 1))}},
			want:     func(p *flow.Process) { p.TGID = 70 },
		},
		{name: "missing process", override: map[string]*fstest.MapFile{"77/stat": nil}, wantErr: "file does not exist"},
		{name: "missing status", override: map[string]*fstest.MapFile{"77/status": nil}, wantErr: "file does not exist"},
		{name: "empty stat", override: map[string]*fstest.MapFile{"77/stat": {Data: nil}}, wantErr: "no (comm)"},
		{name: "truncated stat", override: map[string]*fstest.MapFile{"77/stat": {Data: []byte("77 (curl) S 1 77")}}, wantErr: "fields after comm"},
		{name: "stat bad starttime", override: map[string]*fstest.MapFile{"77/stat": {Data: []byte(strings.Replace(goodStat, " 500 ", " -5 ", 1))}}, wantErr: "starttime"},
		{name: "stat bad ppid", override: map[string]*fstest.MapFile{"77/stat": {Data: []byte(strings.Replace(goodStat, "S 1 ", "S x ", 1))}}, wantErr: "ppid"},
		{name: "status without Uid", override: map[string]*fstest.MapFile{"77/status": {Data: []byte("Name:\tcurl\nGid:\t1\n")}}, wantErr: "no Uid or Gid"},
		{name: "status empty Uid", override: map[string]*fstest.MapFile{"77/status": {Data: []byte("Uid:\nGid:\t1\n")}}, wantErr: "empty Uid"},
		{name: "status Uid overflow", override: map[string]*fstest.MapFile{"77/status": {Data: []byte("Uid:\t4294967296\nGid:\t1\n")}}, wantErr: "Uid"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ReadProcess(procFS(tt.override), 77)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ReadProcess() error = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("ReadProcess(): %v", err)
			}
			w := want
			w.Args = slices.Clone(want.Args)
			if tt.want != nil {
				tt.want(&w)
			}
			if !equalProcess(got, w) {
				t.Errorf("ReadProcess() =\n%+v\nwant\n%+v", got, w)
			}
		})
	}
}

func TestReadProcessNotExist(t *testing.T) {
	_, err := ReadProcess(fstest.MapFS{}, 12345)
	if !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("ReadProcess() of a missing process: error %v does not wrap fs.ErrNotExist", err)
	}
}

// TestReadProcessFixture reads testdata/proc, a copy of real /proc files
// with a hostile comm and a deleted executable, through os.DirFS.
func TestReadProcessFixture(t *testing.T) {
	got, err := ReadProcess(os.DirFS("testdata/proc"), 4242)
	if err != nil {
		t.Fatal(err)
	}
	want := flow.Process{
		PID: 4242, TGID: 4242, PPID: 1000, UID: 1000, GID: 100,
		Comm: "my (evil) prog", Exe: "/usr/bin/prog",
		Args:      []string{"prog", "--flag", "", "last arg"},
		StartTime: 987654 * 10_000_000,
		Source:    "procfs",
	}
	if !equalProcess(got, want) {
		t.Errorf("ReadProcess() =\n%+v\nwant\n%+v", got, want)
	}
}

func TestReadProcessSelf(t *testing.T) {
	pid := os.Getpid()
	got, err := ReadProcess(os.DirFS("/proc"), uint32(pid))
	if err != nil {
		t.Fatal(err)
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	if got.TGID != uint32(pid) || got.PPID != uint32(os.Getppid()) || got.UID != uint32(os.Getuid()) ||
		got.GID != uint32(os.Getgid()) || got.Exe != exe || !slices.Equal(got.Args, os.Args) || got.StartTime == 0 {
		t.Errorf("ReadProcess(self) = %+v; want pid %d ppid %d uid %d gid %d exe %s args %q",
			got, pid, os.Getppid(), os.Getuid(), os.Getgid(), exe, os.Args)
	}
}

func TestSplitCmdlineBounded(t *testing.T) {
	b := []byte(strings.Repeat("x\x00", 1000))
	if got := splitCmdline(b); len(got) != maxArgs {
		t.Errorf("splitCmdline of 1000 args returned %d, want %d", len(got), maxArgs)
	}
}

func equalProcess(a, b flow.Process) bool {
	return slices.Equal(a.Args, b.Args) &&
		a.PID == b.PID && a.TGID == b.TGID && a.PPID == b.PPID && a.UID == b.UID && a.GID == b.GID &&
		a.Comm == b.Comm && a.Exe == b.Exe && a.StartTime == b.StartTime && a.Source == b.Source
}

func FuzzParseStat(f *testing.F) {
	f.Add([]byte(goodStat))
	f.Add([]byte("1 (a)) b) S 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 99"))
	f.Add([]byte(")("))
	f.Add([]byte("("))
	f.Add([]byte(""))
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := parseStat(b)
		if err != nil {
			return
		}
		if len(s.comm) > len(b) || s.startTicks > ^uint64(0)/nsPerTick {
			t.Fatalf("parseStat(%q) = %+v", b, s)
		}
	})
}

func FuzzParseStatus(f *testing.F) {
	f.Add([]byte(goodStatus))
	f.Add([]byte("Uid:\nGid:"))
	f.Add([]byte("Uid:\t-1\nGid:\t0"))
	f.Add([]byte(":::\n\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _ = parseStatus(b)
	})
}
