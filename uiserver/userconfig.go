package uiserver

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/bastion-fw/bastion/internal/flow"
	"github.com/bastion-fw/bastion/internal/rules"
	rulesv1 "github.com/bastion-fw/bastion/proto/bastion/rules/v1"
	uiv1 "github.com/bastion-fw/bastion/proto/bastion/ui/v1"
)

// The settings a client may change while the service runs (GetConfig,
// SetConfig): they are read where they apply, through config(), so a
// change reaches the next prompt, deadline and history viewer at once.

// config returns the configuration in effect.
func (s *Service) config() Config {
	s.cfgMu.Lock()
	defer s.cfgMu.Unlock()
	return s.cfg
}

func userConfigProto(c Config) *uiv1.UserConfig {
	return &uiv1.UserConfig{
		SilentAction:  rules.ActionProto(c.SilentAction),
		PromptTimeout: durationpb.New(c.PromptTimeout),
		TimeoutAction: rules.ActionProto(c.TimeoutAction),
		HistorySize:   uint32(min(c.HistorySize, maxHistorySize)),

		HistoryRetention: durationpb.New(c.HistoryRetention),
	}
}

// userConfigFrom checks a client's settings and returns c with them. Its
// errors are sentences for the person who chose the values.
func userConfigFrom(c Config, u *uiv1.UserConfig) (Config, error) {
	if u == nil {
		return Config{}, invalidf("no settings given")
	}
	action := func(what string, a rulesv1.Action) (flow.Action, error) {
		switch a {
		case rulesv1.Action_ACTION_ALLOW:
			return flow.ActionAllow, nil
		case rulesv1.Action_ACTION_DENY:
			return flow.ActionDeny, nil
		case rulesv1.Action_ACTION_REJECT:
			return flow.ActionReject, nil
		}
		return 0, invalidf("%s must be allow, deny (drop silently) or reject", what)
	}
	var err error
	if c.SilentAction, err = action("the action while no prompt client runs", u.GetSilentAction()); err != nil {
		return Config{}, err
	}
	if c.TimeoutAction, err = action("the action for an unanswered prompt", u.GetTimeoutAction()); err != nil {
		return Config{}, err
	}
	d := u.GetPromptTimeout()
	if d == nil || d.CheckValid() != nil {
		return Config{}, invalidf("the prompt timeout is missing")
	}
	c.PromptTimeout = d.AsDuration()
	if c.PromptTimeout < time.Second || c.PromptTimeout > 24*time.Hour {
		return Config{}, invalidf("the prompt timeout %s is out of range: choose from 1 second to 24 hours", c.PromptTimeout)
	}
	if u.GetHistorySize() > maxHistorySize {
		return Config{}, invalidf("the history size %d is too large: choose at most %d", u.GetHistorySize(), maxHistorySize)
	}
	c.HistorySize = int(u.GetHistorySize())
	// A client that does not know the setting leaves it as it is.
	if r := u.GetHistoryRetention(); r != nil {
		if r.CheckValid() != nil {
			return Config{}, invalidf("the history retention is not a valid duration")
		}
		c.HistoryRetention = r.AsDuration()
		if c.HistoryRetention < MinHistoryRetention || c.HistoryRetention > MaxHistoryRetention {
			return Config{}, invalidf("the history retention %s is out of range: choose from 1 to 366 days", formatRetention(c.HistoryRetention))
		}
	}
	if err := c.Validate(); err != nil {
		return Config{}, fmt.Errorf("%w: %w", errInvalid, err)
	}
	return c, nil
}

// setUserConfig checks u, saves it to the config file and applies it.
func (s *Service) setUserConfig(u *uiv1.UserConfig) (Config, error) {
	s.cfgMu.Lock()
	defer s.cfgMu.Unlock()
	next, err := userConfigFrom(s.cfg, u)
	if err != nil {
		return Config{}, err
	}
	if err := saveUserConfig(s.cfg.ConfigPath, next); err != nil {
		return Config{}, err
	}
	s.cfg = next
	s.log.Info("settings changed", "config", next.ConfigPath, "silent_action", next.SilentAction.String(),
		"prompt_timeout", next.PromptTimeout.String(), "timeout_action", next.TimeoutAction.String(), "history_size", next.HistorySize,
		"history_retention", formatRetention(next.HistoryRetention))
	return next, nil
}

// userConfigKeys are the keys setUserConfig writes, with their values.
func userConfigKeys(c Config) [][2]string {
	return [][2]string{
		{"prompt_timeout", strconv.Quote(c.PromptTimeout.String())},
		{"timeout_action", strconv.Quote(c.TimeoutAction.String())},
		{"silent_action", strconv.Quote(c.SilentAction.String())},
		{"history_size", strconv.Itoa(c.HistorySize)},
		{"history_retention", strconv.Quote(formatRetention(c.HistoryRetention))},
	}
}

// saveUserConfig writes c's settings into the TOML file at path: each key's
// line is replaced where the file sets it, or appended, so the person's
// other keys and comments stay. The file is replaced atomically, and read
// back before it is: a file the service could not start with again is
// never written.
func saveUserConfig(path string, c Config) error {
	old, err := os.ReadFile(path)
	mode := fs.FileMode(0o644)
	switch {
	case err == nil:
		if fi, err := os.Stat(path); err == nil {
			mode = fi.Mode().Perm()
		}
	case errors.Is(err, fs.ErrNotExist):
		old = []byte("# Settings of bastion-uiserver, the per-user rules service (bastion-uiserver -h).\n")
	default:
		return fmt.Errorf("read config: %w", err)
	}
	var check Config
	if err := check.applyFile(old); err != nil {
		return fmt.Errorf("config %s has an error (fix or remove it, then try again): %w", path, err)
	}
	lines := strings.SplitAfter(string(old), "\n")
	if lines[len(lines)-1] == "" {
		lines = lines[:len(lines)-1]
	}
	for _, kv := range userConfigKeys(c) {
		line := kv[0] + " = " + kv[1] + "\n"
		set := regexp.MustCompile(`^\s*` + kv[0] + `\s*=`)
		found := false
		for i, l := range lines {
			if set.MatchString(l) {
				lines[i], found = line, true
			}
		}
		if !found {
			if n := len(lines); n > 0 && !strings.HasSuffix(lines[n-1], "\n") {
				lines[n-1] += "\n"
			}
			lines = append(lines, line)
		}
	}
	data := []byte(strings.Join(lines, ""))
	check = Config{}
	if err := check.applyFile(data); err != nil || check.PromptTimeout != c.PromptTimeout || check.TimeoutAction != c.TimeoutAction ||
		check.SilentAction != c.SilentAction || check.HistorySize != c.HistorySize || check.HistoryRetention != c.HistoryRetention {
		return fmt.Errorf("config %s: could not update it in place (err %v); fix or remove it, then try again", path, err)
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create config directory: %w", err)
	}
	tmp, err := os.CreateTemp(dir, ".config-*.toml")
	if err != nil {
		return fmt.Errorf("save config: %w", err)
	}
	defer os.Remove(tmp.Name()) // after a successful rename, there is nothing to remove
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("save config: %w", err)
	}
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return fmt.Errorf("save config: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("save config: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("save config: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("save config: %w", err)
	}
	return nil
}

func (a *apiServer) GetConfig(context.Context, *uiv1.GetConfigRequest) (*uiv1.GetConfigResponse, error) {
	c := a.svc.config()
	return &uiv1.GetConfigResponse{Config: userConfigProto(c), Path: c.ConfigPath}, nil
}

func (a *apiServer) SetConfig(ctx context.Context, req *uiv1.SetConfigRequest) (*uiv1.SetConfigResponse, error) {
	if a.svc.config().ConfigPath == "" {
		return nil, status.Error(codes.FailedPrecondition,
			"the rules service runs without a config file (no --config and no home directory): there is nowhere to save the settings")
	}
	c, err := a.svc.setUserConfig(req.GetConfig())
	if err != nil {
		return nil, toStatus(err)
	}
	// A shorter retention applies at once. The settings are saved
	// already: a failed prune is retried within prunePeriod.
	if err := a.svc.prune(ctx); err != nil {
		a.svc.log.Warn("prune history", "err", err)
	}
	return &uiv1.SetConfigResponse{Config: userConfigProto(c), Path: c.ConfigPath}, nil
}
