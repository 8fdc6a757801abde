// Command genman writes the manual pages of every Bastion binary and
// bastionctl's shell completions into a share directory, from the built
// binaries themselves: each program's -h (its flag set) and `bastionctl
// man` / `bastionctl completion`. deploy/deb.sh runs it when it builds the
// package:
//
//	go run ./internal/manpage/genman -bin bin -out "$DEB_STAGE/usr/share"
package main

import (
	"bytes"
	"compress/gzip"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"

	"github.com/bastion-fw/bastion/internal/manpage"
)

// programs are the binaries documented from their -h.
var programs = []struct {
	name, summary, description string
	optional                   bool // bastion-gtk is built only with GTK
}{
	{"bastion-agent", "Bastion's privileged agent",
		"bastion-agent holds the first packet of each new outbound connection, names the program that sent it " +
			"(eBPF, or /proc as a fallback) and asks that program's user, through the user's rules service, whether " +
			"to allow it. It runs as root, usually as the bastion-agent systemd service; options override its " +
			"configuration file.", false},
	{"bastion-uiserver", "Bastion's per-user rules service",
		"bastion-uiserver keeps one user's rules in the agent, brokers the user's prompts to prompt clients " +
			"(bastion-gtk, bastionctl prompt) and records the user's history. It runs as the user, usually as the " +
			"bastion-uiserver systemd user service.", false},
	{"bastion-gtk", "Bastion's desktop client",
		"bastion-gtk shows a prompt for each new connection of the user's programs and a window with the " +
			"user's rules, history and decide-later list. It talks to the user's rules service.", true},
}

func main() {
	bin := flag.String("bin", "bin", "directory of the built binaries")
	out := flag.String("out", "", "share directory to write into (man/, bash-completion/, zsh/, fish/)")
	flag.Parse()
	if *out == "" {
		fmt.Fprintln(os.Stderr, "genman: -out is required")
		os.Exit(2)
	}
	if err := run(*bin, *out); err != nil {
		fmt.Fprintln(os.Stderr, "genman:", err)
		os.Exit(1)
	}
}

// output runs a program with a neutral environment, so that defaults that
// come from it (a home directory) read the same on every build machine.
func output(path string, args ...string) ([]byte, error) {
	cmd := exec.Command(path, args...)
	cmd.Env = []string{"HOME=~", "PATH=/usr/bin:/bin", "LANG=C"}
	var b bytes.Buffer
	cmd.Stdout, cmd.Stderr = &b, &b
	err := cmd.Run()
	return b.Bytes(), err
}

func run(bin, out string) error {
	man1 := filepath.Join(out, "man", "man1")
	if err := os.MkdirAll(man1, 0o755); err != nil {
		return err
	}
	for _, p := range programs {
		path := filepath.Join(bin, p.name)
		if _, err := os.Stat(path); err != nil {
			if p.optional {
				continue
			}
			return fmt.Errorf("%s: %w", p.name, err)
		}
		help, _ := output(path, "-h") // -h exits 0 or 2 depending on the flag package's mode
		page := manpage.Page{Name: p.name, Summary: p.summary, Synopsis: p.name + " [OPTIONS]",
			Description: p.description, Options: manpage.ParseHelp(string(help)),
			SeeAlso: []string{"bastionctl(1)"}}
		if len(page.Options) == 0 {
			return fmt.Errorf("%s -h printed no options: %q", p.name, help)
		}
		var b bytes.Buffer
		manpage.Write(&b, page)
		if err := writeGz(filepath.Join(man1, p.name+".1.gz"), b.Bytes()); err != nil {
			return err
		}
	}
	ctl := filepath.Join(bin, "bastionctl")
	page, err := output(ctl, "man")
	if err != nil {
		return fmt.Errorf("bastionctl man: %w: %s", err, page)
	}
	if err := writeGz(filepath.Join(man1, "bastionctl.1.gz"), page); err != nil {
		return err
	}
	for sh, file := range map[string]string{
		"bash": filepath.Join(out, "bash-completion", "completions", "bastionctl"),
		"zsh":  filepath.Join(out, "zsh", "vendor-completions", "_bastionctl"),
		"fish": filepath.Join(out, "fish", "vendor_completions.d", "bastionctl.fish"),
	} {
		script, err := output(ctl, "completion", sh)
		if err != nil {
			return fmt.Errorf("bastionctl completion %s: %w: %s", sh, err, script)
		}
		if err := os.MkdirAll(filepath.Dir(file), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(file, script, 0o644); err != nil {
			return err
		}
	}
	return nil
}

// writeGz writes data gzip-compressed at the best level, with no name or
// time in the header (lintian: reproducible, maximal compression).
func writeGz(path string, data []byte) error {
	var b bytes.Buffer
	zw, err := gzip.NewWriterLevel(&b, gzip.BestCompression)
	if err != nil {
		return err
	}
	if _, err := zw.Write(data); err != nil {
		return err
	}
	if err := zw.Close(); err != nil {
		return err
	}
	return os.WriteFile(path, b.Bytes(), 0o644)
}
