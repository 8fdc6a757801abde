package bench

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/bastion-fw/bastion/internal/testenv"
	agentv1 "github.com/bastion-fw/bastion/proto/bastion/agent/v1"
)

// decider answers every pending connection of an agent with ALLOW in the
// given scope, and forwards what it decided to seen (if not nil).
func decider(ctx context.Context, a *testenv.Agent, scope agentv1.Scope, seen chan<- *agentv1.PendingConnection) (stop func(), err error) {
	ctx, cancel := context.WithCancel(ctx)
	stream, err := a.Client.WatchPending(ctx, &agentv1.WatchPendingRequest{})
	if err != nil {
		cancel()
		return nil, fmt.Errorf("watch pending: %w", err)
	}
	var wg sync.WaitGroup
	sem := make(chan struct{}, 32)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			ev, err := stream.Recv()
			if err != nil {
				return
			}
			if ev.GetKind() != agentv1.PendingEvent_KIND_ADDED {
				continue
			}
			pc := ev.GetConnection()
			if seen != nil {
				select {
				case seen <- pc:
				default: // the reader fell behind; it counts a miss
				}
			}
			sem <- struct{}{}
			wg.Add(1)
			go func() {
				defer func() { <-sem; wg.Done() }()
				a.Client.Decide(ctx, &agentv1.DecideRequest{Id: pc.GetId(), Action: agentv1.Action_ACTION_ALLOW, Scope: scope})
			}()
		}
	}()
	stop = func() { cancel(); wg.Wait() }
	// The stream is the agent's once it lists the caller's UID as
	// watched; until then the system policy decides root's connections
	// and nothing is cached (a warm-up connection allowed that way left
	// a whole case on the queue path).
	registered := testenv.Poll(10*time.Second, func() bool {
		st, err := a.Client.GetStatus(ctx, &agentv1.GetStatusRequest{})
		return err == nil && slices.Contains(st.GetWatchedUids(), st.GetCallerUid())
	})
	if !registered {
		stop()
		return nil, fmt.Errorf("watch pending: the agent did not list the stream's UID as watched within 10s")
	}
	return stop, nil
}

// AgentCached measures connections the agent allows from its decision
// cache: one connection is answered through the API with scope
// destination-port, every later one hits the cache.
func AgentCached(ctx context.Context, s *Session, workers int, d time.Duration) (Result, Usage, error) {
	return agentRate(ctx, s, "agent, cached allow", agentv1.Scope_SCOPE_DESTINATION_PORT, workers, d)
}

// AgentAPI measures connections that each wait for an ALLOW through the
// API (scope connection), the worst case of an interactive firewall.
func AgentAPI(ctx context.Context, s *Session, workers int, d time.Duration) (Result, Usage, error) {
	return agentRate(ctx, s, "agent, API answers each", agentv1.Scope_SCOPE_CONNECTION, workers, d)
}

// Session is one agent on one namespace, shared by the agent cases: the
// agent's start-up (eBPF loading) is slow enough to matter in a three-minute
// run. Each case uses its own server port, so cache entries made by one
// case never answer another's connections.
type Session struct {
	NS    *testenv.NS
	Agent *testenv.Agent
}

// StartSession creates a namespace and starts the agent on it.
func StartSession(ctx context.Context, runner AgentRunner) (*Session, error) {
	ns, err := testenv.CreateNetNS("")
	if err != nil {
		return nil, err
	}
	a, err := runner.Start(ctx, ns)
	if err != nil {
		ns.Delete()
		return nil, err
	}
	return &Session{NS: ns, Agent: a}, nil
}

// Close stops the agent and deletes the namespace.
func (s *Session) Close() error {
	return errors.Join(s.Agent.Stop(), s.NS.Delete())
}

// agentTarget starts a server in the session's namespace whose connections
// the agent decides in scope, with a decider answering the prompts, and
// makes the first connection (which, for a cached scope, creates the cache
// entry). It returns the server's address and a function that stops both.
func agentTarget(ctx context.Context, s *Session, name string, scope agentv1.Scope) (addr string, stop func(), err error) {
	ns, a := s.NS, s.Agent
	addr, closeSrv, err := AcceptAndClose(ctx, ns, "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	stopDecider, err := decider(ctx, a, scope, nil)
	if err != nil {
		closeSrv()
		return "", nil, err
	}
	stop = func() { stopDecider(); closeSrv() }
	warm := testenv.Poll(10*time.Second, func() bool {
		return ns.Do(func() error {
			c, err := net.DialTimeout("tcp", addr, 2*time.Second)
			if err == nil {
				c.Close()
			}
			return err
		}) == nil
	})
	if !warm {
		stop()
		return "", nil, fmt.Errorf("%s: warm-up connection not allowed within 10s: %s", name, a.LogTail(5))
	}
	return addr, stop, nil
}

func agentRate(ctx context.Context, s *Session, name string, scope agentv1.Scope, workers int, d time.Duration) (Result, Usage, error) {
	a := s.Agent
	addr, stop, err := agentTarget(ctx, s, name, scope)
	if err != nil {
		return Result{}, Usage{}, err
	}
	defer stop()
	before, err := a.Client.GetStatus(ctx, &agentv1.GetStatusRequest{})
	if err != nil {
		return Result{}, Usage{}, fmt.Errorf("agent status: %w", err)
	}
	u0, err := ReadUsage(a.Cmd.Process.Pid)
	if err != nil {
		return Result{}, Usage{}, err
	}
	r := ConnRate(ctx, s.NS, name, addr, workers, d)
	u1, err := ReadUsage(a.Cmd.Process.Pid)
	if err != nil {
		return r, Usage{}, err
	}
	after, err := a.Client.GetStatus(ctx, &agentv1.GetStatusRequest{})
	if err == nil {
		c0, c1 := before.GetCounters(), after.GetCounters()
		r.Note = strings.TrimSpace(r.Note + fmt.Sprintf(" mechanism=%s packets=%d cache_hits=%d api_decisions=%d",
			after.GetMechanism(), c1.GetPackets()-c0.GetPackets(), c1.GetCacheHits()-c0.GetCacheHits(),
			c1.GetApiDecisions()-c0.GetApiDecisions()))
	}
	return r, Usage{RSSKB: u1.RSSKB, HWMKB: u1.HWMKB, CPUTicks: u1.CPUTicks - u0.CPUTicks}, nil
}

// Attribution is how well the agent names the process behind connections
// of short-lived processes.
type Attribution struct {
	Processes  int            `json:"processes"`
	Identified int            `json:"identified"` // right TGID, UID and executable
	Share      float64        `json:"share"`
	Misses     map[string]int `json:"misses,omitempty"` // reason -> count
	Seconds    float64        `json:"seconds"`
	Mechanism  string         `json:"mechanism,omitempty"`
	Skipped    string         `json:"skipped,omitempty"`
}

// MeasureAttribution runs n dialer processes one after another, rotating
// over TCP and UDP, IPv4 and IPv6, and UIDs 0, 1000 and 1001. Each connects
// (or sends one datagram) and exits at once; the agent's pending entry for
// its flow must name its TGID, UID and executable.
func MeasureAttribution(ctx context.Context, s *Session, dialer string, n int) (Attribution, error) {
	res := Attribution{Misses: map[string]int{}}
	ns, a := s.NS, s.Agent
	var tcp4, tcp6 string
	for _, p := range []struct {
		dst  *string
		addr string
	}{{&tcp4, "127.0.0.1:0"}, {&tcp6, "[::1]:0"}} {
		addr, closeSrv, err := AcceptAndClose(ctx, ns, p.addr)
		if err != nil {
			return res, err
		}
		defer closeSrv()
		*p.dst = addr
	}
	// UDP needs no server: the first datagram is what the agent holds.
	_, port4, _ := net.SplitHostPort(tcp4)
	_, port6, _ := net.SplitHostPort(tcp6)
	udp4, udp6 := net.JoinHostPort("127.0.0.1", port4), net.JoinHostPort("::1", port6)

	seen := make(chan *agentv1.PendingConnection, 1024)
	stop, err := decider(ctx, a, agentv1.Scope_SCOPE_CONNECTION, seen)
	if err != nil {
		return res, err
	}
	defer stop()

	kinds := []struct {
		net, addr string
		proto     agentv1.Protocol
	}{
		{"tcp4", tcp4, agentv1.Protocol_PROTOCOL_TCP},
		{"udp4", udp4, agentv1.Protocol_PROTOCOL_UDP},
		{"tcp6", tcp6, agentv1.Protocol_PROTOCOL_TCP},
		{"udp6", udp6, agentv1.Protocol_PROTOCOL_UDP},
	}
	uids := []uint32{0, 1000, 1001}
	start := time.Now()
	for i := range n {
		if ctx.Err() != nil {
			break
		}
		k, uid := kinds[i%len(kinds)], uids[(i/len(kinds))%len(uids)]
		res.Processes++
		dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		r, err := ns.RunDialer(dctx, dialer, uid, uid, "-net", k.net, "-addr", k.addr, "-timeout", "5s")
		cancel()
		if err != nil || !r.OK {
			res.Misses["dialer failed: "+r.Kind+" ("+k.net+")"]++
			continue
		}
		_, lport, _ := net.SplitHostPort(r.Local)
		// Find the pending entry of this flow; earlier entries of
		// other flows (e.g. a retransmission) are skipped.
		var pc *agentv1.PendingConnection
		deadline := time.After(2 * time.Second)
	wait:
		for {
			select {
			case c := <-seen:
				if c.GetFlow().GetProtocol() == k.proto && strconv.Itoa(int(c.GetFlow().GetSrcPort())) == lport {
					pc = c
					break wait
				}
			case <-deadline:
				break wait
			}
		}
		switch p := pc.GetProcess(); {
		case pc == nil:
			res.Misses["no pending entry ("+k.net+")"]++
		case p.GetIdentifiedBy() == "":
			res.Misses["unidentified ("+k.net+")"]++
		case int(p.GetTgid()) != r.PID:
			res.Misses["wrong pid ("+k.net+")"]++
		case p.GetUid() != uid:
			res.Misses["wrong uid ("+k.net+")"]++
		case p.GetExe() != dialer:
			res.Misses["wrong exe ("+k.net+")"]++
		default:
			res.Identified++
		}
	}
	res.Seconds = time.Since(start).Seconds()
	if res.Processes > 0 {
		res.Share = float64(res.Identified) / float64(res.Processes)
	}
	if st, err := a.Client.GetStatus(ctx, &agentv1.GetStatusRequest{}); err == nil {
		res.Mechanism = st.GetMechanism()
	}
	return res, nil
}
