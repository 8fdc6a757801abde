package gtkclient

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/bastion-fw/bastion/gtkclient/internal/demo"
	"github.com/bastion-fw/bastion/internal/desktopentry"
	"github.com/bastion-fw/bastion/internal/flow"
	"github.com/bastion-fw/bastion/internal/testenv"
	agentv1 "github.com/bastion-fw/bastion/proto/bastion/agent/v1"
	rulesv1 "github.com/bastion-fw/bastion/proto/bastion/rules/v1"
	uiv1 "github.com/bastion-fw/bastion/proto/bastion/ui/v1"
)

// Tests of the parts without widgets; they run without a display.

func TestPromptQueueModel(t *testing.T) {
	q := newPromptQueue()
	add := func(p *uiv1.Prompt, id string) *uiv1.Prompt {
		p.Id = id
		q.apply(&uiv1.PromptEvent{Kind: uiv1.PromptEvent_KIND_ADDED, Prompt: p})
		return p
	}
	add(demo.CurlPrompt(testNow, time.Minute), "a")
	b := demo.CurlPrompt(testNow, 30*time.Second) // same program and destination, other source port
	b.Flow.SrcPort = 1
	add(b, "b")
	add(demo.SSHv6Prompt(testNow, time.Minute), "c")
	if len(q.groups) != 2 || q.waiting() != 1 {
		t.Fatalf("%d groups, %d waiting; want 2 and 1", len(q.groups), q.waiting())
	}
	g := q.current()
	if g.connections() != 2 || !g.deadline().Equal(testNow.Add(30*time.Second)) {
		t.Errorf("group: %d connections, deadline %v", g.connections(), g.deadline())
	}
	// An update replaces the prompt in place.
	u := demo.CurlPrompt(testNow, time.Minute)
	u.Id, u.Connections = "a", 5
	q.apply(&uiv1.PromptEvent{Kind: uiv1.PromptEvent_KIND_UPDATED, Prompt: u})
	if g.connections() != 6 {
		t.Errorf("after the update: %d connections, want 6", g.connections())
	}
	// The earliest deadline passes: the whole group goes.
	if q.expire(testNow.Add(29 * time.Second)) {
		t.Error("expired before the deadline")
	}
	if !q.expire(testNow.Add(30*time.Second)) || q.current().primary().GetId() != "c" {
		t.Error("the group was not dropped at its deadline")
	}
	// Decide later: an update does not bring it back; withdrawal forgets it.
	q.putOff(q.current())
	if q.current() != nil {
		t.Fatal("put off, still current")
	}
	q.apply(&uiv1.PromptEvent{Kind: uiv1.PromptEvent_KIND_UPDATED, Prompt: &uiv1.Prompt{Id: "c"}})
	if q.current() != nil {
		t.Error("an update brought a put-off prompt back")
	}
	q.apply(&uiv1.PromptEvent{Kind: uiv1.PromptEvent_KIND_WITHDRAWN, Prompt: &uiv1.Prompt{Id: "c"}})
	if len(q.later) != 0 {
		t.Error("a withdrawn prompt is still remembered")
	}
}

func TestRuleDestination(t *testing.T) {
	tests := []struct {
		r    *rulesv1.Rule
		want string
	}{
		{&rulesv1.Rule{}, "anywhere"},
		{&rulesv1.Rule{Host: "example.com", DstPortMin: 443, DstPortMax: 443, Protocol: rulesv1.Protocol_PROTOCOL_TCP}, "TCP example.com:443"},
		{&rulesv1.Rule{Dst: "2001:db8::1", DstPortMin: 22, DstPortMax: 22}, "[2001:db8::1]:22"},
		{&rulesv1.Rule{Dst: "10.0.0.0/8"}, "10.0.0.0/8"},
		{&rulesv1.Rule{DstPortMin: 53, DstPortMax: 53, Protocol: rulesv1.Protocol_PROTOCOL_UDP}, "UDP port 53"},
		{&rulesv1.Rule{DstPortMin: 8000, DstPortMax: 8999}, "port 8000-8999"},
		{&rulesv1.Rule{Protocol: rulesv1.Protocol_PROTOCOL_ICMP}, "ICMP anywhere"},
		{&rulesv1.Rule{DstPortMin: 5000, DstPortMax: 5000, Protocol: rulesv1.Protocol_PROTOCOL_UDPLITE}, "UDP-Lite port 5000"},
		{&rulesv1.Rule{Dst: "10.0.0.1", Protocol: rulesv1.Protocol_PROTOCOL_OTHER, ProtocolNumber: 253}, "protocol 253 10.0.0.1"},
		{&rulesv1.Rule{Protocol: rulesv1.Protocol_PROTOCOL_GRE}, "GRE anywhere"},
	}
	for _, tc := range tests {
		if got := ruleDestination(tc.r); got != tc.want {
			t.Errorf("ruleDestination(%v) = %q, want %q", tc.r, got, tc.want)
		}
	}
}

func TestRuleLifetimeAndAgo(t *testing.T) {
	exp := &rulesv1.Rule{Lifetime: rulesv1.Lifetime_LIFETIME_DURATION, Expires: timestamppb.New(testNow.Add(41*time.Minute + 16*time.Second))}
	if got := ruleLifetime(exp, testNow); got != "42m left" {
		t.Errorf("lifetime %q", got)
	}
	if got := ruleLifetime(exp, testNow.Add(time.Hour)); got != "expired" {
		t.Errorf("lifetime after expiry %q", got)
	}
	for d, want := range map[time.Duration]string{5 * time.Second: "just now", 45 * time.Second: "45s ago",
		17*time.Minute + 40*time.Second: "17m ago", 26 * time.Hour: "26h ago", 72 * time.Hour: "2026-03-11"} {
		if got := ago(testNow.Add(-d), testNow, time.UTC); got != want {
			t.Errorf("ago(%s) = %q, want %q", d, got, want)
		}
	}
}

func TestConfigValidate(t *testing.T) {
	ok := DefaultConfig()
	ok.UISocket = "/run/user/1000/bastion/ui.sock"
	tests := []struct {
		name   string
		mod    func(*Config)
		wantOK bool
	}{
		{"defaults", func(*Config) {}, true},
		{"no socket", func(c *Config) { c.UISocket = "" }, false},
		{"negative arm delay", func(c *Config) { c.ArmDelay = -1 }, false},
		{"huge arm delay", func(c *Config) { c.ArmDelay = time.Minute }, false},
		{"nothing to show", func(c *Config) { c.NoPrompts = true }, false},
		{"rules window only", func(c *Config) { c.NoPrompts, c.MainWindow = true, true }, true},
	}
	for _, tc := range tests {
		c := ok
		tc.mod(&c)
		if err := c.Validate(); (err == nil) != tc.wantOK {
			t.Errorf("%s: Validate() = %v", tc.name, err)
		}
	}
}

func TestDesktopFiles(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("..", "deploy", "bastion-gtk*.desktop"))
	if err != nil || len(files) != 2 {
		t.Fatalf("desktop files: %v %v", files, err)
	}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		info, progs := desktopentry.Parse(strings.NewReader(string(data)))
		if len(progs) != 1 || progs[0] != "bastion-gtk" || info.Icon == "" {
			t.Errorf("%s runs %q with icon %q", f, progs, info.Icon)
		}
	}
	testenv.RequireTools(t, "desktop-file-validate")
	bin, err := exec.LookPath("desktop-file-validate")
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(bin, files...).CombinedOutput()
	if err != nil || len(out) != 0 {
		t.Errorf("desktop-file-validate: %v\n%s", err, out)
	}
}

func TestKernelDecisionsText(t *testing.T) {
	for _, tc := range []struct {
		name          string
		kd            *agentv1.KernelDecisions
		mech, lastMin string
	}{
		{"on", &agentv1.KernelDecisions{Mechanism: "cgroup-sock-addr+xt-bpf", Entries: 4, LastMinuteKernel: 30, LastMinuteUserspace: 10},
			"on (cgroup-sock-addr+xt-bpf): 4 of your decisions remembered in the kernel",
			"30 decided in the kernel, 10 by the agent (75% in the kernel)"},
		{"few in the kernel", &agentv1.KernelDecisions{Mechanism: "cgroup-sock-addr+xt-bpf", LastMinuteKernel: 1, LastMinuteUserspace: 200},
			"on (cgroup-sock-addr+xt-bpf): 0 of your decisions remembered in the kernel",
			"1 decided in the kernel, 200 by the agent (<1% in the kernel)"},
		{"off", &agentv1.KernelDecisions{Mechanism: "off", Reason: "kernel_decisions = false"},
			"off (kernel_decisions = false): every new connection goes through the agent", "no decisions"},
		{"unavailable", &agentv1.KernelDecisions{Mechanism: "unavailable", Reason: "attach connect4: operation not permitted\u202e", LastMinuteUserspace: 3},
			`unavailable (attach connect4: operation not permitted\u202e): every new connection goes through the agent`,
			"0 decided in the kernel, 3 by the agent (0% in the kernel)"},
		{"maps unreadable", &agentv1.KernelDecisions{Mechanism: "cgroup-sock-addr+xt-bpf", Reason: "list: bad file descriptor"},
			"on (cgroup-sock-addr+xt-bpf); your remembered decisions are unknown: list: bad file descriptor", "no decisions"},
		{"older agent", nil, "unknown (the agent does not report it)", "-"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mech, lastMin := kernelDecisionsText(tc.kd)
			if mech != tc.mech || lastMin != tc.lastMin {
				t.Errorf("got %q, %q\nwant %q, %q", mech, lastMin, tc.mech, tc.lastMin)
			}
		})
	}
}

// TestRuleFieldProblems: each field's problem is said in words, naming the
// fix; fine fields say nothing.
func TestRuleFieldProblems(t *testing.T) {
	tests := []struct {
		f     ruleFields
		field string
		want  string // "" for no problem
	}{
		{ruleFields{exe: "/usr/bin/curl"}, fieldProgram, ""},
		{ruleFields{exe: "/opt/**/bin/*"}, fieldProgram, ""},
		{ruleFields{exe: "curl"}, fieldProgram, "Write the program's full path, starting with /"},
		{ruleFields{exe: "/usr/[bin"}, fieldProgram, "This pattern is not valid"},
		{ruleFields{cmdline: `python3 -m http\.server`}, fieldCmdline, ""},
		{ruleFields{cmdline: "a(b"}, fieldCmdline, "missing closing )"},
		{ruleFields{cmdline: "(.*){1001}"}, fieldCmdline, "invalid repeat count"},
		{ruleFields{cmdline: "(.*){500}"}, fieldCmdline, "too complex to match quickly"},
		{ruleFields{host: "*.example.com"}, fieldHost, ""},
		{ruleFields{host: "Example.com"}, fieldHost, "Write the host name in lower case: example.com."},
		{ruleFields{host: "https://example.com"}, fieldHost, "no https://"},
		{ruleFields{host: "ex*ample.com"}, fieldHost, "A * may only stand for"},
		{ruleFields{host: "192.0.2.1"}, fieldHost, "put it under Address"},
		{ruleFields{host: "example.com:443"}, fieldHost, "Write the port under Port"},
		{ruleFields{host: "example..com"}, fieldHost, "no empty parts"},
		{ruleFields{host: "exa$mple.com"}, fieldHost, "only letters, digits"},
		{ruleFields{dst: "2001:db8::/32"}, fieldAddress, ""},
		{ruleFields{dst: "10.0.0.1/8"}, fieldAddress, "10.0.0.1 has bits set past the /8: did you mean 10.0.0.0/8?"},
		{ruleFields{dst: "example.com"}, fieldAddress, "A host name goes under Host name."},
		{ruleFields{dst: "10.0.0.0/99"}, fieldAddress, "Write a network as an address and a prefix length"},
		{ruleFields{dst: "::ffff:192.0.2.1"}, fieldAddress, "Write this IPv4 address as 192.0.2.1."},
		{ruleFields{dst: "fe80::1%eth0"}, fieldAddress, "Zones such as %eth0"},
		{ruleFields{ports: "8000-8999"}, fieldPort, ""},
		{ruleFields{ports: "0"}, fieldPort, "“0” is not a port"},
		{ruleFields{ports: "https"}, fieldPort, "“https” is not a port"},
		{ruleFields{ports: "9000-8000"}, fieldPort, "The range starts above its end: write 8000-9000."},
		{ruleFields{ports: "53", proto: flow.ICMP}, fieldPort, "ICMP has no ports"},
		{ruleFields{note: strings.Repeat("x", 5000)}, fieldNote, "The note is too long"},
	}
	for _, tc := range tests {
		got := tc.f.problems()
		if tc.want == "" {
			if len(got) != 0 {
				t.Errorf("%+v: problems %q, want none", tc.f, got)
			}
			continue
		}
		if !strings.Contains(got[tc.field], tc.want) || len(got) != 1 {
			t.Errorf("%+v: problems %q, want only %s saying %q", tc.f, got, tc.field, tc.want)
		}
	}
	if !(ruleFields{}).anywhere() || (ruleFields{proto: flow.TCP}).anywhere() || !(ruleFields{note: "x"}).anywhere() {
		t.Error("anywhere: wrong for an empty rule, a TCP rule or a rule with only a note")
	}
}

// TestDecidedByText: every decided_by the agent and the rules service
// write is said in words; a rule is named while the rules are known, and
// called deleted only once they are.
func TestDecidedByText(t *testing.T) {
	r := &rulesv1.Rule{Id: "r1", Action: rulesv1.Action_ACTION_ALLOW, Exe: "/usr/bin/curl", Host: "example.com",
		Lifetime: rulesv1.Lifetime_LIFETIME_FOREVER}
	noted := &rulesv1.Rule{Id: "r2", Action: rulesv1.Action_ACTION_DENY, Note: "no telemetry", Lifetime: rulesv1.Lifetime_LIFETIME_FOREVER}
	lookup := func(id string) *rulesv1.Rule {
		switch id {
		case "r1":
			return r
		case "r2":
			return noted
		}
		return nil
	}
	tests := []struct {
		by, ruleID string
		lookup     func(string) *rulesv1.Rule
		want       string
	}{
		{"rule:r1", "r1", lookup, "rule “Allow curl → example.com”"},
		{"rule:r1", "", lookup, "rule “Allow curl → example.com”"},
		{"rule:r2", "r2", lookup, "rule “no telemetry”"},
		{"rule:gone", "gone", lookup, "a rule deleted since"},
		{"rule:r1", "r1", nil, "a rule"},
		{"prompt", "r1", lookup, "you, in the prompt"},
		{"api:uid=1000", "", lookup, "you, through bastionctl"},
		{"api:uid=0", "", lookup, "root, through bastionctl"},
		{"api:uid=1001", "", lookup, "user 1001, through bastionctl"},
		{"default", "", lookup, "no prompt client was running (your silent action)"},
		{"deadline", "", lookup, "nobody answered in time"},
		{"cache:c1", "", lookup, "an earlier answer of yours"},
		{"policy", "", lookup, "the agent's policy for your account"},
		{"unparsed", "", lookup, "the agent (a packet it could not read)"},
		{"something\x1b[1m", "", lookup, "something\\x1b[1m"},
	}
	for _, tc := range tests {
		got, _ := decidedByText(tc.by, tc.ruleID, tc.lookup, 1000, testNow, time.UTC)
		if got != tc.want {
			t.Errorf("decided by %q (rule %q): %q, want %q", tc.by, tc.ruleID, got, tc.want)
		}
	}
}

// TestKeepTogether: the program detail's figures wrap between figures,
// after a comma or a colon, never inside one.
func TestKeepTogether(t *testing.T) {
	for in, want := range map[string]string{
		"last active 10s ago":         "last\u00a0active\u00a010s\u00a0ago",
		"received 1.4 GB, sent 56 MB": "received\u00a01.4\u00a0GB, sent\u00a056\u00a0MB",
		"Today: 3 allowed, 0 denied":  "Today: 3\u00a0allowed, 0\u00a0denied",
	} {
		if got := keepTogether(in); got != want {
			t.Errorf("keepTogether(%q) = %q, want %q", in, got, want)
		}
	}
}
