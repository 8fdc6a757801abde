package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/bastion-fw/bastion/internal/dnsnames"
	"github.com/bastion-fw/bastion/internal/flow"
	"github.com/bastion-fw/bastion/internal/fw"
	"github.com/bastion-fw/bastion/internal/kdecide"
	"github.com/bastion-fw/bastion/internal/netns"
	"github.com/bastion-fw/bastion/internal/nfq"
	"github.com/bastion-fw/bastion/internal/peercred"
	"github.com/bastion-fw/bastion/internal/procid"
	"github.com/bastion-fw/bastion/internal/unixsock"
)

// Run runs the agent until ctx ends: it attributes, holds and decides new
// outbound connections and serves the API. On return the firewall rules it
// added are gone and every packet it held has had its verdict.
func Run(ctx context.Context, cfg Config, log *slog.Logger) error {
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("invalid configuration: %w", err)
	}
	base := log
	log = base.With("component", "agent")

	var ns *os.File
	if cfg.NetNS != "" {
		var err error
		if ns, err = netns.Open(cfg.NetNS); err != nil {
			return err
		}
		defer ns.Close()
	}

	features := procid.Detect()
	log.Info("kernel features", "features", features.String())
	res, err := procid.Open(procid.Config{Mechanism: cfg.Mechanism, NetNS: ns, CgroupPath: cfg.CgroupPath, Log: base})
	if err != nil {
		return fmt.Errorf("process identification: %w", err)
	}
	defer res.Close()
	// Flows the primary mechanism missed get a second chance through
	// sock_diag and /proc, as long as their socket still exists.
	var fallback procid.Resolver
	if res.Mechanism() != procid.MechProcFS {
		fcfg := procid.Config{Mechanism: procid.MechProcFS, FallbackFor: res.Mechanism(), NetNS: ns, Log: base}
		if fallback, err = procid.Open(fcfg); err != nil {
			log.Warn("no procfs fallback for missed flows", "err", err)
		} else {
			defer fallback.Close()
		}
	}

	// SECURITY: the connection queue never sets the kernel's fail-open
	// flag, whatever fail_open says: a packet that finds the queue or its
	// socket full is dropped, never let through unasked. fail_open means
	// --queue-bypass only (the agent is not running).
	q, err := nfq.Open(nfq.Config{Num: cfg.QueueNum, NetNS: ns, MaxLen: connQueueLen, ReadBuffer: connQueueReadBuffer, Log: base})
	if err != nil {
		return fmt.Errorf("open queue: %w", err)
	}
	defer q.Close()

	// DNS answers come through a queue of their own, always fail-open
	// (a full queue accepts rather than drops), so that reading them
	// never competes with held connections and never stops DNS.
	var (
		names *nameBook
		dnsQ  *nfq.Queue
	)
	if dq := cfg.dnsQueue(); dq != 0 {
		dnsQ, err = nfq.Open(nfq.Config{Num: dq, NetNS: ns, FailOpen: true, CopyLen: dnsCopyLen, Log: base})
		if err != nil {
			return fmt.Errorf("open DNS queue: %w", err)
		}
		defer dnsQ.Close()
		names = newNameBook(base.With("component", "dns"), dnsnames.CacheConfig{}, cfg.DNSTrustedResolverUIDs)
	}

	fwCfg := fw.Config{
		Backend: cfg.Backend, NetNS: cfg.NetNS, QueueNum: cfg.QueueNum, FailOpen: cfg.FailOpen,
		DNSQueueNum: cfg.dnsQueue(), InterceptLoopback: cfg.InterceptLoopback, Log: base.With("component", "fw"),
		Accounting: cfg.TrafficInterval != 0,
	}
	if fwCfg.Backend == "" {
		if fwCfg.Backend, err = fw.DetectBackend(ctx, cfg.NetNS); err != nil {
			return fmt.Errorf("detect iptables backend: %w", err)
		}
	}

	ul, err := listen(cfg.Socket)
	if err != nil {
		return err
	}
	defer os.Remove(cfg.Socket)
	l := peercred.LimitListener(ul, apiConnLimits, base.With("component", "api"))

	closeAction := flow.ActionDeny
	if cfg.FailOpen {
		closeAction = flow.ActionAllow
	}
	engine := newEngine(base.With("component", "engine"), cfg.Policy, queueReleaser{q: q, marks: fw.DefaultMarks()})

	// Kernel decisions are loaded (or taken over from a crashed agent's
	// pins) before the chain is installed, so that the chain's match
	// names the current program.
	kern, kernStatus := openKernel(cfg, ns, base.With("component", "kdecide"))
	// A start that fails from here on removes them again, as a clean
	// stop does (kern is nil once closed).
	defer func() {
		if kern != nil {
			if err := kern.Close(); err != nil {
				log.Warn("remove kernel decisions", "err", err)
			}
		}
	}()
	if kern != nil {
		engine.SetKernel(kern)
		fwCfg.KernelAllowPin = kern.XtPin()
		if names != nil {
			engine.SetNames(names)
			names.onChange(engine.ForgetName)
		}
	}

	// Without the guard, a new UDP socket that reuses the 5-tuple of a flow
	// conntrack still tracks passes on that flow's verdict, unasked.
	reuse := &udpReuseState{}
	// A destroyed socket's query flows go with it, so that a new socket
	// reusing the tuple is not taken for the old one's user.
	forget := func(t flow.Tuple, socket uint64) {
		engine.ForgetRecent(t, socket)
		names.forgetQuery(t, socket)
	}
	guard, err := openUDPReuseGuard(ns, forget, base.With("component", "udpreuse"))
	if err != nil {
		reuse.set(udpReuseUnavailable(err))
		log.Warn("udp tuple-reuse protection unavailable: a new udp socket that reuses the 5-tuple of a "+
			"remembered flow passes on that flow's verdict for up to 120 s", "err", err)
	} else {
		defer guard.Close()
		reuse.set(udpReuseActive)
		log.Info("udp tuple-reuse protection active: the conntrack entries of a destroyed udp socket's flows are removed")
	}

	// Traffic accounting is opened before the rules go in, so that the
	// first connections allowed are counted. Where that fails (conntrack's
	// settings appear only with the rules, which load nf_conntrack; or
	// /proc/sys is read-only and the chain's accounting rule turns
	// accounting on), it is opened again once they are in.
	traffic := &trafficAccounting{table: newTrafficTable(maxTrafficConns, maxTrafficConnsPerUID), interval: cfg.TrafficInterval}
	if guard != nil {
		guard.traffic = traffic.table
	}
	var sampler *trafficSampler
	openTraffic := func(final bool) {
		s, err := openTrafficSampler(ns, traffic.table, cfg.TrafficInterval, base.With("component", "traffic"))
		switch {
		case err == nil:
			sampler = s
			traffic.setState(trafficActive)
			engine.traffic.Store(traffic.table)
			log.Info("traffic accounting active: allowed connections' bytes are read from conntrack", "interval", cfg.TrafficInterval)
		case final:
			traffic.setState(fmt.Sprintf("unavailable (%v)", err))
			log.Warn("traffic accounting unavailable: no byte counts for connections", "err", err)
		default:
			log.Debug("traffic accounting not ready before the rules; trying again after them", "err", err)
		}
	}
	if cfg.TrafficInterval == 0 {
		traffic.setState("off (traffic_interval = 0)")
		log.Info("traffic accounting off (traffic_interval = 0)")
	} else {
		traffic.setState("starting")
		openTraffic(false)
	}
	defer func() {
		if sampler != nil {
			if err := sampler.Close(); err != nil {
				log.Warn("close traffic accounting", "err", err)
			}
		}
	}()

	st := staticStatus{
		Mechanism: string(res.Mechanism()), Features: strings.Fields(features.String()), Backend: string(fwCfg.Backend),
		QueueNum: cfg.QueueNum, FailOpen: cfg.FailOpen, NetNS: cfg.NetNS, Started: time.Now(),
		DNSQueueNum: cfg.dnsQueue(), Kernel: kernStatus,
	}
	srv := newGRPCServer(engine, st, guard, reuse, names, kern, traffic)

	// The queue runs under its own context: it must keep answering until
	// the rules that feed it are gone.
	qctx, stopQueue := context.WithCancel(context.Background())
	defer stopQueue()
	qdone := make(chan error, 1)
	go func() {
		h := packetHandler{engine: engine, res: res, fallback: fallback, guard: guard, names: names}
		qdone <- q.Run(qctx, h.handle)
	}()
	// The rules go in only once the queue is bound, so that no first
	// packet finds the queue without a listener.
	select {
	case <-q.Bound():
	case err := <-qdone:
		l.Close()
		engine.Close(closeAction)
		if err == nil {
			err = errors.New("queue stopped")
		}
		return fmt.Errorf("bind queue: %w", err)
	}
	// The DNS queue is fail-open at both ends (--queue-bypass, and a
	// full queue accepts), so it needs no such care; it still binds
	// before the rules go in, so that the first answers are read.
	dnsDone := make(chan error, 1)
	if dnsQ != nil {
		v := dnsVerdicts{q: dnsQ, marks: fw.DefaultMarks(), guard: guard}
		if res.Mechanism() != procid.MechProcFS {
			v.res = res // an eBPF map lookup; /proc scans are too slow for DNS
		}
		go func() { dnsDone <- dnsQ.Run(qctx, func(p nfq.Packet) { v.handle(names, p) }) }()
		select {
		case <-dnsQ.Bound():
		case err := <-dnsDone:
			l.Close()
			engine.Close(closeAction)
			stopQueue()
			<-qdone
			if err == nil {
				err = errors.New("queue stopped")
			}
			return fmt.Errorf("bind DNS queue: %w", err)
		}
	} else {
		close(dnsDone)
	}

	err = fw.Install(ctx, fwCfg)
	if err != nil && fwCfg.Accounting {
		// Most likely this kernel lacks xt_connbytes: the rules go in
		// without the one that turns accounting on.
		log.Warn("firewall rules with the accounting rule failed; installing them without it", "err", err)
		fwCfg.Accounting = false
		err = fw.Install(ctx, fwCfg)
	}
	if err != nil && kern != nil {
		// Most likely this iptables cannot load the bpf match
		// (libxt_bpf, xt_bpf): do without kernel decisions rather than
		// without a firewall.
		log.Warn("firewall rules with the kernel decisions' match failed; kernel decisions off, every new connection goes through the queue", "err", err)
		engine.SetKernel(nil)
		engine.SetNames(nil)
		if names != nil {
			names.onChange(nil)
		}
		if cerr := kern.Close(); cerr != nil {
			log.Warn("remove kernel decisions", "err", cerr)
		}
		kern = nil
		st.Kernel = KernelStatus{Mechanism: "unavailable", Reason: "iptables: " + err.Error()}
		srv = newGRPCServer(engine, st, guard, reuse, names, nil, traffic)
		fwCfg.KernelAllowPin = ""
		err = fw.Install(ctx, fwCfg)
	}
	if err != nil {
		l.Close()
		engine.Close(closeAction)
		stopQueue()
		<-qdone
		<-dnsDone
		return fmt.Errorf("install firewall rules: %w", err)
	}
	if sampler == nil && traffic.State() == "starting" {
		openTraffic(true)
	}
	fallbackMech := "none"
	if fallback != nil {
		fallbackMech = string(fallback.Mechanism())
	}
	log.Info("agent running", "mechanism", res.Mechanism(), "fallback", fallbackMech, "socket", cfg.Socket, "netns", cfg.NetNS,
		"queue", cfg.QueueNum, "dns_queue", fwCfg.DNSQueueNum, "fail_open", cfg.FailOpen, "backend", fwCfg.Backend)

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return engine.Run(gctx) })
	if kern != nil {
		// The kernel's records name the process by its IDs; its command
		// line and parent come from what the mechanism knows of it.
		complete, _ := res.(procid.Completer)
		g.Go(func() error {
			err := kern.ReadEvents(gctx, func(evs []kdecide.Event) {
				if complete != nil {
					for i := range evs {
						complete.Complete(&evs[i].Process, evs[i].ExecID)
					}
				}
				engine.RecordKernel(evs)
				if guard != nil {
					for i := range evs {
						// A UDP flow the kernel allowed is guarded
						// like one the queue allowed.
						if ev := &evs[i]; ev.Tuple.Proto == flow.UDP && ev.Action == flow.ActionAllow && ev.Tuple.Src.IsValid() {
							guard.Sent(ev.Tuple, ev.Process)
						}
					}
				}
			})
			if err != nil {
				log.Error("kernel decisions are no longer recorded", "err", err)
			}
			return nil
		})
	}
	if sampler != nil {
		g.Go(func() error {
			// A failing sampler costs the accounting, not the agent.
			if err := sampler.Run(gctx); err != nil {
				traffic.setState(fmt.Sprintf("stopped (%v)", err))
				engine.traffic.Store(nil)
				log.Error("traffic accounting stopped: no more byte counts for connections", "err", err)
			}
			return nil
		})
	}
	g.Go(func() error { return returnMemory(gctx, 10*time.Second, engine.Counters.Packets.Load, log) })
	if guard != nil {
		g.Go(func() error {
			// A failing guard costs the protection, not the agent.
			if err := guard.Run(gctx); err != nil {
				reuse.set(fmt.Sprintf("stopped (%v)", err))
				log.Error("udp tuple-reuse protection stopped: a new udp socket that reuses the 5-tuple of a "+
					"remembered flow passes on that flow's verdict", "err", err)
			}
			return nil
		})
	}
	g.Go(func() error {
		if err := srv.Serve(l); err != nil {
			return fmt.Errorf("serve API: %w", err)
		}
		return nil
	})
	g.Go(func() error {
		select {
		case <-gctx.Done():
			return nil
		case err := <-qdone:
			qdone <- err
			if err == nil {
				err = errors.New("queue stopped")
			}
			return fmt.Errorf("queue: %w", err)
		}
	})
	g.Go(func() error {
		<-gctx.Done()
		srv.Stop()
		return nil
	})
	if names != nil {
		g.Go(func() error {
			// Expired names are forgotten even if nobody looks them up,
			// so the status counts only live ones.
			t := time.NewTicker(30 * time.Second)
			defer t.Stop()
			for {
				select {
				case <-gctx.Done():
					return nil
				case <-t.C:
					names.sweep()
				}
			}
		})
	}
	runErr := g.Wait()

	// Shutdown order: answer everything held, remove the rules (so nothing
	// new is queued), then let the queue go.
	log.Info("agent stopping", "held_verdict", closeAction.String())
	engine.Close(closeAction)
	rmCtx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := fw.Remove(rmCtx, fwCfg); err != nil {
		runErr = errors.Join(runErr, fmt.Errorf("remove firewall rules: %w", err))
	}
	// A clean stop: the remembered decisions go with the rules. (After a
	// crash they stay pinned and in force until the next agent takes
	// them over.)
	if kern != nil {
		if err := kern.Close(); err != nil {
			log.Warn("remove kernel decisions", "err", err)
		}
		kern = nil
	}
	stopQueue()
	if err := <-qdone; err != nil && runErr == nil {
		runErr = err
	}
	if err := <-dnsDone; err != nil && runErr == nil {
		runErr = fmt.Errorf("DNS queue: %w", err)
	}
	return runErr
}

// packetHandler attributes each queued packet, names its destination if a
// DNS answer did, and hands it to the engine. guard, names and fallback may
// be nil.
type packetHandler struct {
	engine        *Engine
	res, fallback procid.Resolver
	guard         *udpReuseGuard
	names         *nameBook
}

func (h packetHandler) handle(p nfq.Packet) {
	ref := PacketRef{ID: p.ID, Mark: p.Mark}
	if p.ParseErr != nil {
		h.engine.HandleUnparsed(ref)
		return
	}
	proc, err := h.res.Resolve(p.Tuple)
	if err != nil && h.fallback != nil {
		proc, err = h.fallback.Resolve(p.Tuple)
	}
	if err != nil {
		proc = flow.Process{}
	}
	// SECURITY: the socket owner's UID, from the kernel's queue metadata,
	// decides whose connection this is.
	if p.HasUID {
		proc.UID, proc.GID = p.UID, p.GID
	}
	// Recorded before the verdict: the socket cannot be destroyed while
	// the kernel holds its packet, so its destroy notification comes after.
	h.guard.Sent(p.Tuple, proc)
	if p.HasUID {
		// A DNS query: its answers will name addresses for this UID.
		h.names.querySent(p.Tuple, p.Info.TransportOffset, p.Payload, proc)
	}
	// SECURITY: the name is looked up for this connection's own UID
	// (and process): another user's answers never name it.
	h.engine.HandleNamed(ref, p.Tuple, proc, h.names.lookup(proc, p.Tuple.Dst))
}

// queueReleaser turns verdicts into NFQUEUE verdicts. Every verdict
// re-injects the packet with Bastion's mark: the chain saves it on the
// connection, so later packets of an allowed flow never reach the queue, and
// a reject is carried out by the REJECT target, which answers with a TCP
// reset or ICMP unreachable.
type queueReleaser struct {
	q     *nfq.Queue
	marks fw.Marks
}

// Drop discards a packet without a verdict mark: it never reaches the
// chain's rules again.
func (r queueReleaser) Drop(p PacketRef) error { return r.q.Drop(p.ID) }

func (r queueReleaser) Release(p PacketRef, a flow.Action) error {
	m := r.marks.Deny
	switch a {
	case flow.ActionAllow:
		m = r.marks.Allow
	case flow.ActionReject:
		m = r.marks.Reject
	}
	return r.q.Repeat(p.ID, p.Mark&^r.marks.Mask|m)
}

// listen creates the API socket. The socket is world-connectable: every
// caller is authorised from its peer credentials, not from file modes.
func listen(path string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("create socket directory: %w", err)
	}
	if err := unixsock.RemoveStale(path, "agent"); err != nil {
		return nil, err
	}
	l, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o666); err != nil {
		l.Close()
		return nil, fmt.Errorf("chmod %s: %w", path, err)
	}
	return l, nil
}
