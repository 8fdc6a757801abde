package uiserver

import (
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bastion-fw/bastion/internal/flow"
)

func testEnv(vars map[string]string, home string) env {
	return env{
		getenv: func(k string) string { return vars[k] },
		home: func() (string, error) {
			if home == "" {
				return "", errors.New("no home")
			}
			return home, nil
		},
	}
}

func TestDefaultConfigFromEnvironment(t *testing.T) {
	tests := []struct {
		name        string
		vars        map[string]string
		home        string
		wantSocket  string
		wantData    string
		wantCfgPath string
	}{
		{
			name:        "xdg",
			vars:        map[string]string{"XDG_RUNTIME_DIR": "/run/user/1000", "XDG_DATA_HOME": "/d", "XDG_CONFIG_HOME": "/c"},
			home:        "/home/u",
			wantSocket:  "/run/user/1000/bastion/ui.sock",
			wantData:    "/d/bastion",
			wantCfgPath: "/c/bastion/config.toml",
		},
		{
			name:        "home fallbacks",
			vars:        map[string]string{"XDG_RUNTIME_DIR": "/run/user/1000"},
			home:        "/home/u",
			wantSocket:  "/run/user/1000/bastion/ui.sock",
			wantData:    "/home/u/.local/share/bastion",
			wantCfgPath: "/home/u/.config/bastion/config.toml",
		},
		{
			name:        "relative xdg values are ignored",
			vars:        map[string]string{"XDG_RUNTIME_DIR": "rel", "XDG_DATA_HOME": "rel", "XDG_CONFIG_HOME": "rel"},
			home:        "/home/u",
			wantSocket:  "",
			wantData:    "/home/u/.local/share/bastion",
			wantCfgPath: "/home/u/.config/bastion/config.toml",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := testEnv(tt.vars, tt.home)
			cfg := defaultConfig(e)
			if cfg.Socket != tt.wantSocket || cfg.DataDir != tt.wantData {
				t.Errorf("socket %q data %q, want %q %q", cfg.Socket, cfg.DataDir, tt.wantSocket, tt.wantData)
			}
			if got := e.defaultConfigPath(); got != tt.wantCfgPath {
				t.Errorf("config path %q, want %q", got, tt.wantCfgPath)
			}
		})
	}
}

func TestParseFlags(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.toml")
	if err := os.WriteFile(good, []byte("prompt_timeout = \"10s\"\ntimeout_action = \"reject\"\nsilent_action = \"deny\"\nhistory_size = 5\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	unknown := filepath.Join(dir, "unknown.toml")
	if err := os.WriteFile(unknown, []byte("prompt_timeout = \"10s\"\nsilence = 1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	badAction := filepath.Join(dir, "bad.toml")
	if err := os.WriteFile(badAction, []byte("silent_action = \"maybe\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	withRuntime := testEnv(map[string]string{"XDG_RUNTIME_DIR": "/run/user/7", "XDG_CONFIG_HOME": filepath.Join(dir, "none")}, "/home/u")
	noRuntime := testEnv(map[string]string{"XDG_CONFIG_HOME": filepath.Join(dir, "none")}, "/home/u")

	tests := []struct {
		name    string
		args    []string
		env     env
		wantErr string
		check   func(t *testing.T, c Config)
	}{
		{name: "defaults, missing default file", env: withRuntime, check: func(t *testing.T, c Config) {
			want := Config{AgentSocket: DefaultAgentSocket, Socket: "/run/user/7/bastion/ui.sock", DataDir: "/home/u/.local/share/bastion",
				PromptTimeout: 25 * time.Second, TimeoutAction: flow.ActionReject, SilentAction: flow.ActionAllow, HistorySize: 1000, LogLevel: slog.LevelInfo,
				HistoryRetention: 30 * 24 * time.Hour}
			want.ConfigPath = filepath.Join(dir, "none", "bastion", "config.toml") // missing, but where SetConfig saves
			if c != want {
				t.Errorf("got %+v\nwant %+v", c, want)
			}
		}},
		{name: "file", args: []string{"--config", good}, env: withRuntime, check: func(t *testing.T, c Config) {
			if c.PromptTimeout != 10*time.Second || c.TimeoutAction != flow.ActionReject || c.SilentAction != flow.ActionDeny || c.HistorySize != 5 {
				t.Errorf("file not applied: %+v", c)
			}
		}},
		{name: "flags", args: []string{"--socket", "/tmp/x/ui.sock", "--agent-socket", "/a.sock", "--data-dir", "/data", "--log-level", "debug"}, env: noRuntime,
			check: func(t *testing.T, c Config) {
				if c.Socket != "/tmp/x/ui.sock" || c.AgentSocket != "/a.sock" || c.DataDir != "/data" || c.LogLevel != slog.LevelDebug {
					t.Errorf("flags not applied: %+v", c)
				}
			}},
		{name: "no runtime dir and no socket", env: noRuntime, wantErr: "XDG_RUNTIME_DIR"},
		{name: "named file missing", args: []string{"--config", filepath.Join(dir, "missing.toml")}, env: withRuntime, wantErr: "read config"},
		{name: "unknown key", args: []string{"--config", unknown}, env: withRuntime, wantErr: "unknown keys: silence"},
		{name: "bad action", args: []string{"--config", badAction}, env: withRuntime, wantErr: "silent_action"},
		{name: "relative socket", args: []string{"--socket", "ui.sock"}, env: withRuntime, wantErr: "absolute"},
		{name: "extra args", args: []string{"x"}, env: withRuntime, wantErr: "unexpected arguments"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := parseFlags(tt.args, io.Discard, tt.env)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tt.check(t, c)
		})
	}
}

// The documented example must parse to exactly the defaults, so the two
// cannot drift apart.
func TestExampleConfigIsTheDefaults(t *testing.T) {
	data, err := os.ReadFile("../deploy/uiserver-config.toml")
	if err != nil {
		t.Fatal(err)
	}
	e := testEnv(map[string]string{"XDG_RUNTIME_DIR": "/run/user/1"}, "/home/u")
	want := defaultConfig(e)
	got := want
	if err := got.applyFile(data); err != nil {
		t.Fatal(err)
	}
	if got != want {
		t.Errorf("example parses to %+v\nwant the defaults %+v", got, want)
	}
}

func TestValidate(t *testing.T) {
	base := defaultConfig(testEnv(map[string]string{"XDG_RUNTIME_DIR": "/run/user/1"}, "/home/u"))
	if err := base.Validate(); err != nil {
		t.Fatalf("defaults invalid: %v", err)
	}
	tests := []struct {
		name string
		mod  func(*Config)
	}{
		{"short timeout", func(c *Config) { c.PromptTimeout = time.Millisecond }},
		{"no timeout action", func(c *Config) { c.TimeoutAction = flow.ActionNone }},
		{"no silent action", func(c *Config) { c.SilentAction = flow.ActionNone }},
		{"negative history", func(c *Config) { c.HistorySize = -1 }},
		{"huge history", func(c *Config) { c.HistorySize = 1 << 30 }},
		{"relative data dir", func(c *Config) { c.DataDir = "x" }},
		{"no data dir", func(c *Config) { c.DataDir = "" }},
		{"relative agent socket", func(c *Config) { c.AgentSocket = "a.sock" }},
		{"no retention", func(c *Config) { c.HistoryRetention = 0 }},
		{"retention under a day", func(c *Config) { c.HistoryRetention = 23 * time.Hour }},
		{"retention over 366 days", func(c *Config) { c.HistoryRetention = 367 * day }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := base
			tt.mod(&c)
			if err := c.Validate(); err == nil {
				t.Errorf("Validate accepted %+v", c)
			}
		})
	}
}

func TestHistoryRetentionInFile(t *testing.T) {
	for _, tc := range []struct {
		text    string
		want    time.Duration
		wantErr string
	}{
		{`history_retention = "7d"`, 7 * day, ""},
		{`history_retention = "36h"`, 36 * time.Hour, ""},
		{`history_retention = "366d"`, 366 * day, ""},
		{`history_retention = "-3d"`, 0, "not a number of days"},
		{`history_retention = "a week"`, 0, "neither a number of days"},
		{`history_retention = 30`, 0, "history_retention"},
	} {
		c := defaultConfig(testEnv(map[string]string{"XDG_RUNTIME_DIR": "/run/user/1"}, "/home/u"))
		err := c.applyFile([]byte(tc.text + "\n"))
		switch {
		case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
			t.Errorf("%s: %v, want an error with %q", tc.text, err, tc.wantErr)
		case tc.wantErr == "" && (err != nil || c.HistoryRetention != tc.want):
			t.Errorf("%s: %s, %v; want %s", tc.text, c.HistoryRetention, err, tc.want)
		}
	}
	for d, want := range map[time.Duration]string{30 * day: "30d", 36 * time.Hour: "36h0m0s"} {
		if got := formatRetention(d); got != want {
			t.Errorf("formatRetention(%s) = %q, want %q", d, got, want)
		}
		if back, err := parseRetention(formatRetention(d)); err != nil || back != d {
			t.Errorf("parseRetention(formatRetention(%s)) = %s, %v", d, back, err)
		}
	}
}
