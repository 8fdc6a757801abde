package ctl

import (
	"bytes"
	"context"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/bastion-fw/bastion/internal/testenv/fakeui"
	agentv1 "github.com/bastion-fw/bastion/proto/bastion/agent/v1"
	rulesv1 "github.com/bastion-fw/bastion/proto/bastion/rules/v1"
	uiv1 "github.com/bastion-fw/bastion/proto/bastion/ui/v1"
)

// testPrompt is curl fetching https://www.example.com/ from bash.
func testPrompt(id string) *uiv1.Prompt {
	return &uiv1.Prompt{
		Id: id,
		Process: &agentv1.Process{Pid: 4242, Tgid: 4242, Ppid: 4000, Uid: 1000, Gid: 1000, Comm: "curl",
			Exe: "/usr/bin/curl", Args: []string{"curl", "-sS", "https://www.example.com/"}, IdentifiedBy: "netfilter-link"},
		Flow: &agentv1.Flow{Protocol: agentv1.Protocol_PROTOCOL_TCP, IpVersion: 4, SrcIp: "10.0.0.2", SrcPort: 40000,
			DstIp: "93.184.216.34", DstPort: 443},
		Host:           "www.example.com",
		FirstSeen:      timestamppb.New(testNow.Add(-2 * time.Second)),
		Deadline:       timestamppb.New(testNow.Add(28 * time.Second)),
		DeadlineAction: rulesv1.Action_ACTION_DENY,
		Connections:    1,
	}
}

// otherPrompt is a Python script resolving a name over IPv6 from a
// process whose parent is gone and whose host name is unknown.
func otherPrompt(id string) *uiv1.Prompt {
	args := []string{"/usr/bin/python3", "/home/alice/bin/sync-calendars.py", "--config", "/home/alice/.config/sync/calendars.toml",
		"--verbose", "--server", "https://calendar.example.org/dav/", "--since", "2026-01-01", "--until", "2026-12-31"}
	return &uiv1.Prompt{
		Id: id,
		Process: &agentv1.Process{Pid: 5001, Tgid: 5000, Ppid: 4999, Uid: 1001, Gid: 1001, Comm: "python3",
			Exe: "/usr/bin/python3.11", Args: args},
		Flow: &agentv1.Flow{Protocol: agentv1.Protocol_PROTOCOL_UDP, IpVersion: 6, SrcIp: "2001:db8::2", SrcPort: 50000,
			DstIp: "2001:db8::53", DstPort: 53},
		Deadline:       timestamppb.New(testNow.Add(10 * time.Second)),
		DeadlineAction: rulesv1.Action_ACTION_ALLOW,
		Connections:    3,
	}
}

func uiClient(t *testing.T, h *harness) uiv1.UIServiceClient {
	t.Helper()
	conn, err := grpc.NewClient("unix://"+h.uiSock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return uiv1.NewUIServiceClient(conn)
}

func newSession(t *testing.T, h *harness, in io.Reader, out io.Writer) *promptSession {
	clock := func() time.Time { return testNow }
	return &promptSession{ui: uiClient(t, h), in: in, out: out, now: clock, ruleNow: clock, loc: time.UTC, sys: *testPromptSystem(t)}
}

// answers returns the AnswerPrompt requests the fake received.
func answers(f *fakeui.Service) []*uiv1.AnswerPromptRequest {
	var got []*uiv1.AnswerPromptRequest
	for _, req := range f.CallsTo("AnswerPrompt") {
		got = append(got, req.(*uiv1.AnswerPromptRequest))
	}
	return got
}

// TestPromptAnswers feeds scripted answers to a curl prompt.
func TestPromptAnswers(t *testing.T) {
	curl := func(r *rulesv1.Rule) *rulesv1.Rule {
		r.Enabled, r.Exe = true, "/usr/bin/curl"
		return r
	}
	const (
		stored = "curl -> www.example.com 93.184.216.34:443: "
		later  = "left to the default"
	)
	destPort := func(r *rulesv1.Rule) *rulesv1.Rule {
		r.Host, r.DstPortMin, r.DstPortMax, r.Protocol = "www.example.com", 443, 443, rulesv1.Protocol_PROTOCOL_TCP
		return curl(r)
	}
	tests := []struct {
		name   string
		script string
		want   *rulesv1.Rule // nil: no answer
		end    string        // the session's last words
		golden string
	}{
		// One key answers the common cases.
		{"a allows once", "a\n", destPort(&rulesv1.Rule{Action: rulesv1.Action_ACTION_ALLOW, Lifetime: rulesv1.Lifetime_LIFETIME_ONCE}),
			stored + "allow once", "prompt_allow_once.golden"},
		{"A allows always", "A\n", destPort(&rulesv1.Rule{Action: rulesv1.Action_ACTION_ALLOW, Lifetime: rulesv1.Lifetime_LIFETIME_FOREVER}),
			stored + "allow, rule", "prompt_allow_forever.golden"},
		{"d denies once: refused at once", "d\n", destPort(&rulesv1.Rule{Action: rulesv1.Action_ACTION_REJECT, Lifetime: rulesv1.Lifetime_LIFETIME_ONCE}),
			stored + "deny once", ""},
		{"D denies always", "D\n", destPort(&rulesv1.Rule{Action: rulesv1.Action_ACTION_REJECT, Lifetime: rulesv1.Lifetime_LIFETIME_FOREVER}),
			stored + "deny, rule", ""},
		// More choices, with defaults on Enter.
		{"drop silently once", "m\ns\n\n", destPort(&rulesv1.Rule{Action: rulesv1.Action_ACTION_DENY, Lifetime: rulesv1.Lifetime_LIFETIME_ONCE}),
			stored + "drop silently once", "prompt_drop_once.golden"},
		{"deny 15 minutes host", "m\nd\n2\n2\nn\ny\n", curl(&rulesv1.Rule{Action: rulesv1.Action_ACTION_REJECT,
			Host: "www.example.com", Lifetime: rulesv1.Lifetime_LIFETIME_DURATION,
			Expires: timestamppb.New(testNow.Add(15 * time.Minute))}), stored + "deny, rule", "prompt_deny_15m.golden"},
		{"defaults: forever, first scope, no command line, yes", "m\na\n5\n\n\n\n", destPort(&rulesv1.Rule{Action: rulesv1.Action_ACTION_ALLOW,
			Lifetime: rulesv1.Lifetime_LIFETIME_FOREVER}), stored + "allow, rule", ""},
		{"reject session port with command line", "more\nreject\n4\n4\ny\ny\n", curl(&rulesv1.Rule{Action: rulesv1.Action_ACTION_REJECT,
			Cmdline: `curl -sS https://www\.example\.com/`, DstPortMin: 443, DstPortMax: 443, Protocol: rulesv1.Protocol_PROTOCOL_TCP,
			Lifetime: rulesv1.Lifetime_LIFETIME_SESSION}), stored + "deny, rule", "prompt_cmdline.golden"},
		{"1 hour anywhere", "m\na\n3\n5\nn\ny\n", curl(&rulesv1.Rule{Action: rulesv1.Action_ACTION_ALLOW,
			Lifetime: rulesv1.Lifetime_LIFETIME_DURATION, Expires: timestamppb.New(testNow.Add(time.Hour))}), stored + "allow, rule", ""},
		{"start over after no", "m\na\n5\n1\nn\nn\nD\n", destPort(&rulesv1.Rule{Action: rulesv1.Action_ACTION_REJECT,
			Lifetime: rulesv1.Lifetime_LIFETIME_FOREVER}), stored + "deny, rule", ""},
		{"invalid answers are asked again", "x\nm\nq2\na\n9\n5\n7\n1\nmaybe\nn\ny\n", destPort(&rulesv1.Rule{Action: rulesv1.Action_ACTION_ALLOW,
			Lifetime: rulesv1.Lifetime_LIFETIME_FOREVER}), stored + "allow, rule", "prompt_invalid.golden"},
		{"empty line decides later", "\n", nil, later, "prompt_later.golden"},
		{"escape decides later at any step", "m\na\n5\n\x1b\n", nil, later, ""},
		{"quit", "q\n", nil, "quit;", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, true, false)
			h.ui.AddPrompt(testPrompt("p1"))
			out := newSyncBuffer()
			s := newSession(t, h, strings.NewReader(tc.script), out)
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			done := make(chan error, 1)
			go func() { done <- s.run(ctx) }()
			// Nothing follows the answer: the session would wait for the
			// next prompt.
			out.waitFor(t, tc.end, 1)
			cancel()
			if err := <-done; err != nil {
				t.Fatalf("run: %v\n%s", err, out.String())
			}
			got := answers(h.ui)
			if tc.want == nil {
				if len(got) != 0 {
					t.Fatalf("answered %v, want no answer", got)
				}
			} else {
				if len(got) != 1 || got[0].GetPromptId() != "p1" {
					t.Fatalf("answers %v, want one for p1\n%s", got, out.String())
				}
				if d := protoDiff(tc.want, got[0].GetRule()); d != "" {
					t.Errorf("rule:\n%s\noutput:\n%s", d, out.String())
				}
			}
			if tc.golden != "" {
				golden(t, tc.golden, out.String())
			}
		})
	}
}

// TestPromptDetails shows a prompt without host name, with a long command
// line (shown whole on m), an unknown user and a parent that is gone, and
// offers no domain scope.
func TestPromptDetails(t *testing.T) {
	h := newHarness(t, true, false)
	h.ui.AddPrompt(otherPrompt("p2"))
	var out bytes.Buffer
	s := newSession(t, h, strings.NewReader("m\nd\n5\nm\n3\n"), &out)
	if err := s.run(t.Context()); err != nil {
		t.Fatal(err)
	}
	if n := len(answers(h.ui)); n != 0 {
		t.Fatalf("%d answers, want none", n)
	}
	golden(t, "prompt_details.golden", out.String())
}

// syncBuffer is a bytes.Buffer that a test can wait on.
type syncBuffer struct {
	mu      sync.Mutex
	b       bytes.Buffer
	changed chan struct{}
}

func newSyncBuffer() *syncBuffer { return &syncBuffer{changed: make(chan struct{}, 1)} }

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	select {
	case s.changed <- struct{}{}:
	default:
	}
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// waitFor waits until the output contains sub n times.
func (s *syncBuffer) waitFor(t *testing.T, sub string, n int) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for strings.Count(s.String(), sub) < n {
		select {
		case <-s.changed:
		case <-deadline:
			t.Fatalf("output never contained %q %d times:\n%s", sub, n, s.String())
		}
	}
}

func TestPromptWithdrawn(t *testing.T) {
	h := newHarness(t, true, false)
	inR, inW := io.Pipe()
	out := newSyncBuffer()
	s := newSession(t, h, inR, out)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- s.run(ctx) }()
	stop := sync.OnceValue(func() error {
		cancel()
		inW.Close()
		return <-done
	})
	t.Cleanup(func() { stop() })
	write := func(s string) {
		t.Helper()
		if _, err := io.WriteString(inW, s); err != nil {
			t.Fatal(err)
		}
	}

	h.ui.AddPrompt(testPrompt("p1"))
	out.waitFor(t, "Action?", 1)
	// More prompts queue behind the one shown.
	h.ui.AddPrompt(otherPrompt("p2"))
	h.ui.AddPrompt(testPrompt("p3"))
	out.waitFor(t, "(new prompt from curl; 2 more waiting)", 1)
	write("m\na\n")
	out.waitFor(t, "For how long?", 1)
	// A waiting prompt that goes away is dropped from the queue.
	h.ui.Withdraw("p3", "deadline")
	// The prompt being answered is answered on another client.
	h.ui.Withdraw("p1", "answered")
	out.waitFor(t, "curl -> www.example.com 93.184.216.34:443: answered in another prompt client", 1)
	out.waitFor(t, "== python3.11 wants to connect to [2001:db8::53]:53 ==", 1) // nothing more waiting
	write("m\nd\n2\n1\nn\ny\n")
	out.waitFor(t, "python3.11 -> [2001:db8::53]:53: deny, rule", 1)
	got := answers(h.ui)
	if len(got) != 1 || got[0].GetPromptId() != "p2" || got[0].GetRule().GetAction() != rulesv1.Action_ACTION_REJECT {
		t.Fatalf("answers %v, want a deny (reject) for p2", got)
	}

	// Answered elsewhere between the confirmation and the answer.
	h.ui.AddPrompt(testPrompt("p4"))
	h.ui.DropPrompt("p4")
	out.waitFor(t, "== curl wants to connect to www.example.com:443 ==", 2)
	write("A\n")
	out.waitFor(t, "too late: already decided", 1)

	// Timed out while being answered.
	h.ui.AddPrompt(testPrompt("p5"))
	out.waitFor(t, "== curl wants to connect to www.example.com:443 ==", 3)
	h.ui.Withdraw("p5", "deadline")
	out.waitFor(t, "timed out; the default applied", 2)
	if strings.Contains(out.String(), "p3") || strings.Count(out.String(), "== curl wants to connect to") != 3 {
		t.Errorf("the withdrawn waiting prompt was shown:\n%s", out.String())
	}
	if err := stop(); err != nil {
		t.Errorf("run: %v", err)
	}
	golden(t, "prompt_withdrawn.golden", out.String())
}

// TestPromptCommand runs `bastionctl prompt` end to end.
func TestPromptCommand(t *testing.T) {
	h := newHarness(t, true, false)
	h.ui.AddPrompt(testPrompt("p1"))
	h.ui.AddPrompt(otherPrompt("p2"))
	// The script ends at p2's first question, which ends the session.
	r := h.run(t, "A\n", "prompt")
	if r.code != ExitOK {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	if rs := h.ui.Rules(); len(rs) != 1 || rs[0].GetHost() != "www.example.com" {
		t.Errorf("stored rules %v, want one for www.example.com", rs)
	}
	if down := newHarness(t, false, false).run(t, "", "prompt"); down.code != ExitNoAgent {
		t.Errorf("with the service down: exit %d, want %d", down.code, ExitNoAgent)
	}
}
