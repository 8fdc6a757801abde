package rules

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/bastion-fw/bastion/internal/flow"
)

func TestForPrompt(t *testing.T) {
	p := flow.Process{TGID: 42, UID: 1000, Exe: "/usr/bin/curl", Args: []string{"curl", "-s", "https://www.example.com/a?b"}}
	tcp := flow.Tuple{Proto: flow.TCP, Src: netip.MustParseAddr("10.0.0.2"), Dst: netip.MustParseAddr("::ffff:93.184.216.34"), SrcPort: 40000, DstPort: 443}
	forever := func(s Scope) Choice { return Choice{Action: flow.ActionAllow, Lifetime: Forever, Scope: s} }
	base := Rule{Enabled: true, Action: flow.ActionAllow, Exe: "/usr/bin/curl", Lifetime: Forever, Created: t0}
	with := func(mod func(*Rule)) Rule { r := base; mod(&r); return r }
	tests := []struct {
		name    string
		p       flow.Process
		t       flow.Tuple
		host    string
		c       Choice
		want    Rule
		wantErr string
	}{
		{"destination port by host", p, tcp, "WWW.Example.com.", forever(ScopeDestinationPort),
			with(func(r *Rule) { r.Host, r.PortMin, r.PortMax, r.Proto = "www.example.com", 443, 443, flow.TCP }), ""},
		{"destination port by address", p, tcp, "", forever(ScopeDestinationPort),
			with(func(r *Rule) { r.Dst, r.PortMin, r.PortMax, r.Proto = pfx("93.184.216.34"), 443, 443, flow.TCP }), ""},
		{"invalid host name falls back to the address", p, tcp, "bad name", forever(ScopeHost),
			with(func(r *Rule) { r.Dst = pfx("93.184.216.34") }), ""},
		{"host", p, tcp, "www.example.com", forever(ScopeHost), with(func(r *Rule) { r.Host = "www.example.com" }), ""},
		{"domain", p, tcp, "www.example.com", forever(ScopeDomain), with(func(r *Rule) { r.Host = "*.example.com" }), ""},
		{"domain of a two-label name", p, tcp, "example.com", forever(ScopeDomain), with(func(r *Rule) { r.Host = "*.example.com" }), ""},
		{"domain without host", p, tcp, "", forever(ScopeDomain), Rule{}, "scope domain needs the destination's host name"},
		{"port", p, tcp, "www.example.com", forever(ScopePort), with(func(r *Rule) { r.PortMin, r.PortMax, r.Proto = 443, 443, flow.TCP }), ""},
		{"any", p, tcp, "www.example.com", forever(ScopeAny), base, ""},
		{"cmdline", p, tcp, "", Choice{Action: flow.ActionDeny, Lifetime: Forever, Scope: ScopeAny, WithCmdline: true},
			with(func(r *Rule) { r.Action, r.Cmdline = flow.ActionDeny, `curl -s https://www\.example\.com/a\?b` }), ""},
		{"cmdline unknown", flow.Process{Exe: "/usr/bin/curl"}, tcp, "", Choice{Action: flow.ActionDeny, Lifetime: Forever, Scope: ScopeAny, WithCmdline: true},
			Rule{}, "the command line is unknown"},
		{"duration", p, tcp, "", Choice{Action: flow.ActionAllow, Lifetime: Duration, For: 5 * time.Minute, Scope: ScopeAny},
			with(func(r *Rule) { r.Lifetime, r.Expires = Duration, t0.Add(5*time.Minute) }), ""},
		{"duration without length", p, tcp, "", Choice{Action: flow.ActionAllow, Lifetime: Duration, Scope: ScopeAny}, Rule{}, "needs a positive length"},
		{"length without duration", p, tcp, "", Choice{Action: flow.ActionAllow, Lifetime: Forever, For: time.Minute, Scope: ScopeAny}, Rule{}, "only for lifetime duration"},
		{"glob characters in the path are escaped", flow.Process{Exe: "/tmp/*"}, tcp, "", forever(ScopeAny),
			with(func(r *Rule) { r.Exe = `/tmp/\*` }), ""},
		{"unknown exe", flow.Process{}, tcp, "", forever(ScopeAny), Rule{}, "executable is unknown"},
		{"no action", p, tcp, "", Choice{Lifetime: Forever, Scope: ScopeAny}, Rule{}, "action: unknown action 0"},
		{"no scope", p, tcp, "", Choice{Action: flow.ActionAllow, Lifetime: Forever}, Rule{}, "unknown scope 0"},
		{"icmp port scope", p, flow.Tuple{Proto: flow.ICMP, Dst: netip.MustParseAddr("192.0.2.1")}, "", forever(ScopePort),
			with(func(r *Rule) { r.Proto = flow.ICMP }), ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ForPrompt(tt.p, tt.t, tt.host, tt.c, t0)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ForPrompt error = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Fatalf("ForPrompt =\n %+v, want\n %+v", got, tt.want)
			}
			// The rule a prompt answer makes always covers the prompt.
			c := Conn{UID: tt.p.UID, Exe: tt.p.Exe, Args: tt.p.Args, Tuple: tt.t, Host: tt.host}
			if !Covers(got, c) {
				t.Errorf("rule %+v does not cover its prompt %+v", got, c)
			}
			// ...and not the same connection from another program.
			c.Exe = "/usr/bin/other"
			if Covers(got, c) {
				t.Errorf("rule %+v covers another program", got)
			}
		})
	}
}
