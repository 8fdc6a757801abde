package conntrack

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/bastion-fw/bastion/internal/flow"
	"github.com/bastion-fw/bastion/internal/testenv"
)

func tuple(proto flow.Proto, src, dst string) flow.Tuple {
	s, d := netip.MustParseAddrPort(src), netip.MustParseAddrPort(dst)
	return flow.Tuple{Proto: proto, Src: s.Addr(), Dst: d.Addr(), SrcPort: s.Port(), DstPort: d.Port()}
}

// unhex reads hex with spaces and newlines for readability.
func unhex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.Join(strings.Fields(s), ""))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestRequestEncoding(t *testing.T) {
	for _, tc := range []struct {
		name  string
		msg   uint8
		tuple flow.Tuple
		typ   uint16
		want  string // nfgenmsg + attributes, as the kernel's ctnetlink parses them
	}{
		{
			name: "delete udp4", msg: ctMsgDelete, typ: 0x0102,
			tuple: tuple(flow.UDP, "127.0.0.1:40000", "10.0.0.2:53"),
			want: `02 00 00 00
				34 00 01 80
				  14 00 01 80  08 00 01 00 7f 00 00 01  08 00 02 00 0a 00 00 02
				  1c 00 02 80  05 00 01 00 11 00 00 00  06 00 02 00 9c 40 00 00  06 00 03 00 00 35 00 00`,
		},
		{
			// A dual-stack socket's IPv4 flow is tracked as IPv4.
			name: "get udp4 mapped", msg: ctMsgGet, typ: 0x0101,
			tuple: tuple(flow.UDP, "[::ffff:127.0.0.1]:40000", "[::ffff:10.0.0.2]:53"),
			want: `02 00 00 00
				34 00 01 80
				  14 00 01 80  08 00 01 00 7f 00 00 01  08 00 02 00 0a 00 00 02
				  1c 00 02 80  05 00 01 00 11 00 00 00  06 00 02 00 9c 40 00 00  06 00 03 00 00 35 00 00`,
		},
		{
			name: "delete udp6", msg: ctMsgDelete, typ: 0x0102,
			tuple: tuple(flow.UDP, "[::1]:1234", "[2001:db8::2]:443"),
			want: `0a 00 00 00
				4c 00 01 80
				  2c 00 01 80
				    14 00 03 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 01
				    14 00 04 00 20 01 0d b8 00 00 00 00 00 00 00 00 00 00 00 02
				  1c 00 02 80  05 00 01 00 11 00 00 00  06 00 02 00 04 d2 00 00  06 00 03 00 01 bb 00 00`,
		},
		{
			name: "delete tcp4", msg: ctMsgDelete, typ: 0x0102,
			tuple: tuple(flow.TCP, "192.0.2.1:1", "192.0.2.2:65535"),
			want: `02 00 00 00
				34 00 01 80
				  14 00 01 80  08 00 01 00 c0 00 02 01  08 00 02 00 c0 00 02 02
				  1c 00 02 80  05 00 01 00 06 00 00 00  06 00 02 00 00 01 00 00  06 00 03 00 ff ff 00 00`,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, err := request(tc.msg, tc.tuple)
			if err != nil {
				t.Fatal(err)
			}
			if uint16(m.Header.Type) != tc.typ {
				t.Errorf("message type %#x, want %#x", m.Header.Type, tc.typ)
			}
			if want := unhex(t, tc.want); !bytes.Equal(m.Data, want) {
				t.Errorf("request data\n got %x\nwant %x", m.Data, want)
			}
		})
	}
}

func TestRequestRejects(t *testing.T) {
	for _, tc := range []flow.Tuple{
		{Proto: flow.ICMP, Src: netip.MustParseAddr("127.0.0.1"), Dst: netip.MustParseAddr("127.0.0.1")},
		{Proto: flow.UDP, Src: netip.MustParseAddr("127.0.0.1"), Dst: netip.MustParseAddr("::1")},
		{Proto: flow.UDP, Dst: netip.MustParseAddr("::1")},
	} {
		if _, err := request(ctMsgDelete, tc); err == nil {
			t.Errorf("request(%v) succeeded, want an error", tc)
		}
	}
}

// entryMsg is a trimmed IPCTNL_MSG_CT_NEW reply, as Get receives it:
// nfgenmsg, CTA_TUPLE_ORIG (udp 127.0.0.1:40000 -> 10.0.0.2:53), CTA_MARK
// 0x01000000, CTA_ID 0xdeadbeef.
const entryMsg = `02 00 00 00
	34 00 01 80
	  14 00 01 80  08 00 01 00 7f 00 00 01  08 00 02 00 0a 00 00 02
	  1c 00 02 80  05 00 01 00 11 00 00 00  06 00 02 00 9c 40 00 00  06 00 03 00 00 35 00 00
	08 00 08 00 01 00 00 00
	08 00 0c 00 de ad be ef`

func TestParseGetReply(t *testing.T) {
	f, err := ParseFlow(unhex(t, entryMsg))
	if err != nil {
		t.Fatal(err)
	}
	if f.ID != 0xdeadbeef || f.Mark != 0x01000000 || f.Tuple != tuple(flow.UDP, "127.0.0.1:40000", "10.0.0.2:53") {
		t.Errorf("ParseFlow = %+v", f)
	}
	for _, bad := range []string{"", "02 00", "02 00 00 00 ff 00 01 00", "02 00 00 00 06 00 08 00 01 00"} {
		if _, err := ParseFlow(unhex(t, bad)); err == nil {
			t.Errorf("ParseFlow(%q) succeeded, want an error", bad)
		}
	}
}

// TestDeleteInNamespace creates a real UDP conntrack entry inside a fresh
// network namespace, finds it, deletes it and no longer finds it.
func TestDeleteInNamespace(t *testing.T) {
	ns := trackedNS(t)
	srv := ns.ListenPacket(t, "udp4", "127.0.0.1:0")
	var tup flow.Tuple
	if err := ns.Do(func() error {
		c, err := net.Dial("udp4", srv.LocalAddr().String())
		if err != nil {
			return err
		}
		defer c.Close()
		if _, err := c.Write([]byte("x")); err != nil {
			return err
		}
		// The server echoes. Wait for the echo: arriving after the
		// Delete below, it would start a new entry (server to client),
		// which a lookup by this tuple also finds.
		if err := c.SetReadDeadline(time.Now().Add(10 * time.Second)); err != nil {
			return err
		}
		if _, err := c.Read(make([]byte, 16)); err != nil {
			return fmt.Errorf("read the echo: %w", err)
		}
		l, r := c.LocalAddr().(*net.UDPAddr).AddrPort(), c.RemoteAddr().(*net.UDPAddr).AddrPort()
		tup = flow.Tuple{Proto: flow.UDP, Src: l.Addr(), Dst: r.Addr(), SrcPort: l.Port(), DstPort: r.Port()}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	ct, err := Open(ns.File)
	if err != nil {
		t.Fatal(err)
	}
	defer ct.Close()

	e, err := ct.Get(tup)
	if err != nil {
		t.Fatalf("Get of a live flow: %v", err)
	}
	if e.ID == 0 {
		t.Errorf("entry %+v has no ID", e)
	}
	if err := ct.Delete(tup); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	if _, err := ct.Get(tup); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get after Delete: %v, want ErrNotFound", err)
	}
	if err := ct.Delete(tup); !errors.Is(err, ErrNotFound) {
		t.Errorf("second Delete: %v, want ErrNotFound", err)
	}

	// The host's table is another namespace's: the same tuple is not there.
	host, err := Open(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer host.Close()
	if _, err := host.Get(tup); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get in the host namespace: %v, want ErrNotFound", err)
	}
}

// trackedNS makes a network namespace whose packets conntrack tracks, as
// it does once a rule there needs it.
func trackedNS(t *testing.T) *testenv.NS {
	t.Helper()
	ns := testenv.NewNetNS(t)
	testenv.RequireTools(t, "iptables")
	if out, err := exec.Command("nsenter", "--net="+ns.Path, "--", "iptables", "-w", "-A", "OUTPUT",
		"-m", "conntrack", "--ctstate", "NEW").CombinedOutput(); err != nil {
		t.Fatalf("enable conntrack in %s: %v: %s", ns.Name, err, out)
	}
	return ns
}
