package gtkclient

import (
	"slices"
	"strconv"
	"strings"
	"time"

	uiv1 "github.com/bastion-fw/bastion/proto/bastion/ui/v1"
)

// promptGroup is what the prompt window shows as one prompt: the waiting
// prompts of one program (same executable, command line and user) to one
// destination (same address or name, port and protocol). The rules service
// already folds retries into one prompt; a group also folds parallel
// connections that reached it as separate prompts.
type promptGroup struct {
	key     string
	prompts []*uiv1.Prompt // the first one is shown and answered
}

func (g *promptGroup) primary() *uiv1.Prompt { return g.prompts[0] }

// connections counts the held connections of the whole group.
func (g *promptGroup) connections() int {
	n := 0
	for _, p := range g.prompts {
		n += max(1, int(p.GetConnections()))
	}
	return n
}

// deadline is the earliest deadline of the group: when its first
// connection gets the default.
func (g *promptGroup) deadline() time.Time {
	var d time.Time
	for _, p := range g.prompts {
		if p.GetDeadline() == nil {
			continue
		}
		if t := p.GetDeadline().AsTime(); d.IsZero() || t.Before(d) {
			d = t
		}
	}
	return d
}

func (g *promptGroup) ids() []string {
	ids := make([]string, len(g.prompts))
	for i, p := range g.prompts {
		ids[i] = p.GetId()
	}
	return ids
}

func groupKey(p *uiv1.Prompt) string {
	pr, f := p.GetProcess(), p.GetFlow()
	return strings.Join([]string{
		// SECURITY: the executable's identity is part of the key, so a
		// process that only shows a path never joins its real program's
		// group (and answer).
		strings.Join([]string{itoa(pr.GetUid()), pr.GetExe(), pr.GetComm(), pr.GetExeIdentity().String(),
			itoa(pr.GetMntNs()), itoa(pr.GetExeDev()), strconv.FormatUint(pr.GetExeIno(), 10)}, "\x00"),
		strings.Join(pr.GetArgs(), "\x00"),
		strings.Join([]string{p.GetHost(), f.GetDstIp(), itoa(f.GetDstPort()), f.GetProtocol().String()}, "\x00"),
	}, "\x01")
}

// promptQueue holds the prompts waiting for this client, grouped, oldest
// group first. It is only used on the GTK thread.
type promptQueue struct {
	groups []*promptGroup
	// later holds the prompts the user put off ("decide later"): the
	// rules service decided them, and an update on its way must not bring
	// them back.
	later map[string]bool
}

func newPromptQueue() *promptQueue { return &promptQueue{later: map[string]bool{}} }

// apply applies an event from the rules service.
func (q *promptQueue) apply(ev *uiv1.PromptEvent) {
	p := ev.GetPrompt()
	id := p.GetId()
	switch ev.GetKind() {
	case uiv1.PromptEvent_KIND_ADDED, uiv1.PromptEvent_KIND_UPDATED:
		if q.later[id] {
			return
		}
		for _, g := range q.groups {
			if i := slices.IndexFunc(g.prompts, func(x *uiv1.Prompt) bool { return x.GetId() == id }); i >= 0 {
				g.prompts[i] = p
				return
			}
		}
		key := groupKey(p)
		for _, g := range q.groups {
			if g.key == key {
				g.prompts = append(g.prompts, p)
				return
			}
		}
		q.groups = append(q.groups, &promptGroup{key: key, prompts: []*uiv1.Prompt{p}})
	case uiv1.PromptEvent_KIND_WITHDRAWN:
		delete(q.later, id)
		q.remove(id)
	}
}

// remove drops prompts; a group without prompts goes away.
func (q *promptQueue) remove(ids ...string) {
	for _, id := range ids {
		for gi, g := range q.groups {
			if i := slices.IndexFunc(g.prompts, func(x *uiv1.Prompt) bool { return x.GetId() == id }); i >= 0 {
				g.prompts = slices.Delete(g.prompts, i, i+1)
				if len(g.prompts) == 0 {
					q.groups = slices.Delete(q.groups, gi, gi+1)
				}
				break
			}
		}
	}
}

// current is the group shown, nil when none waits.
func (q *promptQueue) current() *promptGroup {
	if len(q.groups) == 0 {
		return nil
	}
	return q.groups[0]
}

// waiting is the number of groups behind the current one.
func (q *promptQueue) waiting() int { return max(0, len(q.groups)-1) }

// putOff forgets group g, which the user put off ("decide later"): an
// update on its way must not bring its prompts back.
func (q *promptQueue) putOff(g *promptGroup) {
	if g == nil {
		return
	}
	q.markLater(g.ids()...)
	q.remove(g.ids()...)
}

// markLater and unmarkLater record prompts being put off, so that their
// updates are ignored until the withdrawal comes.
func (q *promptQueue) markLater(ids ...string) {
	for _, id := range ids {
		q.later[id] = true
	}
}

func (q *promptQueue) unmarkLater(ids ...string) {
	for _, id := range ids {
		delete(q.later, id)
	}
}

// expire drops the groups whose deadline has passed: the rules service
// has applied the default (and says so with WITHDRAWN, which may be late
// or lost with the connection).
func (q *promptQueue) expire(now time.Time) bool {
	n := len(q.groups)
	q.groups = slices.DeleteFunc(q.groups, func(g *promptGroup) bool {
		d := g.deadline()
		return !d.IsZero() && !now.Before(d)
	})
	return len(q.groups) != n
}

// clear forgets every prompt, when the stream to the service ends: the
// service sends the ones still waiting again on reconnection.
func (q *promptQueue) clear() {
	q.groups = nil
	clear(q.later)
}

func itoa(u uint32) string { return strconv.Itoa(int(u)) }
