package agent

import (
	"sync"
	"time"

	"github.com/bastion-fw/bastion/internal/flow"
)

// Rule workers. A UID's rules are matched on a goroutine of that UID's own,
// never on the packet goroutine, so that no user's rules (an expensive
// expression, a hash of a huge executable) cost another user's connections
// time. The packet goroutine keeps only the cheap paths: a retransmission's
// verdict, and for UIDs without rules the decision cache and the policy.
//
// The agent runs on one P (GOMAXPROCS=1). A worker that has matched for
// paceSlice parks briefly: runtime.Gosched alone would put it straight back
// on the run queue, ahead of the network poller, which the scheduler checks
// only when it has nothing else to run (measured: a goroutine yielding with
// Gosched every 200 us delayed a socket reader by 5 ms at the median). Each
// single match is short by construction (internal/rules bounds an
// expression's work, and Conn.Pace runs between expressions).

const (
	// ruleQueueLen bounds the connections of one UID waiting for its
	// rules; past it, a connection gets the prompt timeout action at once.
	ruleQueueLen = 1024
	// paceSlice is how long a worker matches before it lets others run.
	paceSlice = 200 * time.Microsecond
	// pacePause is how long it parks then: a worker that is always busy
	// (a UID whose rules are costly) uses at most a tenth of a core, and
	// the agent's thread sleeps often enough that the kernel wakes it at
	// once for the next packet even on a loaded machine (measured: at a
	// fifth, B's costly rules still delayed A's connections on a machine
	// with a load average of 20).
	pacePause = 9 * paceSlice
	// workerIdle is how long a worker without work lives on.
	workerIdle = time.Minute
)

// ruleJob is a connection waiting for its UID's rules.
type ruleJob struct {
	ref  PacketRef
	t    flow.Tuple
	proc flow.Process
	host string
	now  time.Time
}

// ruleWorkers are the engine's workers, one per UID with work. The map and
// the queued count are guarded by Engine.mu.
type ruleWorkers struct {
	byUID  map[uint32]*ruleWorker
	queued int
	idle   *sync.Cond // signalled when queued drops to 0
	quit   chan struct{}
	stop   sync.Once
	wg     sync.WaitGroup
}

type ruleWorker struct {
	e    *Engine
	uid  uint32
	jobs chan ruleJob
	// runStart is when the worker last started working without a pause.
	runStart time.Time
}

func (rw *ruleWorkers) init(mu *sync.Mutex) {
	rw.byUID = make(map[uint32]*ruleWorker)
	rw.idle = sync.NewCond(mu)
	rw.quit = make(chan struct{})
}

// enqueueRulesLocked hands j to its UID's worker, starting one if needed.
// It reports false when that UID's queue is full. The caller holds e.mu
// and has checked that the engine is not closed.
func (e *Engine) enqueueRulesLocked(j ruleJob) bool {
	w := e.workers.byUID[j.proc.UID]
	if w == nil {
		w = &ruleWorker{e: e, uid: j.proc.UID, jobs: make(chan ruleJob, ruleQueueLen)}
		e.workers.byUID[w.uid] = w
		e.workers.wg.Add(1)
		go w.run()
	}
	select {
	case w.jobs <- j:
		e.workers.queued++
		return true
	default:
		return false
	}
}

func (w *ruleWorker) run() {
	e := w.e
	defer e.workers.wg.Done()
	idle := time.NewTimer(workerIdle)
	defer idle.Stop()
	for {
		var j ruleJob
		select {
		case j = <-w.jobs:
		default:
			w.runStart = time.Time{} // about to wait: the run of work ends
			select {
			case j = <-w.jobs:
			case <-idle.C:
				e.mu.Lock()
				if len(w.jobs) == 0 {
					delete(e.workers.byUID, w.uid)
					e.mu.Unlock()
					return
				}
				e.mu.Unlock()
				idle.Reset(workerIdle)
				continue
			case <-e.workers.quit:
				// The engine is closed: every queued job gets the
				// close action from decide.
				for {
					select {
					case j := <-w.jobs:
						w.handle(j)
					default:
						return
					}
				}
			}
		}
		w.handle(j)
		idle.Reset(workerIdle)
		w.pace()
	}
}

func (w *ruleWorker) handle(j ruleJob) {
	e := w.e
	e.decide(j.ref, j.t, j.proc, j.host, j.now, w)
	e.mu.Lock()
	if e.workers.queued--; e.workers.queued == 0 {
		e.workers.idle.Broadcast()
	}
	e.mu.Unlock()
}

// pace parks the worker briefly once it has worked for paceSlice, so that
// the packet goroutine and other UIDs' workers run.
func (w *ruleWorker) pace() {
	now := time.Now()
	if w.runStart.IsZero() {
		w.runStart = now
		return
	}
	if now.Sub(w.runStart) < paceSlice {
		return
	}
	time.Sleep(pacePause)
	w.runStart = time.Now()
}

// hashWait is how long a connection that arrived at now may wait for a
// hash: until its prompt deadline.
func (e *Engine) hashWait(now time.Time) time.Duration {
	return now.Add(e.pol.PromptTimeout).Sub(e.now())
}

// waitRulesIdle waits until every queued connection has been decided by its
// UID's rules (or handed on to the cache, the prompt or the policy).
func (e *Engine) waitRulesIdle() {
	e.mu.Lock()
	for e.workers.queued > 0 {
		e.workers.idle.Wait()
	}
	e.mu.Unlock()
}

// stopWorkers makes the workers answer what they hold and end, and waits
// for them. The engine is closed already, so nothing new is queued.
func (e *Engine) stopWorkers() {
	e.workers.stop.Do(func() { close(e.workers.quit) })
	e.hashes.Close()
	e.workers.wg.Wait()
}
