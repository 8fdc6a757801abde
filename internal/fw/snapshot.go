package fw

import (
	"context"
	"fmt"
	"regexp"
	"strings"
)

// Snapshot returns the namespace's ruleset for the configured backend
// (detected when unset), IPv4 then IPv6, normalized so that two snapshots
// compare equal when the rules are the same:
//
//   - comment lines (timestamps, warnings) are removed;
//   - packet and byte counters are removed;
//   - a table with no rules, no user chains and only ACCEPT policies is
//     left out, because it filters nothing and is what merely using the
//     tools leaves behind (iptables-legacy cannot delete a table at all).
func Snapshot(ctx context.Context, cfg Config) (string, error) {
	cfg, r, err := prepare(ctx, cfg)
	if err != nil {
		return "", err
	}
	var b strings.Builder
	for _, f := range families(cfg, "snapshot") {
		out, err := r.save(ctx, f)
		if err != nil {
			return "", err
		}
		fmt.Fprintf(&b, "# %s-%s\n", f.name, cfg.Backend)
		b.WriteString(normalize(out))
	}
	return b.String(), nil
}

var counters = regexp.MustCompile(`\s*\[\d+:\d+\]`)

func normalize(saved string) string {
	var out strings.Builder
	var table []string
	trivial := true
	for line := range strings.Lines(saved) {
		line = strings.TrimSpace(line)
		switch {
		case line == "" || strings.HasPrefix(line, "#"):
			continue
		case strings.HasPrefix(line, "*"):
			table, trivial = []string{line}, true
		case line == "COMMIT":
			if !trivial {
				for _, l := range table {
					out.WriteString(l + "\n")
				}
				out.WriteString("COMMIT\n")
			}
			table = nil
		case strings.HasPrefix(line, ":"):
			line = counters.ReplaceAllString(line, "")
			if f := strings.Fields(line); len(f) < 2 || f[1] != "ACCEPT" {
				trivial = false
			}
			table = append(table, line)
		default:
			// A rule (possibly with a "[pkts:bytes]" prefix from -c).
			table = append(table, strings.TrimSpace(counters.ReplaceAllString(line, "")))
			trivial = false
		}
	}
	return out.String()
}
