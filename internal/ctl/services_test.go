package ctl

import (
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/fstest"
)

func TestParseServices(t *testing.T) {
	f, err := os.Open(filepath.Join("testdata", "services"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	s, err := parseServices(f)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		proto string
		port  uint16
		want  string
	}{
		{"tcp", 443, "443 (https)"},
		{"udp", 443, "443 (https)"},
		{"tcp", 22, "22 (ssh)"},
		{"udp", 22, "22 (ssh)"},      // listed for TCP only: the name still helps
		{"tcp", 123, "123 (ntp)"},    // listed for UDP only
		{"tcp", 80, "80 (http)"},     // the first name wins over the later "web"
		{"tcp", 88, "88 (kerberos)"}, // the name, not an alias
		{"udp", 53, "53 (domain)"},
		{"tcp", 5222, "5222 (xmpp-client)"},
		{"tcp", 8080, "8080"}, // "noproto 8080" is malformed
		{"tcp", 4464, "4464"}, // "toolarge 70000/tcp" must not wrap around
		{"icmp", 22, "22"},
		{"tcp", 0, "0"},
	}
	for _, tc := range tests {
		if got := s.describePort(tc.proto, tc.port); got != tc.want {
			t.Errorf("describePort(%s, %d) = %q, want %q", tc.proto, tc.port, got, tc.want)
		}
	}
	var none *services
	if got := none.describePort("tcp", 443); got != "443" {
		t.Errorf("without a services file: %q, want 443", got)
	}
}

func FuzzParseServices(f *testing.F) {
	seed, err := os.ReadFile(filepath.Join("testdata", "services"))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(string(seed))
	f.Add("x 1/tcp\n")
	f.Add("a 65535/udp b c # d\n\n#\n\t\n")
	f.Add("a 99999999999999999999/tcp\nb -1/tcp\nc 1/\n/1/tcp\n")
	f.Fuzz(func(t *testing.T, data string) {
		s, err := parseServices(strings.NewReader(data))
		if err != nil {
			return
		}
		for k, name := range s.byPort {
			if name == "" || strings.ContainsAny(name, " \t\n#") {
				t.Errorf("port %v: bad name %q", k, name)
			}
		}
	})
}

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
