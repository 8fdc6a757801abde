package agent

import (
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/bastion-fw/bastion/internal/conntrack"
	"github.com/bastion-fw/bastion/internal/flow"
	"github.com/bastion-fw/bastion/internal/peercred"
)

func allowedBy(proc flow.Process, t flow.Tuple, by string) Decision {
	return Decision{Time: time.Unix(1_700_000_000, 0), Process: proc, Tuple: t, Action: flow.ActionAllow, DecidedBy: by, Host: "example.org"}
}

func ctFlow(t flow.Tuple, id uint32, sent, recv uint64) conntrack.Flow {
	return conntrack.Flow{Tuple: trafficKey(t), ID: id, HasCounters: true,
		Orig: conntrack.Counters{Packets: sent / 100, Bytes: sent}, Reply: conntrack.Counters{Packets: recv / 100, Bytes: recv}}
}

// takeAll returns what sb has queued and its dropped count.
func takeAll(sb *trafficSub) ([]trafficSample, uint64) {
	return sb.take(nil, trafficQueueLen)
}

// read runs one read of the conntrack table that finds flows.
func read(tt *trafficTable, flows ...conntrack.Flow) {
	tt.beginRead()
	tt.readFlows(flows)
	tt.endRead()
}

func TestTrafficSamplesGrowthAndEnd(t *testing.T) {
	tt := newTrafficTable(16, 16)
	subAlice, subBob, subRoot := tt.subscribe(alice), tt.subscribe(bob), tt.subscribe(admin)
	c := tcp("192.0.2.1", 40000, 443)
	tt.allowed(allowedBy(curl1000, c, "rule:r1"))
	if tt.len() != 1 {
		t.Fatalf("%d connections followed, want 1", tt.len())
	}

	read(tt, ctFlow(c, 9, 600, 4000), ctFlow(tcp("192.0.2.9", 1, 2), 10, 5, 5))
	read(tt, ctFlow(c, 9, 600, 4000)) // no growth: no sample
	read(tt, ctFlow(c, 9, 700, 10000))
	tt.destroyed([]conntrack.Flow{ctFlow(c, 9, 800, 10500)})

	got, dropped := takeAll(subAlice)
	if dropped != 0 || len(got) != 3 {
		t.Fatalf("alice got %d samples (%d dropped), want 3: %+v", len(got), dropped, got)
	}
	want := []struct{ sent, recv, totSent, totRecv uint64 }{{600, 4000, 600, 4000}, {100, 6000, 700, 10000}, {100, 500, 800, 10500}}
	for i, w := range want {
		s := got[i]
		if s.sentBytes != w.sent || s.recvBytes != w.recv || s.totalSent != w.totSent || s.totalRecv != w.totRecv {
			t.Errorf("sample %d: %+v, want %+v", i, s, w)
		}
		if s.ended != (i == 2) {
			t.Errorf("sample %d: ended %v", i, s.ended)
		}
		if s.attr.proc.Exe != "/usr/bin/curl" || s.attr.by != "rule:r1" || s.attr.ruleID != "" && s.attr.ruleID != "r1" || s.attr.host != "example.org" {
			t.Errorf("sample %d attributed to %+v", i, *s.attr)
		}
	}
	if got, _ := takeAll(subBob); len(got) != 0 {
		t.Errorf("bob saw alice's connection: %+v", got)
	}
	if got, _ := takeAll(subRoot); len(got) != 3 {
		t.Errorf("root got %d samples, want 3", len(got))
	}
	if tt.len() != 0 {
		t.Errorf("%d connections still followed after the destroy notification", tt.len())
	}
	tt.countSent(subAlice, 3)
	if st := tt.stats(alice); st.Sent != 3 || st.Tracked != 0 || st.Lost != 0 {
		t.Errorf("alice's stats %+v", st)
	}
	if st := tt.stats(bob); st.Sent != 0 {
		t.Errorf("bob's stats %+v count alice's samples", st)
	}
}

func TestTrafficFollowsOnlyAllowedConnectionsWithASource(t *testing.T) {
	tt := newTrafficTable(16, 16)
	c := tcp("192.0.2.1", 40000, 443)
	denied := allowedBy(curl1000, c, "rule:r1")
	denied.Action = flow.ActionDeny
	tt.allowed(denied)
	noSrc := allowedBy(curl1000, flow.Tuple{Proto: flow.TCP, Dst: c.Dst, DstPort: 443}, "cache:c1")
	tt.allowed(noSrc)
	icmp := allowedBy(curl1000, flow.Tuple{Proto: flow.ICMP, Src: c.Src, Dst: c.Dst}, "policy")
	tt.allowed(icmp)
	if n := tt.len(); n != 0 {
		t.Fatalf("%d connections followed, want 0", n)
	}
	// The same connection decided again (a retransmission) stays one.
	tt.allowed(allowedBy(curl1000, c, "rule:r1"))
	tt.allowed(allowedBy(curl1000, c, "retransmit"))
	if n := tt.len(); n != 1 {
		t.Fatalf("%d connections followed, want 1", n)
	}
	// An IPv4-mapped tuple is followed as conntrack names it.
	m := c
	m.Src, m.Dst, m.SrcPort = netip.AddrFrom16(c.Src.As16()), netip.AddrFrom16(c.Dst.As16()), 40001
	tt.allowed(allowedBy(curl1000, m, "policy"))
	sb := tt.subscribe(alice)
	read(tt, ctFlow(c, 1, 10, 10), ctFlow(m, 2, 20, 20))
	if got, _ := takeAll(sb); len(got) != 2 {
		t.Errorf("got %d samples, want one per connection: %+v", len(got), got)
	}
}

func TestTrafficMissingConnectionsAreLost(t *testing.T) {
	tt := newTrafficTable(16, 16)
	sb := tt.subscribe(admin)
	never, gone := tcp("192.0.2.1", 1, 443), tcp("192.0.2.1", 2, 443)
	tt.allowed(allowedBy(curl1000, never, "policy"))
	tt.allowed(allowedBy(wget1001, gone, "policy"))
	read(tt, ctFlow(gone, 5, 100, 200)) // never's first miss
	for range trafficMissLimit - 2 {
		read(tt)
	}
	if n := tt.len(); n != 2 {
		t.Fatalf("%d followed after %d misses, want 2", n, trafficMissLimit-1)
	}
	read(tt) // never's last miss, gone's last but one
	if n := tt.len(); n != 1 {
		t.Fatalf("%d followed, want 1", n)
	}
	read(tt)
	if n := tt.len(); n != 0 {
		t.Fatalf("%d followed after %d misses, want 0", n, trafficMissLimit)
	}
	got, _ := takeAll(sb)
	if len(got) != 2 || !got[1].ended || got[1].totalRecv != 200 || got[1].attr.proc.UID != 1001 {
		t.Errorf("samples %+v, want growth then an end for the connection that was read", got)
	}
	if st := tt.stats(admin); st.Lost != 2 {
		t.Errorf("lost %d, want 2", st.Lost)
	}
	if st := tt.stats(alice); st.Lost != 1 {
		t.Errorf("alice's lost %d, want 1", st.Lost)
	}
}

// TestTrafficEndsAtAClosedTCPEntry: the read that finds a TCP entry closed
// (TIME_WAIT, or CLOSE after a reset) publishes its last counts as its end;
// it is not counted lost, and nothing else comes of it.
func TestTrafficEndsAtAClosedTCPEntry(t *testing.T) {
	for _, st := range []conntrack.TCPState{conntrack.TCPTimeWait, conntrack.TCPClose} {
		tt := newTrafficTable(16, 16)
		sb := tt.subscribe(admin)
		c := tcp("192.0.2.1", 40000, 443)
		tt.allowed(allowedBy(curl1000, c, "rule:r1"))
		open := ctFlow(c, 9, 600, 4000)
		open.TCPState = 3 // ESTABLISHED
		read(tt, open)
		closed := ctFlow(c, 9, 700, 9000)
		closed.TCPState = st
		read(tt, closed)
		if tt.len() != 0 {
			t.Fatalf("state %d: the closed connection is still followed", st)
		}
		read(tt, closed) // its entry lingers: nothing more
		got, _ := takeAll(sb)
		if len(got) != 2 || !got[1].ended || got[1].totalSent != 700 || got[1].totalRecv != 9000 || got[1].recvBytes != 5000 {
			t.Errorf("state %d: samples %+v, want growth, then an end with the closed entry's counts", st, got)
		}
		if lost := tt.stats(admin).Lost; lost != 0 {
			t.Errorf("state %d: %d lost", st, lost)
		}
	}
}

// TestTrafficEntryGoneAtItsTimeout: when the reads see every ended entry
// (readsSeeEnds), an entry that vanished no earlier than the timeout its
// last read showed ended as conntrack ends idle entries, with the counts
// that read had: not lost. One that vanished before its time was deleted,
// and its last bytes are unknown: lost. Without readsSeeEnds (a destroy
// notification should have come), both are lost.
func TestTrafficEntryGoneAtItsTimeout(t *testing.T) {
	for _, seeEnds := range []bool{true, false} {
		tt := newTrafficTable(16, 16)
		tt.setReadsSeeEnds(seeEnds)
		now := time.Unix(1_800_000_000, 0)
		tt.now = func() time.Time { return now }
		sb := tt.subscribe(admin)
		idle, deleted := udp("10.0.0.1:5000", "192.0.2.1:53"), udp("10.0.0.1:5001", "192.0.2.1:53")
		tt.allowed(allowedBy(curl1000, idle, "policy"))
		tt.allowed(allowedBy(curl1000, deleted, "policy"))
		fi, fd := ctFlow(idle, 1, 100, 300), ctFlow(deleted, 2, 100, 300)
		fi.Timeout, fi.HasTimeout = 4, true
		fd.Timeout, fd.HasTimeout = 30, true
		read(tt, fi, fd)
		for range trafficMissLimit {
			now = now.Add(5 * time.Second)
			read(tt)
		}
		if tt.len() != 0 {
			t.Fatalf("readsSeeEnds %v: %d still followed", seeEnds, tt.len())
		}
		got, _ := takeAll(sb)
		ends := 0
		for _, s := range got {
			if s.ended {
				ends++
				if s.totalSent != 100 || s.totalRecv != 300 {
					t.Errorf("readsSeeEnds %v: end %+v, want the last read's counts", seeEnds, s)
				}
			}
		}
		if ends != 2 {
			t.Errorf("readsSeeEnds %v: %d ends, want 2: %+v", seeEnds, ends, got)
		}
		want := uint64(1)
		if !seeEnds {
			want = 2
		}
		if lost := tt.stats(admin).Lost; lost != want {
			t.Errorf("readsSeeEnds %v: %d lost, want %d", seeEnds, lost, want)
		}
	}
}

// TestTrafficWantsFinal: only a followed connection, and only when no
// destroy notification will bring its last counts, wants them from the one
// who deletes its entry.
func TestTrafficWantsFinal(t *testing.T) {
	tt := newTrafficTable(16, 16)
	c := udp("10.0.0.1:5000", "192.0.2.1:53")
	tt.allowed(allowedBy(curl1000, c, "policy"))
	if tt.wantsFinal(c) {
		t.Error("wants the last counts while destroy notifications bring them")
	}
	tt.setReadsSeeEnds(true)
	mapped := c
	mapped.Src, mapped.Dst = netip.AddrFrom16(c.Src.As16()), netip.AddrFrom16(c.Dst.As16())
	if !tt.wantsFinal(c) || !tt.wantsFinal(mapped) {
		t.Error("a followed connection does not want its last counts")
	}
	if tt.wantsFinal(udp("10.0.0.1:5002", "192.0.2.1:53")) {
		t.Error("a connection not followed wants its last counts")
	}
}

func TestTrafficIgnoresOtherEntriesOfATuple(t *testing.T) {
	tt := newTrafficTable(16, 16)
	sb := tt.subscribe(admin)
	c := tcp("192.0.2.1", 1, 443)
	tt.allowed(allowedBy(curl1000, c, "policy"))
	read(tt, ctFlow(c, 5, 100, 100))
	// An older entry's destroy notification (another ID) ends nothing.
	tt.destroyed([]conntrack.Flow{ctFlow(c, 4, 1000, 1000)})
	if tt.len() != 1 {
		t.Fatal("a notification of another entry ended the connection")
	}
	// Another zone's entry is not ours.
	other := ctFlow(c, 5, 5000, 5000)
	other.Zone = 1
	tt.destroyed([]conntrack.Flow{other})
	// A new entry for the tuple in a read: the followed one ended unseen.
	read(tt, ctFlow(c, 6, 10, 10))
	if tt.len() != 0 {
		t.Fatal("a new entry of the tuple was taken for the followed connection")
	}
	got, _ := takeAll(sb)
	if len(got) != 2 || got[1].totalSent != 100 || !got[1].ended {
		t.Errorf("samples %+v", got)
	}
}

func TestTrafficTableIsBounded(t *testing.T) {
	tt := newTrafficTable(3, 3)
	sb := tt.subscribe(admin)
	for i := range 5 {
		tt.allowed(allowedBy(curl1000, tcp("192.0.2.1", uint16(1000+i), 443), "policy"))
	}
	if n := tt.len(); n != 3 {
		t.Fatalf("%d followed, want the bound 3", n)
	}
	got, _ := takeAll(sb)
	if len(got) != 2 || !got[0].ended || got[0].attr.tuple.SrcPort != 1000 || got[1].attr.tuple.SrcPort != 1001 {
		t.Errorf("evictions %+v, want the two oldest ended", got)
	}
	if st := tt.stats(admin); st.Lost != 2 || st.Tracked != 3 || st.MemoryBytes != 3*uint64(trafficEntryBytes) {
		t.Errorf("stats %+v", st)
	}
}

// TestTrafficTableSharesPerUID: one user's connections push out only that
// user's, and a full table makes room at the user with the most.
func TestTrafficTableSharesPerUID(t *testing.T) {
	tt := newTrafficTable(4, 3)
	for i := range 5 { // alice: 3 kept, her 2 oldest pushed out
		tt.allowed(allowedBy(curl1000, tcp("192.0.2.1", uint16(1000+i), 443), "policy"))
	}
	tt.allowed(allowedBy(wget1001, tcp("192.0.2.2", 2000, 443), "policy"))
	if st := tt.stats(alice); st.Tracked != 3 || st.Lost != 2 {
		t.Errorf("alice's stats %+v, want 3 followed, 2 lost", st)
	}
	// The table is full: bob's second connection makes room at alice's.
	tt.allowed(allowedBy(wget1001, tcp("192.0.2.2", 2001, 443), "policy"))
	if a, b := tt.stats(alice), tt.stats(bob); a.Tracked != 2 || a.Lost != 3 || b.Tracked != 2 || b.Lost != 0 {
		t.Errorf("alice %+v, bob %+v; want 2 each, alice 3 lost", a, b)
	}
	if n := tt.len(); n != 4 {
		t.Errorf("%d followed, want the bound 4", n)
	}
}

func TestTrafficSubscriberCountsDrops(t *testing.T) {
	tt := newTrafficTable(trafficQueueLen+10, trafficQueueLen+10)
	sb := tt.subscribe(alice)
	var flows []conntrack.Flow
	for i := range trafficQueueLen + 10 {
		c := tcp("192.0.2.1", uint16(1000+i), 443)
		tt.allowed(allowedBy(curl1000, c, "policy"))
		flows = append(flows, ctFlow(c, uint32(i+1), 100, 100))
	}
	read(tt, flows...)
	got, dropped := sb.take(nil, trafficBatchLen)
	if len(got) != trafficBatchLen || dropped != 10 {
		t.Fatalf("first take: %d samples, %d dropped; want %d, 10", len(got), dropped, trafficBatchLen)
	}
	select {
	case <-sb.ready:
	default:
		t.Fatal("no ready token with samples left")
	}
	got, dropped = takeAll(sb)
	if len(got) != trafficQueueLen-trafficBatchLen || dropped != 0 {
		t.Fatalf("second take: %d samples, %d dropped", len(got), dropped)
	}
	if st := tt.stats(alice); st.Dropped != 10 {
		t.Errorf("alice's dropped %d, want 10", st.Dropped)
	}
	tt.unsubscribe(sb)
	tt.destroyed(flows[:1])
	if got, _ := takeAll(sb); len(got) != 0 {
		t.Errorf("an unsubscribed stream got %d samples", len(got))
	}
}

// TestEngineFollowsAllowedConnections checks the engine's hook: what it
// allows is followed, what it denies is not.
func TestEngineFollowsAllowedConnections(t *testing.T) {
	e, _, _ := newTestEngine(t)
	tt := newTrafficTable(16, 16)
	e.traffic.Store(tt)
	e.Handle(PacketRef{ID: 1}, tcp("192.0.2.1", 40000, 443), root) // the system policy allows root
	if tt.len() != 1 {
		t.Fatalf("%d followed after root's allowed connection, want 1", tt.len())
	}
	e.HandleUnparsed(PacketRef{ID: 2})
	if tt.len() != 1 {
		t.Fatalf("%d followed after an unparsed packet, want 1", tt.len())
	}
}

// BenchmarkTrafficTableMemory reports the heap bytes one followed
// connection costs, beyond the decision it was made from.
func BenchmarkTrafficTableMemory(b *testing.B) {
	const n = 65536
	decs := make([]Decision, n)
	for i := range decs {
		decs[i] = allowedBy(curl1000, tcp(fmt.Sprintf("10.%d.%d.1", i>>8&255, i&255), uint16(1000+i%60000), 443), "rule:r1")
	}
	var perEntry float64
	for b.Loop() {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		tt := newTrafficTable(n, n)
		for i := range decs {
			tt.allowed(decs[i])
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		perEntry = float64(after.HeapAlloc-before.HeapAlloc) / n
		runtime.KeepAlive(tt)
	}
	b.ReportMetric(perEntry, "bytes/conn")
	b.ReportMetric(float64(trafficEntryBytes), "estimate_bytes/conn")
	b.ReportMetric(perEntry/float64(trafficEntryBytes), "x_estimate")
}

// BenchmarkTrafficRead reports the CPU a read of the conntrack table costs
// per entry, joined with a full table of followed connections.
func BenchmarkTrafficRead(b *testing.B) {
	const n = 10000
	tt := newTrafficTable(n, n)
	flows := make([]conntrack.Flow, n)
	for i := range flows {
		c := tcp(fmt.Sprintf("10.%d.%d.1", i>>8&255, i&255), uint16(1000+i), 443)
		tt.allowed(allowedBy(curl1000, c, "rule:r1"))
		flows[i] = ctFlow(c, uint32(i+1), 0, 0)
	}
	sb := tt.subscribe(peercred.Cred{UID: 0})
	b.ResetTimer()
	for i := range b.N {
		for j := range flows {
			flows[j].Orig.Bytes = uint64(i + 1)
		}
		read(tt, flows...)
		sb.take(nil, trafficQueueLen) // keep the queue from filling
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/n, "ns/entry")
}

func TestTrafficIntervalConfig(t *testing.T) {
	if got := DefaultConfig().TrafficInterval; got != 5*time.Second {
		t.Errorf("default traffic_interval %v, want 5s", got)
	}
	for _, tc := range []struct {
		file  string
		flags []string
		want  time.Duration
		err   bool
	}{
		{file: `traffic_interval = "1s"`, want: time.Second},
		{file: `traffic_interval = "0s"`, want: 0}, // off
		{file: `traffic_interval = "1s"`, flags: []string{"--traffic-interval", "250ms"}, want: 250 * time.Millisecond},
		{file: `traffic_interval = "10ms"`, err: true},
		{file: `traffic_interval = "2h"`, err: true},
		{file: `traffic_interval = "-1s"`, err: true},
		{file: `traffic_interval = "soon"`, err: true},
		{flags: []string{"--traffic-interval", "50ms"}, err: true},
	} {
		path := filepath.Join(t.TempDir(), "agent.toml")
		if err := os.WriteFile(path, []byte(tc.file), 0o644); err != nil {
			t.Fatal(err)
		}
		cfg, err := ParseFlags(append([]string{"--config", path}, tc.flags...), io.Discard)
		if (err != nil) != tc.err {
			t.Errorf("%q %v: error %v, want error %v", tc.file, tc.flags, err, tc.err)
			continue
		}
		if err == nil && cfg.TrafficInterval != tc.want {
			t.Errorf("%q %v: traffic_interval %v, want %v", tc.file, tc.flags, cfg.TrafficInterval, tc.want)
		}
	}
}

// TestTrafficSamplerUnavailable: where conntrack's accounting cannot be
// reached, opening the sampler fails with the reason (the agent then runs
// on and reports it unavailable).
func TestTrafficSamplerUnavailable(t *testing.T) {
	notANamespace, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer notANamespace.Close()
	s, err := openTrafficSampler(notANamespace, newTrafficTable(4, 4), time.Second, slog.New(slog.DiscardHandler))
	if err == nil {
		s.Close()
		t.Fatal("a sampler opened in a file that is no network namespace")
	}
	if !strings.Contains(err.Error(), "nf_conntrack_acct") {
		t.Errorf("error %q does not say what failed", err)
	}
}
