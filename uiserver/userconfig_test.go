package uiserver

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/bastion-fw/bastion/internal/flow"
	agentv1 "github.com/bastion-fw/bastion/proto/bastion/agent/v1"
	rulesv1 "github.com/bastion-fw/bastion/proto/bastion/rules/v1"
	uiv1 "github.com/bastion-fw/bastion/proto/bastion/ui/v1"
)

// TestSetConfigAppliesLiveAndPersists: SetConfig changes what applies at
// once, with no restart (the silent action of the next connection, the
// deadline and deadline action of the next prompt, the status), and saves
// the settings to the config file, keeping its other lines, so that the
// service starts with them again.
func TestSetConfigAppliesLiveAndPersists(t *testing.T) {
	var path string
	h := newHarness(t, func(c *Config) {
		path = filepath.Join(filepath.Dir(c.DataDir), "config", "bastion", "config.toml")
		c.ConfigPath = path
	})
	os.MkdirAll(filepath.Dir(path), 0o700)
	orig := "# my settings\nlog_level = \"debug\"\n# prompt_timeout = \"1m\" (an old idea)\nsilent_action = \"allow\"\n"
	if err := os.WriteFile(path, []byte(orig), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	got, err := h.ui.GetConfig(ctx, &uiv1.GetConfigRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if got.GetPath() != path || got.GetConfig().GetSilentAction() != rulesv1.Action_ACTION_ALLOW ||
		got.GetConfig().GetPromptTimeout().AsDuration() != 25*time.Second || got.GetConfig().GetHistorySize() != 100 {
		t.Fatalf("GetConfig %v", got)
	}

	// With no prompt client, the silent action applies: allow, then reject.
	h.agent.hold("c1", h.uid, curl, 40000, "192.0.2.1", 443, 30*time.Second)
	waitFor(t, "c1 allowed silently", func() bool { return h.agent.decision("c1") == agentv1.Action_ACTION_ALLOW })
	want := &uiv1.UserConfig{SilentAction: rulesv1.Action_ACTION_REJECT, PromptTimeout: durationpb.New(40 * time.Second),
		TimeoutAction: rulesv1.Action_ACTION_ALLOW, HistorySize: 50}
	set, err := h.ui.SetConfig(ctx, &uiv1.SetConfigRequest{Config: want})
	if err != nil {
		t.Fatal(err)
	}
	if set.GetConfig().GetPromptTimeout().AsDuration() != 40*time.Second || set.GetPath() != path {
		t.Errorf("SetConfig answered %v", set)
	}
	h.agent.hold("c2", h.uid, curl, 40001, "192.0.2.2", 443, 60*time.Second)
	waitFor(t, "c2 rejected silently", func() bool { return h.agent.decision("c2") == agentv1.Action_ACTION_REJECT })
	st := h.status()
	if st.GetSilentAction() != rulesv1.Action_ACTION_REJECT || st.GetTimeoutAction() != rulesv1.Action_ACTION_ALLOW ||
		st.GetPromptTimeout().AsDuration() != 40*time.Second {
		t.Errorf("status after SetConfig: %v", st)
	}

	// The next prompt waits 40s and then allows.
	pc := h.watchPrompts()
	start := h.clock.Now()
	h.agent.hold("c3", h.uid, curl, 40002, "192.0.2.3", 443, 60*time.Second)
	waitFor(t, "a prompt", func() bool { return pc.find(uiv1.PromptEvent_KIND_ADDED) != nil })
	p := pc.find(uiv1.PromptEvent_KIND_ADDED).GetPrompt()
	if !p.GetDeadline().AsTime().Equal(start.Add(40*time.Second)) || p.GetDeadlineAction() != rulesv1.Action_ACTION_ALLOW {
		t.Errorf("prompt deadline %v action %v, want now+40s and allow", p.GetDeadline().AsTime().Sub(start), p.GetDeadlineAction())
	}
	h.clock.Advance(40 * time.Second)
	waitFor(t, "c3 allowed at the deadline", func() bool { return h.agent.decision("c3") == agentv1.Action_ACTION_ALLOW })

	// The file keeps the person's lines and holds the new values.
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range []string{"# my settings", `log_level = "debug"`, `# prompt_timeout = "1m" (an old idea)`,
		`silent_action = "reject"`, `prompt_timeout = "40s"`, `timeout_action = "allow"`, "history_size = 50"} {
		if !strings.Contains(string(data), line+"\n") {
			t.Errorf("config file lacks %q:\n%s", line, data)
		}
	}
	if strings.Contains(string(data), `silent_action = "allow"`) {
		t.Errorf("config file still has the old silent action:\n%s", data)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("config file mode %v (%v), want 0600 as before", fi.Mode(), err)
	}
	// The service would start with them.
	cfg, err := ParseFlags([]string{"--config", path, "--socket", "/run/x.sock", "--data-dir", "/tmp/d"}, os.Stderr)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.SilentAction != flow.ActionReject || cfg.PromptTimeout != 40*time.Second || cfg.TimeoutAction != flow.ActionAllow || cfg.HistorySize != 50 {
		t.Errorf("config read back: %+v", cfg)
	}
}

// TestSetConfigRejectsBadValues: bad settings are refused with a sentence
// that names the setting, and change neither the service nor the file.
func TestSetConfigRejectsBadValues(t *testing.T) {
	var path string
	h := newHarness(t, func(c *Config) {
		path = filepath.Join(filepath.Dir(c.DataDir), "config.toml")
		c.ConfigPath = path
	})
	good := func() *uiv1.UserConfig {
		return &uiv1.UserConfig{SilentAction: rulesv1.Action_ACTION_DENY, PromptTimeout: durationpb.New(time.Minute),
			TimeoutAction: rulesv1.Action_ACTION_REJECT, HistorySize: 10}
	}
	tests := []struct {
		edit func(*uiv1.UserConfig)
		want string
	}{
		{func(u *uiv1.UserConfig) { u.SilentAction = rulesv1.Action_ACTION_UNSPECIFIED }, "the action while no prompt client runs must be"},
		{func(u *uiv1.UserConfig) { u.TimeoutAction = 42 }, "the action for an unanswered prompt must be"},
		{func(u *uiv1.UserConfig) { u.PromptTimeout = durationpb.New(500 * time.Millisecond) }, "prompt timeout 500ms is out of range"},
		{func(u *uiv1.UserConfig) { u.PromptTimeout = durationpb.New(25 * time.Hour) }, "prompt timeout 25h0m0s is out of range"},
		{func(u *uiv1.UserConfig) { u.PromptTimeout = nil }, "the prompt timeout is missing"},
		{func(u *uiv1.UserConfig) { u.HistorySize = 10001 }, "history size 10001 is too large"},
	}
	for _, tc := range tests {
		u := good()
		tc.edit(u)
		_, err := h.ui.SetConfig(context.Background(), &uiv1.SetConfigRequest{Config: u})
		if code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("SetConfig(%v): %v, want InvalidArgument saying %q", u, err, tc.want)
		}
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Errorf("a config file was written for refused settings: %v", err)
	}
	if st := h.status(); st.GetSilentAction() != rulesv1.Action_ACTION_ALLOW || st.GetPromptTimeout().AsDuration() != 25*time.Second {
		t.Errorf("refused settings applied: %v", st)
	}
	// A good one creates the file.
	if _, err := h.ui.SetConfig(context.Background(), &uiv1.SetConfigRequest{Config: good()}); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(path)
	if err != nil || !strings.Contains(string(data), `silent_action = "deny"`) {
		t.Errorf("new config file %q (%v)", data, err)
	}
	// A file the person broke is not overwritten.
	os.WriteFile(path, []byte("prompt_timeout = \n"), 0o644)
	_, err = h.ui.SetConfig(context.Background(), &uiv1.SetConfigRequest{Config: good()})
	if err == nil || !strings.Contains(err.Error(), "has an error (fix or remove it") {
		t.Errorf("SetConfig over a broken file: %v", err)
	}
	if data, _ := os.ReadFile(path); string(data) != "prompt_timeout = \n" {
		t.Errorf("broken file overwritten: %q", data)
	}
}

// TestSetConfigWithoutFile: a service without a config file says so.
func TestSetConfigWithoutFile(t *testing.T) {
	h := newHarness(t, nil)
	_, err := h.ui.SetConfig(context.Background(), &uiv1.SetConfigRequest{Config: userConfigProto(h.cfg)})
	if code(err) != codes.FailedPrecondition {
		t.Errorf("SetConfig without a config file: %v, want FailedPrecondition", err)
	}
}
