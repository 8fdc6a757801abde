package uiserver

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/bastion-fw/bastion/internal/flow"
)

// Defaults.
const (
	DefaultAgentSocket   = "/run/bastion/agent.sock"
	DefaultPromptTimeout = 25 * time.Second
	DefaultHistorySize   = 1000
	// DefaultHistoryRetention is how long decisions, hourly traffic and
	// destinations are kept; MinHistoryRetention and MaxHistoryRetention
	// bound it.
	DefaultHistoryRetention = 30 * day
	MinHistoryRetention     = day
	MaxHistoryRetention     = 366 * day
	day                     = 24 * time.Hour
	// DBFile is the name of the rules database inside the data directory.
	DBFile = "rules.db"
	// maxHistorySize bounds history_size; the store keeps no more anyway.
	maxHistorySize = 10000
)

// Config is bastion-uiserver's configuration.
type Config struct {
	// AgentSocket is the agent's API socket.
	AgentSocket string
	// Socket is where the UI API listens.
	Socket string
	// DataDir holds the rules database (DataDir/rules.db).
	DataDir string
	// PromptTimeout is how long a prompt waits for an answer. The effective
	// deadline is also at least one second before the agent's own.
	PromptTimeout time.Duration
	// TimeoutAction applies to a prompt nobody answered in time.
	TimeoutAction flow.Action
	// SilentAction applies at once while no prompt client is connected;
	// such connections are listed for deciding later.
	SilentAction flow.Action
	// HistorySize is how many recent decisions WatchHistory sends first.
	HistorySize int
	// HistoryRetention is how long decisions, hourly traffic and
	// destinations are kept (per-minute traffic: a day).
	HistoryRetention time.Duration
	// LogLevel is the minimum level logged.
	LogLevel slog.Level
	// ConfigPath is the file the settings were read from, and where
	// SetConfig saves them; empty when there is none.
	ConfigPath string
}

// env is what the defaults are derived from: the environment and the home
// directory. Tests pass their own.
type env struct {
	getenv func(string) string
	home   func() (string, error)
}

func osEnv() env { return env{getenv: os.Getenv, home: os.UserHomeDir} }

// xdgDir returns $name, or home/fallback when it is unset or not absolute
// (the XDG base directory spec says relative values are to be ignored).
func (e env) xdgDir(name, fallback string) string {
	if d := e.getenv(name); filepath.IsAbs(d) {
		return d
	}
	h, err := e.home()
	if err != nil || !filepath.IsAbs(h) {
		return ""
	}
	return filepath.Join(h, fallback)
}

// DefaultConfig returns the configuration with no file and no flags, derived
// from the XDG environment variables. Socket is empty when XDG_RUNTIME_DIR is
// unset; Validate then asks for --socket.
func DefaultConfig() Config { return defaultConfig(osEnv()) }

func defaultConfig(e env) Config {
	cfg := Config{
		AgentSocket:   DefaultAgentSocket,
		PromptTimeout: DefaultPromptTimeout,
		TimeoutAction: flow.ActionReject,
		SilentAction:  flow.ActionAllow,
		HistorySize:   DefaultHistorySize,
		LogLevel:      slog.LevelInfo,

		HistoryRetention: DefaultHistoryRetention,
	}
	if rd := e.getenv("XDG_RUNTIME_DIR"); filepath.IsAbs(rd) {
		cfg.Socket = filepath.Join(rd, "bastion", "ui.sock")
	}
	if d := e.xdgDir("XDG_DATA_HOME", ".local/share"); d != "" {
		cfg.DataDir = filepath.Join(d, "bastion")
	}
	return cfg
}

// defaultConfigPath is $XDG_CONFIG_HOME/bastion/config.toml or
// ~/.config/bastion/config.toml.
func (e env) defaultConfigPath() string {
	d := e.xdgDir("XDG_CONFIG_HOME", ".config")
	if d == "" {
		return ""
	}
	return filepath.Join(d, "bastion", "config.toml")
}

// Validate checks that the configuration can run.
func (c Config) Validate() error {
	if c.Socket == "" {
		return errors.New("no socket path: XDG_RUNTIME_DIR is not set; pass --socket")
	}
	if !filepath.IsAbs(c.Socket) {
		return fmt.Errorf("socket path %q must be absolute", c.Socket)
	}
	if !filepath.IsAbs(c.AgentSocket) {
		return fmt.Errorf("agent socket path %q must be absolute", c.AgentSocket)
	}
	if c.DataDir == "" {
		return errors.New("no data directory: neither XDG_DATA_HOME nor HOME is set; pass --data-dir")
	}
	if !filepath.IsAbs(c.DataDir) {
		return fmt.Errorf("data directory %q must be absolute", c.DataDir)
	}
	if c.PromptTimeout < time.Second || c.PromptTimeout > 24*time.Hour {
		return fmt.Errorf("prompt_timeout %s out of range 1s-24h", c.PromptTimeout)
	}
	if c.TimeoutAction == flow.ActionNone || c.TimeoutAction > flow.ActionReject {
		return errors.New("timeout_action must be allow, deny or reject")
	}
	if c.SilentAction == flow.ActionNone || c.SilentAction > flow.ActionReject {
		return errors.New("silent_action must be allow, deny or reject")
	}
	if c.HistorySize < 0 || c.HistorySize > maxHistorySize {
		return fmt.Errorf("history_size %d out of range 0-%d", c.HistorySize, maxHistorySize)
	}
	if c.HistoryRetention < MinHistoryRetention || c.HistoryRetention > MaxHistoryRetention {
		return fmt.Errorf("history_retention %s out of range 1-366 days", formatRetention(c.HistoryRetention))
	}
	return nil
}

// fileConfig is the TOML layout of config.toml; see deploy/uiserver-config.toml.
type fileConfig struct {
	PromptTimeout *string `toml:"prompt_timeout"`
	TimeoutAction *string `toml:"timeout_action"`
	SilentAction  *string `toml:"silent_action"`
	HistorySize   *int    `toml:"history_size"`
	// HistoryRetention is a number of days ("30d") or a Go duration.
	HistoryRetention *string `toml:"history_retention"`
	LogLevel         *string `toml:"log_level"`
}

// applyFile overlays the TOML document data onto c.
func (c *Config) applyFile(data []byte) error {
	var f fileConfig
	md, err := toml.Decode(string(data), &f)
	if err != nil {
		return err
	}
	if un := md.Undecoded(); len(un) > 0 {
		keys := make([]string, len(un))
		for i, k := range un {
			keys[i] = k.String()
		}
		return fmt.Errorf("unknown keys: %s", strings.Join(keys, ", "))
	}
	if f.PromptTimeout != nil {
		if c.PromptTimeout, err = time.ParseDuration(*f.PromptTimeout); err != nil {
			return fmt.Errorf("prompt_timeout: %w", err)
		}
	}
	if f.TimeoutAction != nil {
		if c.TimeoutAction, err = flow.ParseAction(*f.TimeoutAction); err != nil {
			return fmt.Errorf("timeout_action: %w", err)
		}
	}
	if f.SilentAction != nil {
		if c.SilentAction, err = flow.ParseAction(*f.SilentAction); err != nil {
			return fmt.Errorf("silent_action: %w", err)
		}
	}
	if f.HistorySize != nil {
		c.HistorySize = *f.HistorySize
	}
	if f.HistoryRetention != nil {
		if c.HistoryRetention, err = parseRetention(*f.HistoryRetention); err != nil {
			return fmt.Errorf("history_retention: %w", err)
		}
	}
	if f.LogLevel != nil {
		if err := c.LogLevel.UnmarshalText([]byte(*f.LogLevel)); err != nil {
			return fmt.Errorf("log_level: %w", err)
		}
	}
	return nil
}

// ParseFlags builds the configuration from the command line: defaults, then
// the config file (--config, default $XDG_CONFIG_HOME/bastion/config.toml if
// it exists), then the flags that were given.
func ParseFlags(args []string, stderr io.Writer) (Config, error) {
	return parseFlags(args, stderr, osEnv())
}

func parseFlags(args []string, stderr io.Writer, e env) (Config, error) {
	cfg := defaultConfig(e)
	fsys := flag.NewFlagSet("bastion-uiserver", flag.ContinueOnError)
	fsys.SetOutput(stderr)
	configPath := fsys.String("config", e.defaultConfigPath(), "configuration file (TOML)")
	agentSocket := fsys.String("agent-socket", cfg.AgentSocket, "the agent's API socket")
	socket := fsys.String("socket", cfg.Socket, "path of this service's Unix socket (default $XDG_RUNTIME_DIR/bastion/ui.sock)")
	dataDir := fsys.String("data-dir", cfg.DataDir, "directory of the rules database")
	logLevel := fsys.String("log-level", "info", "debug, info, warn or error")
	if err := fsys.Parse(args); err != nil {
		return Config{}, err
	}
	if fsys.NArg() > 0 {
		return Config{}, fmt.Errorf("unexpected arguments: %q", fsys.Args())
	}
	given := map[string]bool{}
	fsys.Visit(func(f *flag.Flag) { given[f.Name] = true })

	cfg.ConfigPath = *configPath
	if *configPath != "" {
		data, err := os.ReadFile(*configPath)
		switch {
		case err == nil:
			if err := cfg.applyFile(data); err != nil {
				return Config{}, fmt.Errorf("config %s: %w", *configPath, err)
			}
		case errors.Is(err, fs.ErrNotExist) && !given["config"]:
			// No config file: the defaults apply.
		default:
			return Config{}, fmt.Errorf("read config: %w", err)
		}
	}
	if given["agent-socket"] {
		cfg.AgentSocket = *agentSocket
	}
	if given["socket"] {
		cfg.Socket = *socket
	}
	if given["data-dir"] {
		cfg.DataDir = *dataDir
	}
	if given["log-level"] {
		if err := cfg.LogLevel.UnmarshalText([]byte(*logLevel)); err != nil {
			return Config{}, fmt.Errorf("log level: %w", err)
		}
	}
	return cfg, cfg.Validate()
}

// parseRetention reads a retention: a whole number of days ("30d") or a Go
// duration ("36h").
func parseRetention(s string) (time.Duration, error) {
	if n, ok := strings.CutSuffix(s, "d"); ok {
		days, err := strconv.ParseUint(n, 10, 16)
		if err != nil {
			return 0, fmt.Errorf("%q is not a number of days (say \"30d\")", s)
		}
		return time.Duration(days) * day, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("%q is neither a number of days (say \"30d\") nor a duration (say \"36h\")", s)
	}
	return d, nil
}

// formatRetention writes a retention as parseRetention reads it: in days
// when it is whole days.
func formatRetention(d time.Duration) string {
	if d > 0 && d%day == 0 {
		return strconv.FormatInt(int64(d/day), 10) + "d"
	}
	return d.String()
}
