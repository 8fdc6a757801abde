package agent

import (
	"slices"
	"time"

	"github.com/bastion-fw/bastion/internal/flow"
)

// retransmitWindow is how long the verdict for an exact tuple answers its
// retransmissions: longer than Linux's default SYN retry span (~127 s).
const retransmitWindow = 3 * time.Minute

// recentSender names the sender of one connection: a retransmission of it
// (same tuple, same sender) gets the verdict its first packet got. The
// process and, where the mechanism knows it, the socket are part of it, so
// that a new connection that happens to reuse the same 5-tuple soon after —
// from another program, another user or the same process — is asked afresh.
type recentSender struct {
	uid    uint32
	tgid   uint32
	exe    string
	socket uint64
}

type recentVerdict struct {
	sender recentSender
	action flow.Action
	until  time.Time
}

// recentLocked returns the verdict that answers a retransmission of t by
// sender, if there is a live one.
func (e *Engine) recentLocked(t flow.Tuple, sender recentSender, now time.Time) (flow.Action, bool) {
	for _, rv := range e.recent[t] {
		if rv.sender == sender && now.Before(rv.until) {
			return rv.action, true
		}
	}
	return flow.ActionNone, false
}

// rememberLocked records the verdict for t by sender until until.
func (e *Engine) rememberLocked(t flow.Tuple, sender recentSender, a flow.Action, until time.Time) {
	rvs := e.recent[t]
	for i := range rvs {
		if rvs[i].sender == sender {
			rvs[i].action, rvs[i].until = a, until
			return
		}
	}
	e.recent[t] = append(rvs, recentVerdict{sender: sender, action: a, until: until})
}

// ForgetRecent drops the retransmission verdicts of t given to socket, and
// those given where the socket was unknown, once socket is gone (socket 0:
// the socket that sent t is unknown): a new socket that reuses t must be
// asked afresh even when its sender looks the same (the same process, with
// a mechanism that does not know sockets). Other sockets' verdicts stay;
// they cannot answer a new socket.
func (e *Engine) ForgetRecent(t flow.Tuple, socket uint64) {
	e.mu.Lock()
	defer e.mu.Unlock()
	rvs := e.recent[t]
	if len(rvs) == 0 {
		return
	}
	rvs = slices.DeleteFunc(rvs, func(rv recentVerdict) bool { return rv.sender.socket == 0 || rv.sender.socket == socket })
	if len(rvs) == 0 {
		delete(e.recent, t)
		return
	}
	e.recent[t] = rvs
}
