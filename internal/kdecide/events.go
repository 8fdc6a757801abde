package kdecide

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"time"
	"unsafe"

	"github.com/cilium/ebpf/ringbuf"

	"github.com/bastion-fw/bastion/internal/flow"
)

// Source is what flow.Process.Source says of a process the kernel decided
// for.
const Source = "kernel"

// Event is one decision the kernel made.
type Event struct {
	// Time is when it was made, on the wall clock.
	Time time.Time
	// Process has what the kernel knows at connect time: IDs, UID, GID,
	// task name, start time, executable file and socket cookie; not the
	// path, arguments or parent.
	Process flow.Process
	// Tuple is the connection; Src and SrcPort are known for allows
	// (taken from the first packet), not for denials (made before the
	// source port is chosen).
	Tuple  flow.Tuple
	Action flow.Action
	// By names what decided it ("rule:ID", "cache:ID").
	By string
	// ExecID is the process's exec count (its leader's self_exec_id):
	// with TGID and start time it names the process image, whose command
	// line the agent completes the record with (procid.Completer).
	ExecID uint64
}

// maxBatch bounds the events handed over in one call.
const maxBatch = 1024

// readAgain is how soon after a wake-up or a read the reader looks again,
// for records the programs did not wake it for: they wake it at most once
// per KD_WAKE_GAP_NS (4 ms, bpf/decide.c) unless 256 records wait. Two
// looks 3 ms apart outlast that gap.
const readAgain = 3 * time.Millisecond

// ReadEvents hands the kernel's decisions to sink, in batches of what the
// ring buffer holds (at most maxBatch), until ctx ends. Events written
// while no agent ran (the ring buffer is pinned) come first.
func (k *Kernel) ReadEvents(ctx context.Context, sink func([]Event)) error {
	r, err := ringbuf.NewReader(k.objs.Events)
	if err != nil {
		return fmt.Errorf("kernel decisions: read events: %w", err)
	}
	stop := context.AfterFunc(ctx, func() { r.Close() })
	defer stop()
	defer r.Close()
	// Boot time to wall time, for the events' timestamps.
	offset := time.Now().UnixNano() - bootNow()
	batch := make([]Event, 0, maxBatch)
	var rec ringbuf.Record
	// Looks since the last record: the reader blocks until woken only
	// after two empty looks readAgain apart, so that a record written
	// within KD_WAKE_GAP_NS of the last wake-up, which woke no one, is
	// still read.
	empty := 0
	// full: the last look filled a batch, so more may wait.
	full := false
	again := time.NewTimer(readAgain)
	defer again.Stop()
	for {
		// Wait for the first event, then take what is there.
		switch {
		case full:
			r.SetDeadline(time.Now())
		case empty >= 2:
			r.SetDeadline(time.Time{})
		default:
			// The next look waits in the Go scheduler, not in a
			// blocking epoll_wait with a timeout: the runtime hands
			// the processor of a goroutine blocked in a system
			// call for more than 20 us to another thread, and
			// doing that ~300 times a second took a third of the
			// agent's CPU under a stream of kernel decisions. A
			// record that arrives meanwhile waits for the look.
			again.Reset(readAgain)
			select {
			case <-ctx.Done():
				return nil
			case <-again.C:
			}
			r.SetDeadline(time.Now())
		}
		for len(batch) < maxBatch {
			if err := r.ReadInto(&rec); err != nil {
				if errors.Is(err, os.ErrDeadlineExceeded) {
					break
				}
				if errors.Is(err, ringbuf.ErrClosed) {
					if len(batch) > 0 {
						sink(batch)
					}
					return nil
				}
				return fmt.Errorf("kernel decisions: read events: %w", err)
			}
			if ev, ok := decodeEvent(rec.RawSample, offset); ok {
				batch = append(batch, ev)
			}
			r.SetDeadline(time.Now())
		}
		full = len(batch) == maxBatch
		if len(batch) > 0 {
			sink(batch)
			batch = batch[:0]
			empty = 0
		} else {
			empty++
		}
	}
}

func decodeEvent(raw []byte, offset int64) (Event, bool) {
	var e decideKdEvent
	if len(raw) < int(unsafe.Sizeof(e)) {
		return Event{}, false
	}
	e = *(*decideKdEvent)(unsafe.Pointer(&raw[0]))
	ev := Event{
		Time: time.Unix(0, int64(e.Ts)+offset),
		Process: flow.Process{
			PID: e.Pid, TGID: e.Tgid, UID: e.Uid, GID: e.Gid, Comm: cString(e.Comm[:]),
			StartTime: e.StartBoottime, Source: Source, SocketCookie: e.Cookie,
			ExeDev: e.ExeDev, ExeIno: e.ExeIno,
		},
		Tuple:  flow.Tuple{Proto: flow.Proto(e.Proto), Dst: addr(e.Daddr), DstPort: e.Dport},
		By:     cString(e.By[:]),
		ExecID: e.ExecId,
	}
	if e.HasSrc != 0 {
		ev.Tuple.Src, ev.Tuple.SrcPort = addr(e.Saddr), e.Sport
	}
	switch e.Action {
	case 1:
		ev.Action = flow.ActionAllow
	case 2:
		ev.Action = flow.ActionDeny
	case 3:
		ev.Action = flow.ActionReject
	default:
		return Event{}, false
	}
	return ev, true
}

func addr(b [16]uint8) netip.Addr { return netip.AddrFrom16(b).Unmap() }

func cString(b []int8) string {
	n := 0
	for n < len(b) && b[n] != 0 {
		n++
	}
	s := make([]byte, n)
	for i := range s {
		s[i] = byte(b[i])
	}
	return string(s)
}
