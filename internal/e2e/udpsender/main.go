// Command udpsender sends a known number of bytes over UDP, as a program
// that uploads in large datagrams does: -n datagrams of -size bytes from one
// connected socket, each after the echo of the one before (so that none is
// sent while the first waits for the firewall's verdict, and none is lost),
// and prints the outcome as one JSON line.
//
// Usage: udpsender -addr 127.0.0.1:9000 -n 64 -size 8000 [-timeout 10s]
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"os"
	"time"
)

type result struct {
	OK    bool   `json:"ok"`
	Sent  int    `json:"sent"`
	Local string `json:"local,omitempty"`
	Err   string `json:"err,omitempty"`
}

func main() {
	addr := flag.String("addr", "127.0.0.1:9000", "destination host:port (an echo server)")
	n := flag.Int("n", 64, "datagrams to send")
	size := flag.Int("size", 8000, "bytes of payload per datagram")
	timeout := flag.Duration("timeout", 10*time.Second, "give up after this long")
	flag.Parse()
	r := run(*addr, *n, *size, *timeout)
	json.NewEncoder(os.Stdout).Encode(r)
	if !r.OK {
		os.Exit(1)
	}
}

func run(addr string, n, size int, timeout time.Duration) result {
	c, err := net.Dial("udp", addr)
	if err != nil {
		return result{Err: err.Error()}
	}
	defer c.Close()
	r := result{Local: c.LocalAddr().String()}
	if err := c.SetDeadline(time.Now().Add(timeout)); err != nil {
		r.Err = err.Error()
		return r
	}
	buf, echo := make([]byte, size), make([]byte, size+1)
	for i := range n {
		if _, err := c.Write(buf); err != nil {
			r.Err = fmt.Sprintf("datagram %d: %v", i, err)
			return r
		}
		r.Sent += size
		m, err := c.Read(echo)
		if err != nil {
			r.Err = fmt.Sprintf("echo %d: %v", i, err)
			return r
		}
		if m != size {
			r.Err = fmt.Sprintf("echo %d of %d bytes, want %d", i, m, size)
			return r
		}
	}
	r.OK = true
	return r
}
