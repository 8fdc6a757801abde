package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"

	agentv1 "github.com/bastion-fw/bastion/proto/bastion/agent/v1"
)

// TrafficReport is what traffic accounting costs the agent: its CPU time
// per 10,000 connections (allowed from the decision cache through the
// queue, each followed by the accounting) with accounting on (the default
// traffic_interval) and off (traffic_interval = 0), in paired rounds: the
// same dialer alternates between the two agents, each in its own
// namespace, in slices of the same length.
type TrafficReport struct {
	Rounds   int     `json:"rounds,omitempty"`
	SliceSec float64 `json:"slice_seconds,omitempty"`
	// Per round: CPU ms per 10,000 connections of each agent.
	OnCPUMsPer10k  []float64 `json:"on_cpu_ms_per_10k,omitempty"`
	OffCPUMsPer10k []float64 `json:"off_cpu_ms_per_10k,omitempty"`
	// OnVsOff is on/off per round; AddedCPUMsPer10k the difference of the
	// two agents' totals over all rounds, per 10,000 connections.
	OnVsOff          Ratio   `json:"on_vs_off"`
	AddedCPUMsPer10k float64 `json:"added_cpu_ms_per_10k"`
	// Conns made through each agent, and what the accounting reported at
	// the end.
	OnConns, OffConns int    `json:"-"`
	Tracked           uint32 `json:"tracked,omitempty"`
	MemoryBytes       uint64 `json:"memory_bytes,omitempty"`
	Lost              uint64 `json:"lost,omitempty"`
	Skipped           string `json:"skipped,omitempty"`
}

// trafficRounds measures TrafficReport with two agents of runner's binary.
func trafficRounds(ctx context.Context, cfg Config, runner BinaryAgent, out io.Writer) (TrafficReport, error) {
	rep := TrafficReport{SliceSec: cfg.TrafficSlice.Seconds()}
	offRunner := runner
	offRunner.Args = append(slices.Clone(runner.Args), "--traffic-interval", "0")
	type side struct {
		name     string
		sess     *Session
		addr     string
		conns    int
		cpuTicks int64
		perRound *[]float64
	}
	var sides [2]*side
	for i, r := range []BinaryAgent{runner, offRunner} {
		s, err := StartSession(ctx, r)
		if err != nil {
			return rep, err
		}
		defer s.Close()
		addr, stop, err := agentTarget(ctx, s, "traffic accounting", agentv1.Scope_SCOPE_DESTINATION_PORT)
		if err != nil {
			return rep, err
		}
		defer stop()
		sides[i] = &side{name: "on", sess: s, addr: addr, perRound: &rep.OnCPUMsPer10k}
	}
	sides[1].name, sides[1].perRound = "off", &rep.OffCPUMsPer10k
	st, err := sides[0].sess.Agent.Client.GetStatus(ctx, &agentv1.GetStatusRequest{})
	if err != nil {
		return rep, fmt.Errorf("agent status: %w", err)
	}
	if s := st.GetTrafficAccounting().GetState(); s != "active" {
		return rep, fmt.Errorf("traffic accounting is %q in the agent that should have it", s)
	}
	var ratios []float64
	for round := range cfg.TrafficRounds {
		// Alternate which goes first, so that neither always follows
		// the other's leftovers (destroy notifications, TIME_WAIT).
		order := sides
		if round%2 == 1 {
			order[0], order[1] = sides[1], sides[0]
		}
		var perRound [2]float64
		for _, s := range order {
			pid := s.sess.Agent.Cmd.Process.Pid
			u0, err := ReadUsage(pid)
			if err != nil {
				return rep, err
			}
			r := ConnRate(ctx, s.sess.NS, "traffic "+s.name, s.addr, cfg.Workers, cfg.TrafficSlice)
			u1, err := ReadUsage(pid)
			if err != nil {
				return rep, err
			}
			if r.Conns == 0 {
				return rep, fmt.Errorf("no connection through the agent with accounting %s: %s", s.name, r.Note)
			}
			ticks := u1.CPUTicks - u0.CPUTicks
			s.conns += r.Conns
			s.cpuTicks += ticks
			ms := Usage{CPUTicks: ticks}.CPUMillis() * 10000 / float64(r.Conns)
			*s.perRound = append(*s.perRound, ms)
			if s == sides[0] {
				perRound[0] = ms
			} else {
				perRound[1] = ms
			}
		}
		if perRound[1] > 0 {
			ratios = append(ratios, perRound[0]/perRound[1])
		}
		rep.Rounds++
		fmt.Fprintf(out, "traffic round %d: agent CPU per 10,000 connections: accounting on %.0f ms, off %.0f ms\n", round+1, perRound[0], perRound[1])
	}
	if len(ratios) == 0 {
		return rep, errors.New("no round measured")
	}
	rep.OnVsOff = Ratio{Median: median(ratios), Min: slices.Min(ratios), Max: slices.Max(ratios)}
	on, off := sides[0], sides[1]
	rep.OnConns, rep.OffConns = on.conns, off.conns
	rep.AddedCPUMsPer10k = Usage{CPUTicks: on.cpuTicks}.CPUMillis()*10000/float64(on.conns) -
		Usage{CPUTicks: off.cpuTicks}.CPUMillis()*10000/float64(off.conns)
	if st, err := on.sess.Agent.Client.GetStatus(ctx, &agentv1.GetStatusRequest{}); err == nil {
		ta := st.GetTrafficAccounting()
		rep.Tracked, rep.MemoryBytes, rep.Lost = ta.GetTracked(), ta.GetMemoryBytes(), ta.GetLost()
	}
	return rep, nil
}

func printTraffic(out io.Writer, t TrafficReport) {
	if t.Skipped != "" {
		fmt.Fprintf(out, "traffic accounting: skipped: %s\n", t.Skipped)
		return
	}
	fmt.Fprintf(out, "traffic accounting, %d paired rounds of %.1fs slices (cached allows through the queue, %d and %d connections): "+
		"agent CPU with accounting on / off %s per round; added %.0f ms CPU per 10,000 connections (totals); "+
		"at the end %d connections followed, ~%d bytes, %d lost\n",
		t.Rounds, t.SliceSec, t.OnConns, t.OffConns, t.OnVsOff, t.AddedCPUMsPer10k, t.Tracked, t.MemoryBytes, t.Lost)
}
