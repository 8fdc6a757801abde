package gtkclient

import (
	"fmt"
	"path"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	agentv1 "github.com/bastion-fw/bastion/proto/bastion/agent/v1"
	rulesv1 "github.com/bastion-fw/bastion/proto/bastion/rules/v1"
	uiv1 "github.com/bastion-fw/bastion/proto/bastion/ui/v1"
)

// connFilter is what the Connections page's filters select. The
// structured fields go to the rules service as a ConnectionFilter, so that
// it searches the whole kept history; the search words and the
// decided-by kind are matched here, against the row as the page shows it:
// "you, in the prompt" or a rule's name exist only in this client (the
// service knows "prompt" and "rule:<id>").
type connFilter struct {
	words   []string // lower case; every one must appear in the shown row
	program string   // an executable's path, or a name (comm or the path's last element)
	host    string   // a substring of the host name or address, any case
	action  rulesv1.Action
	since   time.Time // zero: open
	until   time.Time // zero: open; excluded
	ruleID  string
	by      string // a decided-by kind of byKinds; "" any
}

// request is the query for f's structured part.
func (f connFilter) request(limit uint32) *uiv1.QueryConnectionsRequest {
	cf := &uiv1.ConnectionFilter{Program: f.program, Host: f.host, Action: f.action, RuleId: f.ruleID}
	if !f.since.IsZero() {
		cf.Since = timestamppb.New(f.since)
	}
	if !f.until.IsZero() {
		cf.Until = timestamppb.New(f.until)
	}
	return &uiv1.QueryConnectionsRequest{Filter: cf, Limit: limit}
}

// matches reports whether e passes every filter; shown is the row's text
// as the page shows it (program, destination, decided by…), which the
// search words are looked for in.
func (f connFilter) matches(e *uiv1.HistoryEntry, shown string) bool {
	if f.program != "" && !programIs(e.GetProcess(), f.program) {
		return false
	}
	if h := strings.ToLower(f.host); h != "" &&
		!strings.Contains(strings.ToLower(e.GetHost()), h) && !strings.Contains(strings.ToLower(e.GetFlow().GetDstIp()), h) {
		return false
	}
	switch f.action {
	case rulesv1.Action_ACTION_UNSPECIFIED:
	case rulesv1.Action_ACTION_DENY:
		if a := e.GetAction(); a != rulesv1.Action_ACTION_DENY && a != rulesv1.Action_ACTION_REJECT {
			return false
		}
	default:
		if e.GetAction() != f.action {
			return false
		}
	}
	t := e.GetTime().AsTime()
	if (!f.since.IsZero() && t.Before(f.since)) || (!f.until.IsZero() && !t.Before(f.until)) {
		return false
	}
	if f.ruleID != "" && entryRuleID(e) != f.ruleID {
		return false
	}
	if f.by != "" && !byKindIs(f.by, e.GetDecidedBy()) {
		return false
	}
	shown = strings.ToLower(shown)
	for _, w := range f.words {
		if !strings.Contains(shown, w) {
			return false
		}
	}
	return true
}

// searchWords splits a search into the lower-case words a row must all
// contain.
func searchWords(s string) []string {
	return strings.Fields(strings.ToLower(s))
}

// entryRuleID is the ID of the rule that decided e, or "".
func entryRuleID(e *uiv1.HistoryEntry) string {
	if e.GetRuleId() != "" {
		return e.GetRuleId()
	}
	id, _ := strings.CutPrefix(e.GetDecidedBy(), "rule:")
	if id == e.GetDecidedBy() {
		return ""
	}
	return id
}

// programIs reports whether p is the program named as ConnectionFilter
// names it: a path (starting with "/") exactly; a name by its comm or its
// path's last element.
func programIs(p *agentv1.Process, program string) bool {
	if strings.HasPrefix(program, "/") {
		return p.GetExe() == program
	}
	return p.GetComm() == program || (p.GetExe() != "" && path.Base(p.GetExe()) == program)
}

// programKey names e's program: its executable's path, or its comm when
// the process was not identified.
func programKey(p *agentv1.Process) string {
	if p.GetExe() != "" {
		return p.GetExe()
	}
	return p.GetComm()
}

// byKinds are the "Decided by" filter's choices besides single rules, in
// the words the page's "Decided by" column uses.
var byKinds = []struct{ id, label string }{
	{"rule", "any rule"},
	{"prompt", "you, in the prompt"},
	{"cache", "an earlier answer of yours"},
	{"api", "bastionctl"},
	{"deadline", "nobody answered in time"},
	{"default", "no prompt client was running"},
	{"policy", "the agent's policy"},
}

func byKindIs(kind, decidedBy string) bool {
	switch kind {
	case "rule", "cache":
		return strings.HasPrefix(decidedBy, kind+":")
	case "api":
		return strings.HasPrefix(decidedBy, "api:")
	}
	return decidedBy == kind
}

// timeRanges are the time filter's choices.
var timeRanges = []struct{ id, label string }{
	{"all", "Any time"},
	{"hour", "Last hour"},
	{"today", "Today"},
	{"week", "Last 7 days"},
	{"custom", "Between…"},
}

// rangeStart is where time range id starts at now; zero for "all".
func rangeStart(id string, now time.Time, loc *time.Location) time.Time {
	switch id {
	case "hour":
		return now.Add(-time.Hour)
	case "today":
		y, mo, d := now.In(loc).Date()
		return time.Date(y, mo, d, 0, 0, 0, 0, loc)
	case "week":
		return now.Add(-7 * 24 * time.Hour)
	}
	return time.Time{}
}

// timeLayouts are what the custom range's fields accept.
var timeLayouts = []string{"2006-01-02 15:04:05", "2006-01-02 15:04", "2006-01-02"}

// parseWhen reads a custom range's field: a date with an optional time,
// or a time alone for today. Empty is an open end (zero).
func parseWhen(s string, now time.Time, loc *time.Location) (time.Time, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return time.Time{}, nil
	}
	for _, l := range timeLayouts {
		if t, err := time.ParseInLocation(l, s, loc); err == nil {
			return t, nil
		}
	}
	for _, l := range []string{"15:04:05", "15:04"} {
		if t, err := time.ParseInLocation(l, s, loc); err == nil {
			y, mo, d := now.In(loc).Date()
			return time.Date(y, mo, d, t.Hour(), t.Minute(), t.Second(), 0, loc), nil
		}
	}
	return time.Time{}, fmt.Errorf("%q is not a time: write it as %s, or %s for today",
		s, now.In(loc).Format("2006-01-02 15:04"), now.In(loc).Format("15:04"))
}

// connKey tells history entries apart, to show each once when the live
// stream and a query both bring it.
func connKey(e *uiv1.HistoryEntry) string {
	f := e.GetFlow()
	var b strings.Builder
	b.WriteString(strconv.FormatInt(e.GetTime().AsTime().UnixNano(), 10))
	for _, s := range []string{strconv.Itoa(int(e.GetProcess().GetPid())), f.GetProtocol().String(), f.GetSrcIp(),
		strconv.Itoa(int(f.GetSrcPort())), f.GetDstIp(), strconv.Itoa(int(f.GetDstPort())), e.GetDecidedBy(), e.GetAction().String()} {
		b.WriteByte('|')
		b.WriteString(s)
	}
	return b.String()
}
