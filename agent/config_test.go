package agent

import (
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/bastion-fw/bastion/internal/flow"
	"github.com/bastion-fw/bastion/internal/policy"
)

// The shipped, commented config must parse to exactly the defaults.
func TestShippedConfigIsTheDefault(t *testing.T) {
	data, err := os.ReadFile("../deploy/agent.toml")
	if err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig()
	if err := cfg.applyFile(data); err != nil {
		t.Fatalf("deploy/agent.toml: %v", err)
	}
	if !reflect.DeepEqual(cfg, DefaultConfig()) {
		t.Fatalf("deploy/agent.toml gives %+v, defaults are %+v", cfg, DefaultConfig())
	}
}

func TestConfigFileAndFlags(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "agent.toml")
	os.WriteFile(path, []byte(`
fail_open = false
queue_num = 77
[policy]
prompt_timeout = "5s"
timeout_action = "reject"
[[policy.users]]
uids = "1000"
action = "deny"
`), 0o644)
	cfg, err := ParseFlags([]string{"--config", path, "--queue-num", "88", "--netns", "x"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.FailOpen || cfg.QueueNum != 88 || cfg.NetNS != "x" || cfg.Policy.PromptTimeout != 5*time.Second ||
		cfg.Policy.TimeoutAction != flow.ActionReject {
		t.Fatalf("unexpected config %+v", cfg)
	}
	want := []policy.Rule{{UIDs: policy.UIDRange{First: 1000, Last: 1000}, Mode: policy.ModeDeny}}
	if !reflect.DeepEqual(cfg.Policy.Rules, want) {
		t.Fatalf("rules %+v, want %+v", cfg.Policy.Rules, want)
	}
}

func TestBadConfigIsAClearError(t *testing.T) {
	dir := t.TempDir()
	for name, body := range map[string]string{
		"unknown key":   "colour = \"blue\"\n",
		"bad action":    "[policy]\ntimeout_action = \"maybe\"\n",
		"bad range":     "[[policy.users]]\nuids = \"9-1\"\naction = \"allow\"\n",
		"bad duration":  "[policy]\nprompt_timeout = \"soon\"\n",
		"not toml":      "[[[\n",
		"zero timeout":  "[policy]\nprompt_timeout = \"0s\"\n",
		"relative sock": "socket = \"agent.sock\"\n",
		"bad mechanism": "mechanism = \"kprobe\"\n",
		"bad log level": "log_level = \"loud\"\n",
		"bad user mode": "[[policy.users]]\nuids = \"1\"\naction = \"perhaps\"\n",
	} {
		path := filepath.Join(dir, strings.ReplaceAll(name, " ", "_")+".toml")
		os.WriteFile(path, []byte(body), 0o644)
		if _, err := ParseFlags([]string{"--config", path}, io.Discard); err == nil {
			t.Errorf("%s: config accepted", name)
		}
	}
	if _, err := ParseFlags([]string{"--config", filepath.Join(dir, "missing.toml")}, io.Discard); err == nil {
		t.Error("a missing config named with --config was accepted")
	}
}

func TestDNSQueueConfig(t *testing.T) {
	empty := filepath.Join(t.TempDir(), "empty.toml")
	if err := os.WriteFile(empty, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		want uint16 // the DNS queue; 0 none
		ok   bool
	}{
		{[]string{"--queue-num", "88"}, 89, true},
		{[]string{"--queue-num", "88", "--dns-queue-num", "200"}, 200, true},
		{[]string{"--queue-num", "88", "--dns-names=false"}, 0, true},
		{[]string{"--queue-num", "88", "--dns-queue-num", "88"}, 0, false},
		{[]string{"--queue-num", "65535"}, 0, false},
		{[]string{"--queue-num", "65535", "--dns-queue-num", "1"}, 1, true},
	} {
		cfg, err := ParseFlags(append([]string{"--config", empty}, tc.args...), io.Discard)
		if (err == nil) != tc.ok {
			t.Errorf("%v: error %v, want ok=%v", tc.args, err, tc.ok)
			continue
		}
		if got := cfg.dnsQueue(); tc.ok && got != tc.want {
			t.Errorf("%v: DNS queue %d, want %d", tc.args, got, tc.want)
		}
	}
}

func TestDNSTrustedResolverUIDs(t *testing.T) {
	cfg := DefaultConfig()
	if len(cfg.DNSTrustedResolverUIDs) != 0 {
		t.Fatalf("trusted resolver UIDs by default: %v, want none", cfg.DNSTrustedResolverUIDs)
	}
	if err := cfg.applyFile([]byte("dns_trusted_resolver_uids = [990, 104]\n")); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(cfg.DNSTrustedResolverUIDs, []uint32{990, 104}) || cfg.Validate() != nil {
		t.Errorf("dns_trusted_resolver_uids: %v, %v", cfg.DNSTrustedResolverUIDs, cfg.Validate())
	}
	for _, bad := range []string{"dns_trusted_resolver_uids = [4294967295]\n", "dns_trusted_resolver_uids = [-1]\n", "dns_trusted_resolver_uids = \"990\"\n"} {
		cfg := DefaultConfig()
		if err := cfg.applyFile([]byte(bad)); err == nil && cfg.Validate() == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}
