package gtkclient

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/bastion-fw/bastion/gtkclient/internal/demo"
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
	q.putOff()
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

func TestAppIndex(t *testing.T) {
	idx := newAppIndex()
	idx.addDir(fstest.MapFS{
		"firefox-esr.desktop": {Data: []byte("[Desktop Entry]\nType=Application\nName=Firefox ESR\nName[de]=Firefox\n" +
			"Icon=firefox-esr\nExec=/usr/lib/firefox-esr/firefox-esr %u\n[Desktop Action new]\nName=New\nExec=other\n")},
		"kde/konsole.desktop": {Data: []byte("[Desktop Entry]\nType=Application\nName=Konsole\nIcon=utilities-terminal\n" +
			"Exec=env QT_QPA_PLATFORM=xcb konsole\nTryExec=/usr/bin/konsole\n")},
		"quoted.desktop": {Data: []byte("[Desktop Entry]\nName=My App\nIcon=/opt/my app/icon.png\nExec=\"/opt/my app/run\" --x\n")},
		"link.desktop":   {Data: []byte("[Desktop Entry]\nType=Link\nName=A link\nExec=curl\n")},
		"noname.desktop": {Data: []byte("[Desktop Entry]\nExec=wget\n")},
	})
	tests := []struct {
		exe      string
		wantName string
	}{
		{"/usr/lib/firefox-esr/firefox-esr", "Firefox ESR"},
		{"/usr/bin/konsole", "Konsole"},
		{"/usr/local/bin/konsole", "Konsole"}, // by name from Exec
		{"/opt/my app/run", "My App"},
		{"/usr/bin/curl", ""}, // a Link entry names no program
		{"/usr/bin/wget", ""}, // no Name
		{"/usr/bin/other", ""},
		{"", ""},
	}
	for _, tc := range tests {
		info, ok := idx.lookup(tc.exe)
		if ok != (tc.wantName != "") || info.Name != tc.wantName {
			t.Errorf("lookup(%q) = %+v, %v; want %q", tc.exe, info, ok, tc.wantName)
		}
	}
}

func FuzzParseDesktopEntry(f *testing.F) {
	f.Add("[Desktop Entry]\nName=A\nExec=\"/a b\\\"c\" %u\nTryExec=x\n")
	f.Add("[Desktop Entry]\nName=\nExec=env A=1 B=2\n")
	f.Add("[Desktop Entry]\nName=x\nExec=\"unterminated\n")
	f.Fuzz(func(t *testing.T, data string) {
		info, progs := parseDesktopEntry(strings.NewReader(data))
		if len(progs) > 0 && info.Name == "" {
			t.Errorf("programs %q for an entry without a name", progs)
		}
		for _, p := range progs {
			if p == "" {
				t.Error("an empty program")
			}
		}
	})
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
		info, progs := parseDesktopEntry(strings.NewReader(string(data)))
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
