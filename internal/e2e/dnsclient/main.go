// Command dnsclient resolves a name with Go's own resolver, asking one DNS
// server over UDP, then connects over TCP to the first address it got, as
// an application does, and prints the outcome as one JSON line. With
// -resolve-only it stops after the lookup.
//
// Usage: dnsclient -server 127.0.0.1:53 -name www.example.test -port 8080 [-net ip4|ip6] [-timeout 20s] [-resolve-only]
//
// With -stub-fd it is instead a stub resolver, as systemd-resolved or
// dnsmasq at 127.0.0.53: it serves the UDP socket inherited as that file
// descriptor (bound by its privileged parent to port 53) and forwards each
// query from a new socket of its own to -upstream, relaying the answer,
// until it is killed.
//
// Usage: dnsclient -stub-fd 3 -upstream 127.0.0.1:53
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"os"
	"strconv"
	"time"
)

type result struct {
	Addrs []string `json:"addrs,omitempty"`
	OK    bool     `json:"ok"`
	Err   string   `json:"err,omitempty"`
}

func main() {
	server := flag.String("server", "127.0.0.1:53", "DNS server host:port (UDP)")
	name := flag.String("name", "www.example.test", "name to resolve")
	port := flag.Int("port", 0, "TCP port to connect to")
	timeout := flag.Duration("timeout", 20*time.Second, "for the lookup and the connection together")
	resolveOnly := flag.Bool("resolve-only", false, "only resolve")
	network := flag.String("net", "ip4", "addresses to ask for: ip4 (A) or ip6 (AAAA)")
	stubFD := flag.Int("stub-fd", 0, "serve as a stub resolver on this inherited UDP socket")
	upstream := flag.String("upstream", "127.0.0.1:53", "the stub's upstream server")
	flag.Parse()
	if *stubFD > 0 {
		// stub serves until its socket fails.
		fmt.Fprintln(os.Stderr, "stub:", stub(*stubFD, *upstream))
		os.Exit(1)
	}

	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	r := &net.Resolver{
		PreferGo: true,
		Dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "udp", *server)
		},
	}
	var out result
	defer func() {
		json.NewEncoder(os.Stdout).Encode(out)
		if !out.OK {
			os.Exit(1)
		}
	}()
	addrs, err := r.LookupNetIP(ctx, *network, *name)
	if err != nil {
		out.Err = "lookup: " + err.Error()
		return
	}
	for _, a := range addrs {
		out.Addrs = append(out.Addrs, a.String())
	}
	if *resolveOnly {
		out.OK = true
		return
	}
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", net.JoinHostPort(addrs[0].String(), strconv.Itoa(*port)))
	if err != nil {
		out.Err = "dial: " + err.Error()
		return
	}
	c.Close()
	out.OK = true
}

// stub serves DNS queries on the inherited socket fd, forwarding each from
// a fresh connected socket to upstream, as systemd-resolved does.
func stub(fd int, upstream string) error {
	pc, err := net.FilePacketConn(os.NewFile(uintptr(fd), "stub"))
	if err != nil {
		return fmt.Errorf("inherited socket: %w", err)
	}
	buf := make([]byte, 4096)
	for {
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			return err
		}
		q := append([]byte(nil), buf[:n]...)
		go func() {
			c, err := net.Dial("udp", upstream)
			if err != nil {
				return
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(10 * time.Second))
			if _, err := c.Write(q); err != nil {
				return
			}
			ans := make([]byte, 4096)
			m, err := c.Read(ans)
			if err != nil {
				return
			}
			pc.WriteTo(ans[:m], from)
		}()
	}
}
