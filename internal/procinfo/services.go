package procinfo

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
)

// Services maps ports to service names, as /etc/services lists them
// (services(5)): "name port/protocol [aliases...] [# comment]". A nil
// *Services knows no names.
type Services struct {
	byPort map[serviceKey]string
}

type serviceKey struct {
	proto string // "tcp", "udp", ...
	port  uint16
}

// ParseServices reads an /etc/services file. Lines it cannot read are
// skipped; the first name listed for a port and protocol wins, as in
// getservbyport(3).
func ParseServices(r io.Reader) (*Services, error) {
	s := &Services{byPort: map[serviceKey]string{}}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	for sc.Scan() {
		line, _, _ := strings.Cut(sc.Text(), "#")
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		portStr, proto, ok := strings.Cut(f[1], "/")
		if !ok || proto == "" {
			continue
		}
		port, err := strconv.ParseUint(portStr, 10, 16)
		if err != nil {
			continue
		}
		k := serviceKey{strings.ToLower(proto), uint16(port)}
		if _, dup := s.byPort[k]; !dup {
			s.byPort[k] = f[0]
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read services: %w", err)
	}
	return s, nil
}

// LoadServices reads the services file at path, usually /etc/services. A
// missing or unreadable file gives nil, which knows no names: port names
// are a nicety, never a reason to fail.
func LoadServices(path string) *Services {
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	s, err := ParseServices(f)
	if err != nil {
		return nil
	}
	return s
}

// Name returns the service on port for proto ("tcp", "udp"); a port the
// file lists only for the other of TCP and UDP still gets its name, since
// most services are registered for both. "" when unknown.
func (s *Services) Name(proto string, port uint16) string {
	if s == nil {
		return ""
	}
	if n, ok := s.byPort[serviceKey{proto, port}]; ok {
		return n
	}
	other := map[string]string{"tcp": "udp", "udp": "tcp"}[proto]
	if other == "" {
		return ""
	}
	return s.byPort[serviceKey{other, port}]
}

// DescribePort is "443 (https)" or "8443".
func (s *Services) DescribePort(proto string, port uint16) string {
	if n := s.Name(proto, port); n != "" {
		return fmt.Sprintf("%d (%s)", port, n)
	}
	return strconv.Itoa(int(port))
}
