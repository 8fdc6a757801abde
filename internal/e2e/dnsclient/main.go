// Command dnsclient resolves a name with Go's own resolver, asking one DNS
// server over UDP, then connects over TCP to the first address it got, as
// an application does, and prints the outcome as one JSON line. With
// -resolve-only it stops after the lookup.
//
// Usage: dnsclient -server 127.0.0.1:53 -name www.example.test -port 8080 [-net ip4|ip6] [-timeout 20s] [-resolve-only]
package main

import (
	"context"
	"encoding/json"
	"flag"
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
	flag.Parse()

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
