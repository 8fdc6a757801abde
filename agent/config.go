package agent

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/bastion-fw/bastion/internal/flow"
	"github.com/bastion-fw/bastion/internal/fw"
	"github.com/bastion-fw/bastion/internal/policy"
	"github.com/bastion-fw/bastion/internal/procid"
)

// Defaults.
const (
	DefaultConfigPath = "/etc/bastion/agent.toml"
	DefaultSocket     = "/run/bastion/agent.sock"
	DefaultQueueNum   = 4200
	// DefaultTrafficInterval is how often live connections' byte counts
	// are read.
	DefaultTrafficInterval = 5 * time.Second
)

// The bounds of traffic_interval (0 aside, which turns accounting off): a
// read of the conntrack table costs CPU in proportion to its entries.
const (
	minTrafficInterval = 100 * time.Millisecond
	maxTrafficInterval = time.Hour
)

// Config is bastion-agent's configuration.
type Config struct {
	// Socket is the path of the API's Unix socket.
	Socket string
	// NetNS confines the agent to a named network namespace (or a path to
	// one); "" is the agent's own.
	NetNS string
	// Mechanism picks how processes are identified.
	Mechanism procid.Mechanism
	// CgroupPath is where the sockops/sock_addr programs and the kernel
	// decision programs attach; "" is the cgroup2 root.
	CgroupPath string
	// KernelDecisions remembers decisions in the kernel, which applies
	// them with no queue round trip (internal/kdecide; agent/kernel.go).
	KernelDecisions bool
	// QueueNum is the NFQUEUE number.
	QueueNum uint16
	// FailOpen lets traffic pass while the agent is not running
	// (--queue-bypass) and releases held packets with allow at shutdown.
	// Off, traffic that would be queued is dropped while the agent is away.
	// It never lets a packet pass while the agent runs: the connection
	// queue drops what does not fit (see share.go).
	FailOpen bool
	// InterceptLoopback asks about connections to loopback addresses too.
	InterceptLoopback bool
	// DNSNames learns destination host names from UDP DNS answers, read
	// from a second queue (always fail-open), so that host rules match and
	// prompts show names.
	DNSNames bool
	// DNSQueueNum is the NFQUEUE of DNS answers; 0 means QueueNum+1.
	DNSQueueNum uint16
	// DNSTrustedResolverUIDs are the UIDs of system resolvers (nscd, a
	// caching stub) whose answers name addresses for every user, after
	// each user's own. Empty by default: a name then holds only for the
	// UID whose query it answered. See docs/security.md, "Host names".
	DNSTrustedResolverUIDs []uint32
	// TrafficInterval is how often the conntrack table is read for the
	// byte counts of live allowed connections (traffic.go); 0 turns
	// traffic accounting off.
	TrafficInterval time.Duration
	// Backend is the iptables flavour; "" detects it.
	Backend fw.Backend
	// Policy is the system policy.
	Policy policy.Policy
	// LogLevel is the minimum level logged.
	LogLevel slog.Level
}

// DefaultConfig returns the configuration with no file and no flags.
func DefaultConfig() Config {
	return Config{
		Socket:    DefaultSocket,
		Mechanism: procid.MechAuto,
		QueueNum:  DefaultQueueNum,
		FailOpen:  true,
		DNSNames:  true,
		Policy:    policy.Default(),
		LogLevel:  slog.LevelInfo,
		// Set apart so that gofmt keeps the alignment above.
		KernelDecisions: true,
		TrafficInterval: DefaultTrafficInterval,
	}
}

// Validate checks that the configuration can run.
func (c Config) Validate() error {
	if !filepath.IsAbs(c.Socket) {
		return fmt.Errorf("socket path %q must be absolute", c.Socket)
	}
	if _, err := procid.ParseMechanism(string(c.Mechanism)); err != nil {
		return err
	}
	if c.QueueNum == 0 {
		return errors.New("queue number must not be 0")
	}
	if c.DNSNames {
		switch q := c.dnsQueue(); {
		case q == 0:
			return fmt.Errorf("queue number %d leaves no DNS queue number after it; set dns_queue_num", c.QueueNum)
		case q == c.QueueNum:
			return fmt.Errorf("DNS queue number %d is the connection queue's", q)
		}
	}
	for _, uid := range c.DNSTrustedResolverUIDs {
		if uid == ^uint32(0) {
			return errors.New("dns_trusted_resolver_uids: 4294967295 is not a UID")
		}
	}
	if i := c.TrafficInterval; i != 0 && (i < minTrafficInterval || i > maxTrafficInterval) {
		return fmt.Errorf("traffic_interval %v out of range %v-%v (0 turns traffic accounting off)", i, minTrafficInterval, maxTrafficInterval)
	}
	if err := (fw.Config{Backend: c.Backend}).Validate(); err != nil {
		return err
	}
	if err := c.Policy.Validate(); err != nil {
		return fmt.Errorf("policy: %w", err)
	}
	return nil
}

// dnsQueue is the DNS answers' queue number; 0 when there is none.
func (c Config) dnsQueue() uint16 {
	switch {
	case !c.DNSNames:
		return 0
	case c.DNSQueueNum != 0:
		return c.DNSQueueNum
	}
	return c.QueueNum + 1 // 65535 wraps to 0: none
}

// fileConfig is the TOML layout of agent.toml; see deploy/agent.toml.
type fileConfig struct {
	Socket            *string  `toml:"socket"`
	NetNS             *string  `toml:"netns"`
	Mechanism         *string  `toml:"mechanism"`
	Cgroup            *string  `toml:"cgroup"`
	QueueNum          *uint16  `toml:"queue_num"`
	FailOpen          *bool    `toml:"fail_open"`
	KernelDecisions   *bool    `toml:"kernel_decisions"`
	InterceptLoopback *bool    `toml:"intercept_loopback"`
	DNSNames          *bool    `toml:"dns_names"`
	DNSQueueNum       *uint16  `toml:"dns_queue_num"`
	DNSTrustedUIDs    []uint32 `toml:"dns_trusted_resolver_uids"`
	FirewallBackend   *string  `toml:"firewall_backend"`
	TrafficInterval   *string  `toml:"traffic_interval"`
	LogLevel          *string  `toml:"log_level"`
	Policy            *struct {
		PromptTimeout *string `toml:"prompt_timeout"`
		TimeoutAction *string `toml:"timeout_action"`
		DefaultAction *string `toml:"default_action"`
		Users         []struct {
			UIDs   string `toml:"uids"`
			Action string `toml:"action"`
			Log    bool   `toml:"log"`
		} `toml:"users"`
	} `toml:"policy"`
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
	set := func(dst *string, src *string) {
		if src != nil {
			*dst = *src
		}
	}
	set(&c.Socket, f.Socket)
	set(&c.NetNS, f.NetNS)
	set(&c.CgroupPath, f.Cgroup)
	if f.Mechanism != nil {
		if c.Mechanism, err = procid.ParseMechanism(*f.Mechanism); err != nil {
			return err
		}
	}
	if f.QueueNum != nil {
		c.QueueNum = *f.QueueNum
	}
	if f.FailOpen != nil {
		c.FailOpen = *f.FailOpen
	}
	if f.KernelDecisions != nil {
		c.KernelDecisions = *f.KernelDecisions
	}
	if f.InterceptLoopback != nil {
		c.InterceptLoopback = *f.InterceptLoopback
	}
	if f.DNSNames != nil {
		c.DNSNames = *f.DNSNames
	}
	if f.DNSQueueNum != nil {
		c.DNSQueueNum = *f.DNSQueueNum
	}
	if f.DNSTrustedUIDs != nil {
		c.DNSTrustedResolverUIDs = f.DNSTrustedUIDs
	}
	if f.FirewallBackend != nil && *f.FirewallBackend != "auto" {
		c.Backend = fw.Backend(*f.FirewallBackend)
	}
	if f.TrafficInterval != nil {
		if c.TrafficInterval, err = time.ParseDuration(*f.TrafficInterval); err != nil {
			return fmt.Errorf("traffic_interval: %w", err)
		}
	}
	if f.LogLevel != nil {
		if err := c.LogLevel.UnmarshalText([]byte(*f.LogLevel)); err != nil {
			return fmt.Errorf("log_level: %w", err)
		}
	}
	if p := f.Policy; p != nil {
		if p.PromptTimeout != nil {
			if c.Policy.PromptTimeout, err = time.ParseDuration(*p.PromptTimeout); err != nil {
				return fmt.Errorf("policy.prompt_timeout: %w", err)
			}
		}
		if p.TimeoutAction != nil {
			if c.Policy.TimeoutAction, err = flow.ParseAction(*p.TimeoutAction); err != nil {
				return fmt.Errorf("policy.timeout_action: %w", err)
			}
		}
		if p.DefaultAction != nil {
			if c.Policy.Default, err = policy.ParseMode(*p.DefaultAction); err != nil {
				return fmt.Errorf("policy.default_action: %w", err)
			}
		}
		if p.Users != nil {
			c.Policy.Rules = nil
			for i, u := range p.Users {
				r, err := policy.ParseUIDRange(u.UIDs)
				if err != nil {
					return fmt.Errorf("policy.users[%d]: %w", i, err)
				}
				m, err := policy.ParseMode(u.Action)
				if err != nil {
					return fmt.Errorf("policy.users[%d]: %w", i, err)
				}
				c.Policy.Rules = append(c.Policy.Rules, policy.Rule{UIDs: r, Mode: m, Log: u.Log})
			}
		}
	}
	return nil
}

// ParseFlags builds the configuration from the command line: defaults, then
// the config file (--config, default /etc/bastion/agent.toml if it exists),
// then the flags that were given.
func ParseFlags(args []string, stderr io.Writer) (Config, error) {
	cfg := DefaultConfig()
	fsys := flag.NewFlagSet("bastion-agent", flag.ContinueOnError)
	fsys.SetOutput(stderr)
	configPath := fsys.String("config", DefaultConfigPath, "configuration file (TOML)")
	socket := fsys.String("socket", cfg.Socket, "path of the API's Unix socket")
	ns := fsys.String("netns", "", "confine the agent to this named network namespace (or path)")
	mech := fsys.String("mechanism", string(cfg.Mechanism), "process identification: auto, netfilter-link, sockops or procfs")
	cgroup := fsys.String("cgroup", "", "cgroup v2 directory for the sockops mechanism and kernel decisions (default: the cgroup2 root)")
	kernelDecisions := fsys.Bool("kernel-decisions", cfg.KernelDecisions, "apply remembered decisions in the kernel, with no queue round trip")
	queue := fsys.Uint("queue-num", uint(cfg.QueueNum), "NFQUEUE number")
	failOpen := fsys.Bool("fail-open", cfg.FailOpen, "let traffic pass while the agent is not running")
	loopback := fsys.Bool("intercept-loopback", false, "also ask about connections to loopback addresses")
	dnsNames := fsys.Bool("dns-names", cfg.DNSNames, "learn destination host names from UDP DNS answers")
	dnsQueue := fsys.Uint("dns-queue-num", 0, "NFQUEUE number for DNS answers (default: queue-num + 1)")
	backend := fsys.String("firewall-backend", "auto", "iptables flavour: auto, nft or legacy")
	timeout := fsys.Duration("prompt-timeout", cfg.Policy.PromptTimeout, "how long a connection waits for an answer")
	timeoutAction := fsys.String("timeout-action", cfg.Policy.TimeoutAction.String(), "verdict when nobody answers in time: allow, deny or reject")
	trafficInterval := fsys.Duration("traffic-interval", cfg.TrafficInterval, "how often live connections' byte counts are read from conntrack (0: no traffic accounting)")
	logLevel := fsys.String("log-level", "info", "debug, info, warn or error")
	if err := fsys.Parse(args); err != nil {
		return Config{}, err
	}
	if fsys.NArg() > 0 {
		return Config{}, fmt.Errorf("unexpected arguments: %q", fsys.Args())
	}
	given := map[string]bool{}
	fsys.Visit(func(f *flag.Flag) { given[f.Name] = true })

	data, err := os.ReadFile(*configPath)
	switch {
	case err == nil:
		if err := cfg.applyFile(data); err != nil {
			return Config{}, fmt.Errorf("config %s: %w", *configPath, err)
		}
	case errors.Is(err, fs.ErrNotExist) && !given["config"]:
		// No system config: the defaults apply.
	default:
		return Config{}, fmt.Errorf("read config: %w", err)
	}

	if given["socket"] {
		cfg.Socket = *socket
	}
	if given["netns"] {
		cfg.NetNS = *ns
	}
	if given["mechanism"] {
		if cfg.Mechanism, err = procid.ParseMechanism(*mech); err != nil {
			return Config{}, err
		}
	}
	if given["cgroup"] {
		cfg.CgroupPath = *cgroup
	}
	if given["queue-num"] {
		if *queue == 0 || *queue > 65535 {
			return Config{}, fmt.Errorf("queue number %d out of range 1-65535", *queue)
		}
		cfg.QueueNum = uint16(*queue)
	}
	if given["fail-open"] {
		cfg.FailOpen = *failOpen
	}
	if given["kernel-decisions"] {
		cfg.KernelDecisions = *kernelDecisions
	}
	if given["intercept-loopback"] {
		cfg.InterceptLoopback = *loopback
	}
	if given["dns-names"] {
		cfg.DNSNames = *dnsNames
	}
	if given["dns-queue-num"] {
		if *dnsQueue > 65535 {
			return Config{}, fmt.Errorf("DNS queue number %d out of range 0-65535", *dnsQueue)
		}
		cfg.DNSQueueNum = uint16(*dnsQueue)
	}
	if given["firewall-backend"] && *backend != "auto" {
		cfg.Backend = fw.Backend(*backend)
	}
	if given["prompt-timeout"] {
		cfg.Policy.PromptTimeout = *timeout
	}
	if given["timeout-action"] {
		if cfg.Policy.TimeoutAction, err = flow.ParseAction(*timeoutAction); err != nil {
			return Config{}, err
		}
	}
	if given["traffic-interval"] {
		cfg.TrafficInterval = *trafficInterval
	}
	if given["log-level"] {
		if err := cfg.LogLevel.UnmarshalText([]byte(*logLevel)); err != nil {
			return Config{}, fmt.Errorf("log level: %w", err)
		}
	}
	return cfg, cfg.Validate()
}
