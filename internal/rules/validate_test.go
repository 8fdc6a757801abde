package rules

import (
	"strings"
	"testing"

	"github.com/bastion-fw/bastion/internal/flow"
)

func TestValidate(t *testing.T) {
	base := Rule{Enabled: true, Action: flow.ActionAllow, Lifetime: Forever}
	for _, r := range sampleRules() {
		if err := r.Validate(); err != nil {
			t.Errorf("sample rule %q: %v", r.ID, err)
		}
	}
	tests := []struct {
		name    string
		mod     func(*Rule)
		wantErr string // "" for valid
	}{
		{"minimal", func(*Rule) {}, ""},
		{"no action", func(r *Rule) { r.Action = flow.ActionNone }, "action: unknown action 0"},
		{"bad action", func(r *Rule) { r.Action = 9 }, "action: unknown action 9"},
		{"no lifetime", func(r *Rule) { r.Lifetime = 0 }, "lifetime: unknown lifetime 0"},
		{"duration without expires", func(r *Rule) { r.Lifetime = Duration }, "expires: a duration rule needs an expiry time"},
		{"expires without duration", func(r *Rule) { r.Expires = t0 }, "expires: set, but lifetime is forever"},
		{"duration", func(r *Rule) { r.Lifetime, r.Expires = Duration, t0 }, ""},
		{"relative exe", func(r *Rule) { r.Exe = "bin/curl" }, `exe: "bin/curl" is not an absolute path`},
		{"bad glob", func(r *Rule) { r.Exe = "/usr/bin/[a-" }, `exe: bad glob "/usr/bin/[a-": element "[a-": syntax error in pattern`},
		{"trailing backslash", func(r *Rule) { r.Exe = `/usr/bin/a\` }, "exe: bad glob"},
		{"escaped glob is exact", func(r *Rule) { r.Exe = `/tmp/a\*` }, ""},
		{"glob ok", func(r *Rule) { r.Exe = "/opt/**/bin/*" }, ""},
		{"nul in exe", func(r *Rule) { r.Exe = "/usr/bin/a\x00" }, "exe: contains a NUL byte"},
		{"bad utf8", func(r *Rule) { r.Exe = "/usr/bin/\xff" }, "exe: not valid UTF-8"},
		{"bad regexp", func(r *Rule) { r.Cmdline = "a(b" }, "cmdline: bad regular expression: error parsing regexp: missing closing )"},
		{"sha upper", func(r *Rule) { r.ExeSHA256 = strings.ToUpper(sha) }, "exe_sha256"},
		{"sha short", func(r *Rule) { r.ExeSHA256 = sha[:63] }, "not 64 lower-case hex digits"},
		{"sha ok", func(r *Rule) { r.ExeSHA256 = sha }, ""},
		{"dst host bits", func(r *Rule) { r.Dst = pfx("10.1.2.3/8") }, "dst: 10.1.2.3/8 has bits set beyond the prefix length (did you mean 10.0.0.0/8?)"},
		{"dst 4in6", func(r *Rule) { r.Dst = pfx("::ffff:10.0.0.1") }, "dst: ::ffff:10.0.0.1/128: write IPv4-mapped addresses in IPv4 form"},
		{"ports backwards", func(r *Rule) { r.PortMin, r.PortMax = 9, 8 }, "ports: minimum 9 is above maximum 8"},
		{"ports from 0", func(r *Rule) { r.PortMin, r.PortMax = 0, 8 }, "ports: range 0-8 starts at 0"},
		{"ports ok", func(r *Rule) { r.PortMin, r.PortMax = 1, 65535 }, ""},
		{"icmp port", func(r *Rule) { r.Proto, r.PortMin, r.PortMax = flow.ICMP, 1, 1 }, "ports: set, but icmp has no ports"},
		{"sctp ports", func(r *Rule) { r.Proto, r.PortMin, r.PortMax = flow.SCTP, 2905, 2905 }, ""},
		{"udplite ports", func(r *Rule) { r.Proto, r.PortMin, r.PortMax = flow.UDPLite, 1, 9 }, ""},
		{"gre port", func(r *Rule) { r.Proto, r.PortMin, r.PortMax = flow.GRE, 1, 1 }, "ports: set, but gre has no ports"},
		{"raw protocol 253", func(r *Rule) { r.Proto = 253 }, ""},
		{"host upper", func(r *Rule) { r.Host = "Example.com" }, `host: "Example.com": must be lower case`},
		{"host ip", func(r *Rule) { r.Host = "192.0.2.1" }, "an IP address, not a host name (use dst)"},
		{"host empty label", func(r *Rule) { r.Host = "a..b" }, "empty label"},
		{"host trailing dot", func(r *Rule) { r.Host = "a.b." }, "empty label"},
		{"host mid wildcard", func(r *Rule) { r.Host = "a.*.b" }, "a wildcard must be a whole leading label"},
		{"host bare wildcard", func(r *Rule) { r.Host = "*." }, "empty host name"},
		{"host bad char", func(r *Rule) { r.Host = "a b.com" }, `character ' ' not allowed`},
		{"host long label", func(r *Rule) { r.Host = strings.Repeat("a", 64) + ".com" }, "longer than 63 bytes"},
		{"host wildcard ok", func(r *Rule) { r.Host = "*.example.com" }, ""},
		{"id space", func(r *Rule) { r.ID = "a b" }, "id \"a b\": unprintable or space character at byte 1"},
		{"hits beyond int64", func(r *Rule) { r.Hits = 1 << 63 }, "hits: 9223372036854775808 is above 9223372036854775807"},
		{"long note", func(r *Rule) { r.Note = strings.Repeat("x", maxNoteLen+1) }, "note: longer than 4096 bytes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := base
			tt.mod(&r)
			err := r.Validate()
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("Validate() = %v, want nil", err)
			case tt.wantErr != "" && err == nil:
				t.Fatalf("Validate() = nil, want error containing %q", tt.wantErr)
			case tt.wantErr != "" && !strings.Contains(err.Error(), tt.wantErr):
				t.Fatalf("Validate() = %q, want it to contain %q", err, tt.wantErr)
			}
		})
	}
	if _, err := parseDst("fe80::1%eth0"); err == nil || !strings.Contains(err.Error(), "zones are not supported") {
		t.Errorf("parseDst with a zone: %v, want zones error", err)
	}
}
