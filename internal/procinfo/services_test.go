package procinfo

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseServices(t *testing.T) {
	f, err := os.Open(filepath.Join("testdata", "services"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	s, err := ParseServices(f)
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
		if got := s.DescribePort(tc.proto, tc.port); got != tc.want {
			t.Errorf("DescribePort(%s, %d) = %q, want %q", tc.proto, tc.port, got, tc.want)
		}
	}
	var none *Services
	if got := none.DescribePort("tcp", 443); got != "443" {
		t.Errorf("without a services file: %q, want 443", got)
	}
}

func TestLoadServices(t *testing.T) {
	if s := LoadServices(filepath.Join(t.TempDir(), "missing")); s != nil {
		t.Errorf("missing file: got %v, want nil", s)
	}
	s := LoadServices(filepath.Join("testdata", "services"))
	if got := s.Name("tcp", 443); got != "https" {
		t.Errorf("Name(tcp, 443) = %q, want https", got)
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
		s, err := ParseServices(strings.NewReader(data))
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
