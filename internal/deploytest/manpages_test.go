package deploytest

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bastion-fw/bastion/internal/testenv"
)

// TestDebManPagesAndCompletion: the package has a manual page for every
// program it installs in /usr/bin, each renders without a warning, and
// bastionctl's completion scripts for bash, zsh and fish are where those
// shells look and load (checked with each shell that is installed; bash
// also completes a command).
func TestDebManPagesAndCompletion(t *testing.T) {
	testenv.RequireE2E(t)
	deb := buildDeb(t)
	root := testenv.TempDir(t)
	run(t, "dpkg-deb", "-x", deb, root)
	bins, err := os.ReadDir(filepath.Join(root, "usr", "bin"))
	if err != nil {
		t.Fatal(err)
	}
	if len(bins) < 3 {
		t.Fatalf("only %d programs in /usr/bin", len(bins))
	}
	for _, b := range bins {
		page := filepath.Join(root, "usr", "share", "man", "man1", b.Name()+".1.gz")
		if _, err := os.Stat(page); err != nil {
			t.Errorf("%s has no manual page: %v", b.Name(), err)
			continue
		}
		out, err := exec.Command("sh", "-c", `zcat "$1" | groff -man -ww -z -Tutf8 2>&1 && zcat "$1" | groff -man -Tascii -P-bcou 2>/dev/null`, "-", page).CombinedOutput()
		if err != nil || strings.Contains(string(out), "warning") || !strings.Contains(string(out), "OPTIONS") {
			t.Errorf("%s's manual page: %v:\n%s", b.Name(), err, out)
		}
	}
	scripts := map[string]string{
		"bash": "usr/share/bash-completion/completions/bastionctl",
		"zsh":  "usr/share/zsh/vendor-completions/_bastionctl",
		"fish": "usr/share/fish/vendor_completions.d/bastionctl.fish",
	}
	for sh, rel := range scripts {
		file := filepath.Join(root, rel)
		if _, err := os.Stat(file); err != nil {
			t.Errorf("no %s completion: %v", sh, err)
			continue
		}
		if _, err := exec.LookPath(sh); err != nil {
			t.Logf("%s is not installed: its completion's syntax is not checked", sh)
			continue
		}
		if out, err := exec.Command(sh, "-n", file).CombinedOutput(); err != nil {
			t.Errorf("%s -n %s: %v: %s", sh, rel, err, out)
		}
	}
	out, err := exec.Command("bash", "-c", `source "$1"; COMP_WORDS=(bastionctl ru); COMP_CWORD=1; _bastionctl; echo "${COMPREPLY[@]}"`,
		"-", filepath.Join(root, scripts["bash"])).CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "rules" {
		t.Errorf("the packaged bash completion of `bastionctl ru`: %q %v", out, err)
	}
}
