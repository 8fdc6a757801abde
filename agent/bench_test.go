package agent

import (
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/bastion-fw/bastion/internal/dnsnames"
	"github.com/bastion-fw/bastion/internal/flow"
	"github.com/bastion-fw/bastion/internal/kdecide"
	"github.com/bastion-fw/bastion/internal/nfq"
	"github.com/bastion-fw/bastion/internal/policy"
	"github.com/bastion-fw/bastion/internal/procid"
	"github.com/bastion-fw/bastion/internal/rules"
)

type nopRelease struct{}

func (nopRelease) Release(PacketRef, flow.Action) error { return nil }

// thousandRules is a rule set of the size a long-used desktop collects:
// exact executables, globs, and many destinations for one program.
func thousandRules() []rules.Rule {
	var rs []rules.Rule
	for i := range 1000 {
		r := rules.Rule{ID: fmt.Sprintf("r%04d", i), Enabled: true, Action: flow.ActionAllow, Lifetime: rules.Forever,
			Proto: flow.TCP, PortMin: 443, PortMax: 443}
		switch i % 4 {
		case 0, 1:
			r.Exe = fmt.Sprintf("/opt/app%d/bin/app", i)
		case 2:
			r.Exe = fmt.Sprintf("/home/*/.local/**/tool%d", i)
		case 3:
			r.Exe = "/usr/bin/apt"
			r.Dst = netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i >> 8), byte(i), 0}), 24)
		}
		rs = append(rs, r)
	}
	return rs
}

func newBenchEngine(b *testing.B, ruleUID uint32, rs []rules.Rule) *Engine {
	e := newEngine(slog.New(slog.DiscardHandler), policy.Default(), nopRelease{})
	if rs != nil {
		if _, err := e.SetRules(admin, SetRulesRequest{UID: &ruleUID, Rules: rs}); err != nil {
			b.Fatal(err)
		}
	}
	return e
}

// handleN hands e n connections of root's to dst, which the rules decide
// or (on a miss) the system policy allows: neither leaves state behind, so
// every iteration does the same work. It returns once the rule worker has
// decided them all.
func handleN(e *Engine, n int, dst string) {
	t := tcp(dst, 0, 443)
	for i := range n {
		t.SrcPort = uint16(i)
		e.Handle(PacketRef{ID: uint32(i)}, t, root)
	}
	e.waitRulesIdle()
}

// BenchmarkHandleRules reports what a 1,000-rule matcher adds to Handle:
// x_no_rules is the time per connection with the rules over the time per
// connection of an engine without rules. Both run in the same loop, in
// alternating chunks, so that drift and other load on the machine fall on
// both alike; ns/op is the sum of the two. (testing.Benchmark cannot be
// nested in a benchmark, hence the hand-timed pair.)
func BenchmarkHandleRules(b *testing.B) {
	for _, tc := range []struct {
		name    string
		ruleUID uint32
		dst     string
	}{
		{"miss", 0, "192.0.2.1"},          // no rule covers it; the policy decides
		{"hit", 0, "10.3.231.7"},          // rule r0999 (10.3.231.0/24) decides it
		{"other-uid", 1000, "10.3.231.7"}, // the rules are another UID's
	} {
		b.Run(tc.name, func(b *testing.B) {
			base := newBenchEngine(b, 0, nil)
			e := newBenchEngine(b, tc.ruleUID, thousandRules())
			const chunk = 256
			var withRules, without time.Duration
			b.ReportAllocs()
			b.ResetTimer()
			for done := 0; done < b.N; done += chunk {
				n := min(chunk, b.N-done)
				start := time.Now()
				handleN(e, n, tc.dst)
				mid := time.Now()
				handleN(base, n, tc.dst)
				withRules += mid.Sub(start)
				without += time.Since(mid)
			}
			b.ReportMetric(float64(withRules)/float64(without), "x_no_rules")
			b.ReportMetric(float64(withRules.Nanoseconds())/float64(b.N), "rules_ns/op")
			b.ReportMetric(float64(without.Nanoseconds())/float64(b.N), "base_ns/op")
		})
	}
}

// BenchmarkExeHashCached measures what a sha256 rule costs a connection
// once the image's digest is cached: opening /proc/<tgid>/exe, checking
// the process's start time and the file's identity.
func BenchmarkExeHashCached(b *testing.B) {
	ticks, err := readStartTicks("/proc/self/stat")
	if err != nil {
		b.Skipf("no /proc: %v", err)
	}
	h := newExeHasher("/proc")
	p := flow.Process{TGID: uint32(os.Getpid()), StartTime: ticks * nsPerTick, Exe: "/proc/self/exe", ExeIdentity: flow.ExeHost}
	if _, err := h.Sum(p); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if _, err := h.Sum(p); err != nil {
			b.Fatal(err)
		}
	}
}

// fixedResolver identifies every flow as one process, as the BPF resolver
// does for a flow it has seen.
type fixedResolver struct{ p flow.Process }

func (r fixedResolver) Resolve(flow.Tuple) (flow.Process, error) { return r.p, nil }
func (fixedResolver) Forget(flow.Tuple)                          {}
func (fixedResolver) Mechanism() procid.Mechanism                { return procid.MechProcFS }
func (fixedResolver) Close() error                               { return nil }

// BenchmarkPacketPath measures the agent's work for one queued packet,
// from the parsed packet to the recorded decision (the verdict goes to a
// releaser that does nothing): the cached-allow case the agent is tuned
// for, and the rule and system-policy decisions that share its path. The
// name book is present and empty, as when no DNS answer named the
// destination.
func BenchmarkPacketPath(b *testing.B) {
	curl := flow.Process{PID: 50, TGID: 50, UID: 1000, GID: 1000, Comm: "curl", Exe: "/usr/bin/curl", ExeIdentity: flow.ExeHost, Source: "test", Socket: 1}
	dst := netip.MustParseAddr("10.3.231.7")
	for _, tc := range []struct {
		name  string
		proc  flow.Process
		setup func(e *Engine)
	}{
		{"cache", curl, func(e *Engine) {
			e.cache.put(keyFor(ScopeDestinationPort, curl.UID, curl.Exe, tcp(dst.String(), 0, 443)), flow.ActionAllow, time.Time{})
		}},
		{"rule", root, func(e *Engine) {
			if _, err := e.SetRules(admin, SetRulesRequest{UID: &root.UID, Rules: thousandRules()}); err != nil {
				b.Fatal(err)
			}
		}},
		{"policy", root, func(*Engine) {}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			e := newBenchEngine(b, 0, nil)
			tc.setup(e)
			h := packetHandler{engine: e, res: fixedResolver{tc.proc}, names: newNameBook(e.log, dnsnames.CacheConfig{}, nil)}
			p := nfq.Packet{Tuple: tcp(dst.String(), 0, 443), UID: tc.proc.UID, GID: tc.proc.GID, HasUID: true}
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				p.ID, p.Tuple.SrcPort = uint32(i), uint16(i)
				h.handle(p)
				if tc.name == "rule" {
					// Decided on the UID's rule worker: each packet's
					// time includes the hand-off and the verdict.
					e.waitRulesIdle()
				}
				i++
			}
			if got := e.Counters.Allowed.Load(); got != uint64(i) {
				b.Fatalf("%d of %d packets allowed", got, i)
			}
		})
	}
}

// BenchmarkRecordKernel measures the agent's work for one decision the
// kernel made, from the decoded ring-buffer record to the history entry
// and counters (RecordKernel), in batches of one (an agent woken for each
// record) and of 256 (the reader's largest batch). The executable's path
// is known (the agent remembered the decision), as in the steady state.
func BenchmarkRecordKernel(b *testing.B) {
	p := flow.Process{PID: 50, TGID: 50, UID: 1000, GID: 1000, Comm: "curl", Source: kdecide.Source, ExeDev: 0x800001, ExeIno: 4242}
	for _, batch := range []int{1, 256} {
		b.Run(fmt.Sprintf("batch=%d", batch), func(b *testing.B) {
			e := newBenchEngine(b, 0, nil)
			e.kernelExes.put(p.ExeDev, p.ExeIno, "/usr/bin/curl")
			evs := make([]kdecide.Event, batch)
			for i := range evs {
				evs[i] = kdecide.Event{Time: time.Now(), Process: p, Action: flow.ActionAllow, By: "rule:r0001",
					Tuple: tcp("10.3.231.7", uint16(40000+i), 443)}
			}
			b.ReportAllocs()
			n := 0
			for b.Loop() {
				e.RecordKernel(evs)
				n += batch
			}
			if got := e.Counters.KernelDecisions.Load(); got != uint64(n) {
				b.Fatalf("%d of %d kernel decisions counted", got, n)
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(n), "ns/decision")
		})
	}
}
