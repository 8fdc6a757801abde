package conntrack

import (
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"github.com/bastion-fw/bastion/internal/flow"
)

// flowMsg encodes an entry as the kernel's ctnetlink does (nested
// attributes flagged NLA_F_NESTED), with counters when c is non-nil.
func flowMsg(t testing.TB, tup flow.Tuple, id uint32, c *[2]Counters) []byte {
	t.Helper()
	ae := netlink.NewAttributeEncoder()
	ae.ByteOrder = binary.BigEndian
	src, dst := tup.Src.Unmap(), tup.Dst.Unmap()
	srcType, dstType, family := uint16(ctaIPv6Src), uint16(ctaIPv6Dst), byte(unix.AF_INET6)
	if src.Is4() {
		srcType, dstType, family = ctaIPv4Src, ctaIPv4Dst, unix.AF_INET
	}
	ae.Nested(ctaTupleOrig, func(ae *netlink.AttributeEncoder) error {
		ae.Nested(ctaTupleIP, func(ae *netlink.AttributeEncoder) error {
			ae.Bytes(srcType, src.AsSlice())
			ae.Bytes(dstType, dst.AsSlice())
			return nil
		})
		ae.Nested(ctaTupleProto, func(ae *netlink.AttributeEncoder) error {
			ae.Uint8(ctaProtoNum, uint8(tup.Proto))
			ae.Uint16(ctaProtoSrc, tup.SrcPort)
			ae.Uint16(ctaProtoDst, tup.DstPort)
			return nil
		})
		return nil
	})
	if c != nil {
		for i, typ := range []uint16{ctaCountersOrig, ctaCountersReply} {
			ae.Nested(typ, func(ae *netlink.AttributeEncoder) error {
				ae.Uint64(ctaCountPackets, c[i].Packets)
				ae.Uint64(ctaCountBytes, c[i].Bytes)
				return nil
			})
		}
	}
	ae.Uint32(ctaMark, 0x01000000)
	ae.Uint32(ctaID, id)
	if tup.Proto == flow.TCP {
		ae.Uint32(ctaTimeout, 120)
		ae.Nested(ctaProtoinfo, func(ae *netlink.AttributeEncoder) error {
			ae.Nested(ctaProtoinfoTCP, func(ae *netlink.AttributeEncoder) error {
				ae.Uint8(ctaTCPState, uint8(TCPTimeWait))
				ae.Uint8(2, 7) // CTA_PROTOINFO_TCP_WSCALE_ORIGINAL: skipped
				return nil
			})
			return nil
		})
	}
	b, err := ae.Encode()
	if err != nil {
		t.Fatal(err)
	}
	return append([]byte{family, 0, 0, 0}, b...)
}

func TestParseFlow(t *testing.T) {
	for _, tc := range []struct {
		name  string
		tuple flow.Tuple
		c     *[2]Counters
	}{
		{"tcp4 with counters", tuple(flow.TCP, "127.0.0.1:40000", "127.0.0.1:8080"),
			&[2]Counters{{Packets: 10, Bytes: 600}, {Packets: 70, Bytes: 4 << 20}}},
		{"udp6 no counters", tuple(flow.UDP, "[2001:db8::1]:5353", "[2001:db8::2]:443"), nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, err := ParseFlow(flowMsg(t, tc.tuple, 77, tc.c))
			if err != nil {
				t.Fatal(err)
			}
			want := Flow{Tuple: tc.tuple, ID: 77, Mark: 0x01000000}
			if tc.tuple.Proto == flow.TCP {
				want.TCPState, want.Timeout, want.HasTimeout = TCPTimeWait, 120, true
			}
			if tc.c != nil {
				want.Orig, want.Reply, want.HasCounters = tc.c[0], tc.c[1], true
			}
			if f != want {
				t.Errorf("ParseFlow =\n %+v\nwant\n %+v", f, want)
			}
		})
	}
}

func TestParseFlowRejectsMalformed(t *testing.T) {
	good := flowMsg(t, tuple(flow.TCP, "127.0.0.1:1", "127.0.0.1:2"), 1, &[2]Counters{{1, 2}, {3, 4}})
	bad := map[string][]byte{
		"empty":            nil,
		"short nfgenmsg":   {2, 0},
		"no tuple":         {2, 0, 0, 0, 8, 0, ctaID, 0, 0, 0, 0, 1},
		"truncated attr":   good[:len(good)-3],
		"attr past end":    append([]byte{2, 0, 0, 0, 0xff, 0, ctaID, 0}, 1, 2, 3, 4),
		"attr length < 4":  {2, 0, 0, 0, 2, 0, ctaID, 0},
		"short id":         append(append([]byte{}, good...), 6, 0, ctaID, 0, 1, 2, 0, 0),
		"ipv4 of 3 bytes":  mutate(good, []byte{8, 0, ctaIPv4Src, 0, 127, 0, 0, 1}, []byte{7, 0, ctaIPv4Src, 0, 127, 0, 0, 1}),
		"counter of 4 b":   mutate(good, []byte{12, 0, ctaCountBytes, 0}, []byte{8, 0, ctaCountBytes, 0}),
		"proto of 2 bytes": mutate(good, []byte{5, 0, ctaProtoNum, 0, 6}, []byte{6, 0, ctaProtoNum, 0, 6}),
		"state of 2 bytes": mutate(good, []byte{5, 0, ctaTCPState, 0, byte(TCPTimeWait)}, []byte{6, 0, ctaTCPState, 0, byte(TCPTimeWait)}),
		"timeout of 2 b":   mutate(good, []byte{8, 0, ctaTimeout, 0, 0, 0, 0, 120}, []byte{6, 0, ctaTimeout, 0, 0, 0, 0, 120}),
	}
	for name, b := range bad {
		if f, err := ParseFlow(b); err == nil {
			t.Errorf("%s: ParseFlow = %+v, want an error", name, f)
		} else if !errors.Is(err, errMalformed) {
			t.Errorf("%s: error %v does not wrap errMalformed", name, err)
		}
	}
}

// mutate returns b with the first occurrence of old replaced by new (of
// the same length, so that the enclosing lengths stay as they were).
func mutate(b, old, new []byte) []byte {
	out := append([]byte{}, b...)
	for i := 0; i+len(old) <= len(out); i++ {
		if string(out[i:i+len(old)]) == string(old) {
			copy(out[i:], new)
			return out
		}
	}
	panic(fmt.Sprintf("%x not in message", old))
}

func FuzzParseFlow(f *testing.F) {
	f.Add(flowMsg(f, tuple(flow.TCP, "127.0.0.1:40000", "127.0.0.1:8080"), 7, &[2]Counters{{1, 2}, {3, 4}}))
	f.Add(flowMsg(f, tuple(flow.UDP, "[::1]:1", "[::1]:2"), 8, nil))
	f.Add([]byte{2, 0, 0, 0})
	get, _ := hex.DecodeString(strings.Join(strings.Fields(entryMsg), "")) // a Get reply
	f.Add(get)
	f.Fuzz(func(t *testing.T, b []byte) {
		fl, err := ParseFlow(b)
		if err == nil && (!fl.Tuple.Src.IsValid() || fl.Tuple.Src.Is4In6()) {
			t.Errorf("accepted an invalid tuple %v", fl.Tuple)
		}
	})
}

// nlmsg frames data as a netlink message of type typ and sequence seq.
func nlmsg(typ, flags uint16, seq uint32, data []byte) []byte {
	l := nlmsgHdrLen + len(data)
	b := make([]byte, (l+3)&^3)
	binary.NativeEndian.PutUint32(b[0:4], uint32(l))
	binary.NativeEndian.PutUint16(b[4:6], typ)
	binary.NativeEndian.PutUint16(b[6:8], flags)
	binary.NativeEndian.PutUint32(b[8:12], seq)
	copy(b[nlmsgHdrLen:], data)
	return b
}

func TestParseReplies(t *testing.T) {
	entry := flowMsg(t, tuple(flow.TCP, "127.0.0.1:1", "127.0.0.1:2"), 1, nil)
	newType := uint16(nfnlSubsysCTNetlink<<8 | ctMsgNew)
	errMsg := func(errno int32) []byte {
		return binary.NativeEndian.AppendUint32(nil, uint32(-errno))
	}
	for _, tc := range []struct {
		name      string
		datagram  []byte
		done      bool
		err       bool
		entries   int
		malformed int
		intr      bool
	}{
		{name: "two entries", datagram: append(nlmsg(newType, 2, 5, entry), nlmsg(newType, 2, 5, entry)...), entries: 2},
		{name: "old dump's reply ignored", datagram: nlmsg(newType, 2, 4, entry)},
		{name: "done", datagram: append(nlmsg(newType, 2, 5, entry), nlmsg(nlmsgDone, 2, 5, []byte{0, 0, 0, 0})...), done: true, entries: 1},
		{name: "malformed entry skipped", datagram: nlmsg(newType, 2, 5, entry[:9]), entries: 1, malformed: 1},
		{name: "interrupted", datagram: nlmsg(newType, nlmFDumpIntr, 5, entry), entries: 1, intr: true},
		{name: "error", datagram: nlmsg(nlmsgError, 0, 5, errMsg(int32(unix.EPERM))), err: true},
		{name: "short error", datagram: nlmsg(nlmsgError, 0, 5, []byte{1}), err: true},
		{name: "length past datagram", datagram: nlmsg(newType, 2, 5, entry)[:30], err: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := &Dumper{seq: 5}
			var st DumpStats
			n := 0
			done, err := d.parseReplies(tc.datagram, &st, func(Flow) { n++ })
			if done != tc.done || (err != nil) != tc.err {
				t.Fatalf("parseReplies = %v, %v; want done %v, error %v", done, err, tc.done, tc.err)
			}
			if st.Entries != tc.entries || st.Malformed != tc.malformed || st.Interrupted != tc.intr || n != tc.entries-tc.malformed {
				t.Errorf("stats %+v, %d flows; want %d entries, %d malformed, interrupted %v", st, n, tc.entries, tc.malformed, tc.intr)
			}
		})
	}
}

func FuzzParseReplies(f *testing.F) {
	entry := flowMsg(f, tuple(flow.TCP, "127.0.0.1:1", "127.0.0.1:2"), 1, nil)
	f.Add(nlmsg(nfnlSubsysCTNetlink<<8|ctMsgNew, 2, 1, entry))
	f.Add(nlmsg(nlmsgDone, 2, 1, nil))
	f.Fuzz(func(t *testing.T, b []byte) {
		d := &Dumper{seq: 1}
		var st DumpStats
		d.parseReplies(b, &st, func(Flow) {}) // must not panic
	})
}

// TestParseDestroyed: a destroy datagram's notifications are read, other
// message types are skipped, and bad ones are counted, never a panic.
func TestParseDestroyed(t *testing.T) {
	entry := flowMsg(t, tuple(flow.TCP, "127.0.0.1:1", "127.0.0.1:2"), 1, nil)
	del := uint16(nfnlSubsysCTNetlink<<8 | ctMsgDelete)
	newType := uint16(nfnlSubsysCTNetlink<<8 | ctMsgNew)
	for _, tc := range []struct {
		name     string
		datagram []byte
		flows    int
		bad      int
	}{
		{name: "two notifications", datagram: append(nlmsg(del, 0, 0, entry), nlmsg(del, 0, 0, entry)...), flows: 2},
		{name: "other type skipped", datagram: append(nlmsg(newType, 0, 0, entry), nlmsg(del, 0, 0, entry)...), flows: 1},
		{name: "malformed skipped", datagram: append(nlmsg(del, 0, 0, entry[:9]), nlmsg(del, 0, 0, entry)...), flows: 1, bad: 1},
		{name: "length past datagram", datagram: nlmsg(del, 0, 0, entry)[:30], bad: 1},
		{name: "short header", datagram: []byte{1, 2, 3}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			flows, bad := parseDestroyed(tc.datagram, nil)
			if len(flows) != tc.flows || bad != tc.bad {
				t.Errorf("parseDestroyed = %d flows, %d bad; want %d, %d", len(flows), bad, tc.flows, tc.bad)
			}
		})
	}
}

func FuzzParseDestroyed(f *testing.F) {
	f.Add(nlmsg(nfnlSubsysCTNetlink<<8|ctMsgDelete, 0, 0, flowMsg(f, tuple(flow.TCP, "127.0.0.1:1", "127.0.0.1:2"), 1, nil)))
	f.Fuzz(func(t *testing.T, b []byte) {
		parseDestroyed(b, nil) // must not panic
	})
}

// TestDumpAndDestroyInNamespace turns accounting on in a fresh namespace,
// sends a known number of UDP bytes each way, finds the flow's counters in
// a dump, deletes the entry and receives its destroy notification with the
// same counters. The host's own accounting setting is only read.
func TestDumpAndDestroyInNamespace(t *testing.T) {
	ns := trackedNS(t)
	hostBefore, hostErr := Accounting(nil)
	if err := SetAccounting(ns.File, true); err != nil {
		t.Fatal(err)
	}
	if on, err := Accounting(ns.File); err != nil || !on {
		t.Fatalf("Accounting in the namespace after SetAccounting = %v, %v", on, err)
	}
	w, err := WatchDestroy(ns.File)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	d, err := OpenDumper(ns.File)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()

	// The server echoes each datagram: 5 datagrams of 1000 bytes of
	// payload each way, 1028 IP bytes each (20 IP + 8 UDP).
	srv := ns.ListenPacket(t, "udp4", "127.0.0.1:0")
	var tup flow.Tuple
	if err := ns.Do(func() error {
		c, err := net.Dial("udp4", srv.LocalAddr().String())
		if err != nil {
			return err
		}
		defer c.Close()
		if err := c.SetReadDeadline(time.Now().Add(10 * time.Second)); err != nil {
			return err
		}
		buf := make([]byte, 2000)
		for range 5 {
			if _, err := c.Write(make([]byte, 1000)); err != nil {
				return err
			}
			if _, err := c.Read(buf); err != nil {
				return fmt.Errorf("read the echo: %w", err)
			}
		}
		l, r := c.LocalAddr().(*net.UDPAddr).AddrPort(), c.RemoteAddr().(*net.UDPAddr).AddrPort()
		tup = flow.Tuple{Proto: flow.UDP, Src: l.Addr(), Dst: r.Addr(), SrcPort: l.Port(), DstPort: r.Port()}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	want := Counters{Packets: 5, Bytes: 5 * 1028}
	var found []Flow
	st, err := d.Dump(func(f Flow) {
		if f.Tuple == tup {
			found = append(found, f)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(found) != 1 {
		t.Fatalf("dump of %d entries (%+v) has %d entries of %v, want 1", st.Entries, st, len(found), tup)
	}
	f := found[0]
	if !f.HasCounters || f.Orig != want || f.Reply != want || f.ID == 0 {
		t.Errorf("dumped %+v, want counters %+v each way and an ID", f, want)
	}
	// A second dump on the same socket works too.
	if _, err := d.Dump(func(Flow) {}); err != nil {
		t.Fatalf("second dump: %v", err)
	}

	ct, err := Open(ns.File)
	if err != nil {
		t.Fatal(err)
	}
	defer ct.Close()
	if err := ct.Delete(tup); err != nil {
		t.Fatal(err)
	}
	if err := w.SetReadDeadline(time.Now().Add(10 * time.Second)); err != nil {
		t.Fatal(err)
	}
	var ev *Flow
	for ev == nil {
		flows, _, err := w.Receive(nil)
		if err != nil {
			t.Fatalf("no destroy notification of %v: %v", tup, err)
		}
		for i := range flows {
			if flows[i].Tuple == tup {
				ev = &flows[i]
			}
		}
	}
	if ev.ID != f.ID || !ev.HasCounters || ev.Orig != want || ev.Reply != want {
		t.Errorf("destroy notification %+v, want ID %d and counters %+v each way", *ev, f.ID, want)
	}

	if hostErr == nil {
		if after, err := Accounting(nil); err != nil || after != hostBefore {
			t.Errorf("the host's nf_conntrack_acct changed: %v before, %v, %v after", hostBefore, after, err)
		}
	}
}

// TestDestroyNotificationsComeInBatches: notifications that wait in the
// socket are all taken in by one Receive, so that a reader that pauses
// between calls wakes once per batch, not once per connection; and a
// Receive with nothing waiting blocks until its deadline.
func TestDestroyNotificationsComeInBatches(t *testing.T) {
	ns := trackedNS(t)
	w, err := WatchDestroy(ns.File)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	ct, err := Open(ns.File)
	if err != nil {
		t.Fatal(err)
	}
	defer ct.Close()

	const n = 50
	srv := ns.ListenPacket(t, "udp4", "127.0.0.1:0")
	var tuples []flow.Tuple
	if err := ns.Do(func() error {
		// The sockets stay open until all have sent, so that each has its
		// own port and tuple.
		for range n {
			c, err := net.Dial("udp4", srv.LocalAddr().String())
			if err != nil {
				return err
			}
			defer c.Close()
			if _, err := c.Write([]byte("x")); err != nil {
				return err
			}
			l, r := c.LocalAddr().(*net.UDPAddr).AddrPort(), c.RemoteAddr().(*net.UDPAddr).AddrPort()
			tuples = append(tuples, flow.Tuple{Proto: flow.UDP, Src: l.Addr(), Dst: r.Addr(), SrcPort: l.Port(), DstPort: r.Port()})
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	// Deleting an entry notifies before the delete returns.
	for _, tup := range tuples {
		if err := ct.Delete(tup); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.SetReadDeadline(time.Now().Add(10 * time.Second)); err != nil {
		t.Fatal(err)
	}
	flows, bad, err := w.Receive(nil)
	if err != nil || bad != 0 {
		t.Fatalf("Receive: %d malformed, %v", bad, err)
	}
	seen := map[flow.Tuple]bool{}
	for _, f := range flows {
		seen[f.Tuple] = true
	}
	for _, tup := range tuples {
		if !seen[tup] {
			t.Errorf("one Receive took in %d notifications, without %v's; want all %d that waited", len(flows), tup, n)
			break
		}
	}

	if err := w.SetReadDeadline(time.Now().Add(100 * time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if flows, _, err := w.Receive(nil); !errors.Is(err, os.ErrDeadlineExceeded) || len(flows) != 0 {
		t.Errorf("Receive with nothing waiting = %d flows, %v; want none and the deadline's error", len(flows), err)
	}
	if waited := time.Since(start); waited < 90*time.Millisecond {
		t.Errorf("Receive with nothing waiting returned after %v, before its deadline", waited)
	}
}

// TestClosedTCPEntryInNamespace: once both sides have closed a TCP
// connection, a dump shows its entry closed (TIME_WAIT) with its final
// counters and the time it has left, and Get reads the same entry; the
// namespace's shortest end timeout is read from its own settings.
func TestClosedTCPEntryInNamespace(t *testing.T) {
	ns := trackedNS(t)
	if err := SetAccounting(ns.File, true); err != nil {
		t.Fatal(err)
	}
	d, err := OpenDumper(ns.File)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	ct, err := Open(ns.File)
	if err != nil {
		t.Fatal(err)
	}
	defer ct.Close()

	const payload = 5000
	served := make(chan error, 1)
	l := ns.Serve(t, "tcp4", "127.0.0.1:0", func(c net.Conn) {
		go func() {
			defer c.Close()
			c.SetDeadline(time.Now().Add(30 * time.Second))
			_, err := io.Copy(io.Discard, c) // until the client's FIN
			served <- err
		}()
	})
	var tup flow.Tuple
	if err := ns.Do(func() error {
		c, err := net.Dial("tcp4", l.Addr().String())
		if err != nil {
			return err
		}
		if _, err := c.Write(make([]byte, payload)); err != nil {
			c.Close()
			return err
		}
		la, ra := c.LocalAddr().(*net.TCPAddr).AddrPort(), c.RemoteAddr().(*net.TCPAddr).AddrPort()
		tup = flow.Tuple{Proto: flow.TCP, Src: la.Addr(), Dst: ra.Addr(), SrcPort: la.Port(), DstPort: ra.Port()}
		return c.Close() // the client closes first
	}); err != nil {
		t.Fatal(err)
	}
	if err := <-served; err != nil {
		t.Fatal(err)
	}

	var got Flow
	deadline := time.Now().Add(10 * time.Second)
	for !got.TCPState.Closed() {
		if time.Now().After(deadline) {
			t.Fatalf("the entry of %v is not closed 10 s after both sides closed: %+v", tup, got)
		}
		time.Sleep(10 * time.Millisecond)
		if _, err := d.Dump(func(f Flow) {
			if f.Tuple == tup {
				got = f
			}
		}); err != nil {
			t.Fatal(err)
		}
	}
	if got.TCPState != TCPTimeWait || !got.HasTimeout || got.Timeout == 0 || got.Timeout > 120 {
		t.Errorf("closed entry %+v, want TIME_WAIT with up to 120 s left", got)
	}
	if !got.HasCounters || got.Orig.Bytes < payload || got.Orig.Bytes > payload+payload/10 {
		t.Errorf("closed entry counted %+v sent, want the %d bytes of payload and headers", got.Orig, payload)
	}
	one, err := ct.Get(tup)
	if err != nil {
		t.Fatal(err)
	}
	if one.ID != got.ID || one.Orig != got.Orig || one.Reply != got.Reply || one.TCPState != TCPTimeWait {
		t.Errorf("Get(%v) = %+v, the dump had %+v", tup, one, got)
	}
	if _, err := ct.Get(tuple(flow.TCP, "127.0.0.1:1", "127.0.0.1:2")); !errors.Is(err, ErrNotFound) {
		t.Errorf("Flow of an untracked tuple: %v, want ErrNotFound", err)
	}

	// A new namespace has the kernel's defaults: CLOSE's 10 s is the
	// shortest.
	if end, err := ShortestEnd(ns.File); err != nil || end != 10*time.Second {
		t.Errorf("ShortestEnd = %v, %v; want 10s", end, err)
	}
	if err := ns.Do(func() error {
		return os.WriteFile("/proc/sys/net/netfilter/nf_conntrack_tcp_timeout_close", []byte("7\n"), 0)
	}); err != nil {
		t.Fatal(err)
	}
	if end, err := ShortestEnd(ns.File); err != nil || end != 7*time.Second {
		t.Errorf("ShortestEnd after setting CLOSE's timeout to 7 s = %v, %v", end, err)
	}
}
