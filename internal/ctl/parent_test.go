package ctl

import (
	"io/fs"
	"testing"
	"testing/fstest"
)

func TestParentProcess(t *testing.T) {
	procFS := fstest.MapFS{
		"10/exe":  {Data: []byte("/usr/bin/bash"), Mode: fs.ModeSymlink},
		"10/comm": {Data: []byte("bash\n")},
		"11/comm": {Data: []byte("sshd\n")},                              // exe not readable (another user's)
		"12/exe":  {Data: []byte("/usr/bin/tmux"), Mode: fs.ModeSymlink}, // comm gone
	}
	s := &promptSession{sys: promptSystem{procFS: procFS}}
	tests := []struct {
		ppid uint32
		want string
	}{
		{0, "unknown"},
		{10, "PID 10 /usr/bin/bash (bash)"},
		{11, "PID 11 (sshd)"},
		{12, "PID 12 /usr/bin/tmux"},
		{13, "PID 13"}, // exited
	}
	for _, tc := range tests {
		if got := s.parent(tc.ppid); got != tc.want {
			t.Errorf("parent(%d) = %q, want %q", tc.ppid, got, tc.want)
		}
	}
}
