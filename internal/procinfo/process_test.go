package procinfo

import (
	"io/fs"
	"os"
	"testing"
	"testing/fstest"
)

func TestParent(t *testing.T) {
	procFS := fstest.MapFS{
		"10/exe":  {Data: []byte("/usr/bin/bash"), Mode: fs.ModeSymlink},
		"10/comm": {Data: []byte("bash\n")},
		"11/comm": {Data: []byte("sshd\n")},                              // exe not readable (another user's)
		"12/exe":  {Data: []byte("/usr/bin/tmux"), Mode: fs.ModeSymlink}, // comm gone
	}
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
		if got := Parent(procFS, tc.ppid); got != tc.want {
			t.Errorf("Parent(%d) = %q, want %q", tc.ppid, got, tc.want)
		}
	}
	if got := Parent(nil, 10); got != "PID 10" {
		t.Errorf("Parent without /proc = %q, want PID 10", got)
	}
}

func TestUserName(t *testing.T) {
	name, err := UserName(uint32(os.Getuid()))
	if err != nil {
		t.Skipf("the user database has no entry for this test's uid: %v", err)
	}
	if name == "" {
		t.Error("UserName returned an empty name without an error")
	}
	if _, err := UserName(4294967294); err == nil {
		t.Error("UserName(4294967294): no error for a uid nobody has")
	}
}
