package gtkclient

import (
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/gotk3/gotk3/gtk"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/bastion-fw/bastion/internal/inert/inerttest"
	agentv1 "github.com/bastion-fw/bastion/proto/bastion/agent/v1"
	rulesv1 "github.com/bastion-fw/bastion/proto/bastion/rules/v1"
	uiv1 "github.com/bastion-fw/bastion/proto/bastion/ui/v1"
)

// A hostile program's exe, argv and comm: terminal escapes (OSC 52 writes
// the clipboard), CR, NUL, BEL, a C1 CSI, bidi overrides and isolates that
// make "exe\u202efdp.sh" read "exehs.pdf", a line separator and markup.
const hostileExe = "/tmp/b/exe\u202efdp.sh\x1b[2K<b>"

var hostileArgs = []string{"curl\x1b]52;c;ZXZpbA==\x07", "ok\rnc evil 4444", "nul\x00bel\a", "\u009b31m\u2067x\u2028y",
	strings.Repeat("A", 3000)}

func hostilePrompt(now time.Time) *uiv1.Prompt {
	return &uiv1.Prompt{
		Process: &agentv1.Process{Pid: 666, Tgid: 666, Ppid: 1, Uid: 1001, Gid: 1001, Comm: "\x1b[31mx",
			Exe: hostileExe, Args: hostileArgs, IdentifiedBy: "netfilter-link"},
		Flow: &agentv1.Flow{Protocol: agentv1.Protocol_PROTOCOL_TCP, IpVersion: 4, SrcIp: "10.0.0.2", SrcPort: 40000,
			DstIp: "192.0.2.7", DstPort: 443},
		FirstSeen: timestamppb.New(now), Deadline: timestamppb.New(now.Add(time.Minute)),
		DeadlineAction: rulesv1.Action_ACTION_DENY, Connections: 1,
	}
}

// TestPromptWindowShowsHostileStringsInert opens a prompt for a hostile
// program and reads back every label GTK shows.
func TestPromptWindowShowsHostileStringsInert(t *testing.T) {
	e := newEnv(t, envOpt{})
	id := e.svc.AddPrompt(hostilePrompt(testNow))
	e.promptShown(id)
	onGTK(t, func() {
		p := e.a.prompt
		for name, l := range map[string]*gtk.Label{"title": p.title, "subtitle": p.subtitle, "program": p.exe,
			"parent": p.parent, "destination": p.dest, "command line": p.cmdShort, "full command line": p.cmdFull,
			"plain command line": p.cmdPlain, "rule preview": p.preview} {
			got := labelText(l)
			if raw := inerttest.RawControls(got); raw != "" {
				t.Errorf("%s label shows %q raw: %q", name, raw, got)
			}
			if l.GetUseMarkup() && strings.Contains(got, "<b>") {
				t.Errorf("%s label reads %q as markup", name, got)
			}
		}
		if got := labelText(p.exe); got != `/tmp/b/exe\u202efdp.sh\x1b[2K<b>` {
			t.Errorf("program label %q", got)
		}
		if n := utf8.RuneCountInString(labelText(p.title)); n > 200 {
			t.Errorf("title is %d runes long", n)
		}
	})
}

// TestDeniedNotificationIsInert: the summary is plain text and the body
// markup, both without raw controls; the body's own line breaks stay.
func TestDeniedNotificationIsInert(t *testing.T) {
	entry := func() *uiv1.DecideLaterEntry {
		p := hostilePrompt(testNow)
		return &uiv1.DecideLaterEntry{Id: "l", Time: timestamppb.New(testNow), Process: p.GetProcess(), Flow: p.GetFlow(),
			Host: "h\u202e.test", Applied: rulesv1.Action_ACTION_DENY}
	}
	for _, es := range [][]*uiv1.DecideLaterEntry{{entry()}, {entry(), entry()}} {
		n := deniedNotification(es)
		if raw := inerttest.RawControls(n.Summary); raw != "" {
			t.Errorf("summary shows %q raw: %q", raw, n.Summary)
		}
		if raw := inerttest.RawControls(strings.ReplaceAll(n.Body, "\n", "")); raw != "" {
			t.Errorf("body shows %q raw: %q", raw, n.Body)
		}
		if strings.Contains(n.Body, "<b>") || !strings.Contains(n.Body, "&lt;b&gt;") {
			t.Errorf("body markup not escaped: %q", n.Body)
		}
		if len(es) == 2 && strings.Count(n.Body, "\n") != 2 {
			t.Errorf("body lines lost: %q", n.Body)
		}
	}
}
