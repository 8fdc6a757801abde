package deploytest

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/bastion-fw/bastion/internal/testenv"
	agentv1 "github.com/bastion-fw/bastion/proto/bastion/agent/v1"
)

// A documentation block is a fenced ```sh block in README.md or docs/*.md.
// The line before its fence says how the docs test runs it:
//
//	<!-- run: as=user ui hold -->   run it (as=user, the default, or as=root)
//	<!-- norun: REASON -->          do not: REASON says why, and what covers it
//
// "ui" starts the test user's rules service first; "hold" makes the user's
// curl to http://127.0.0.1:8080/ wait in the agent first (connection c1);
// "connect" runs that curl to completion first (with "ui" and no prompt
// client, it becomes a decide-later entry).
// Every block runs in a sandbox of its own: a fresh network namespace (named
// bastion-try in the docs), an agent confined to it whose socket is at
// /run/bastion/agent.sock (a private mount), an HTTP server at
// 127.0.0.1:8080 inside it, and the bastion-test account as "you".
type docBlock struct {
	file   string
	line   int
	text   string
	norun  string // reason, when not run
	asRoot bool
	ui     bool
	hold   bool
	conn   bool
}

var (
	runRe   = regexp.MustCompile(`^<!--\s*run:(.*?)-->\s*$`)
	norunRe = regexp.MustCompile(`^<!--\s*norun:\s*(.+?)\s*-->\s*$`)
)

// docBlocks extracts the sh blocks of a Markdown file.
func docBlocks(t testing.TB, path string) []docBlock {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var (
		blocks []docBlock
		prev   string
		cur    *docBlock
		n      int
		fence  bool
	)
	s := bufio.NewScanner(f)
	for s.Scan() {
		n++
		line := s.Text()
		switch {
		case cur != nil:
			if strings.HasPrefix(line, "```") {
				blocks = append(blocks, *cur)
				cur = nil
			} else {
				cur.text += line + "\n"
			}
		case fence:
			if strings.HasPrefix(line, "```") {
				fence = false
			}
		case strings.TrimSpace(line) == "```sh" || strings.TrimSpace(line) == "```bash":
			cur = &docBlock{file: filepath.Base(path), line: n}
			if m := norunRe.FindStringSubmatch(prev); m != nil {
				cur.norun = m[1]
			} else if m := runRe.FindStringSubmatch(prev); m != nil {
				for _, w := range strings.Fields(m[1]) {
					switch w {
					case "as=root":
						cur.asRoot = true
					case "as=user":
					case "ui":
						cur.ui = true
					case "hold":
						cur.hold = true
					case "connect":
						cur.conn = true
					default:
						t.Errorf("%s:%d: unknown run option %q", path, n-1, w)
					}
				}
			} else {
				t.Errorf("%s:%d: sh block without a <!-- run: ... --> or <!-- norun: reason --> line before it", path, n)
			}
		case strings.HasPrefix(line, "```"):
			fence = true
		}
		prev = line
	}
	return blocks
}

// TestDocs runs every sh block of README.md and docs/*.md that is not
// marked norun, each in a fresh sandbox; the docs cannot rot.
func TestDocs(t *testing.T) {
	root := repoRoot(t)
	paths, _ := filepath.Glob(filepath.Join(root, "docs", "*.md"))
	paths = append([]string{filepath.Join(root, "README.md")}, paths...)
	var blocks []docBlock
	for _, p := range paths {
		blocks = append(blocks, docBlocks(t, p)...)
	}
	norun := 0
	for _, b := range blocks {
		if b.norun != "" {
			norun++
			t.Logf("%s:%d not run: %s", b.file, b.line, b.norun)
		}
		if !b.asRoot && b.norun == "" && regexp.MustCompile(`(^|\s)sudo\s`).MatchString(b.text) {
			t.Errorf("%s:%d: a block run as the user cannot use sudo; mark it as=root", b.file, b.line)
		}
	}
	if norun*3 > len(blocks) {
		t.Errorf("%d of %d blocks are not run; keep those few", norun, len(blocks))
	}
	if t.Failed() {
		return
	}
	testenv.RequireRoot(t)
	testenv.RequireTools(t, "ip", "nsenter", "iptables", "curl")
	lookPath(t, "unshare")
	bin := buildBinaries(t)
	uid, gid := testUser(t)
	for _, b := range blocks {
		if b.norun != "" {
			continue
		}
		t.Run(fmt.Sprintf("%s:%d", b.file, b.line), func(t *testing.T) { runDocBlock(t, root, bin, uid, gid, b) })
	}
}

func runDocBlock(t *testing.T, root, bin string, uid, gid uint32, b docBlock) {
	ns := testenv.NewNetNS(t)
	var l net.Listener
	if err := ns.Do(func() (err error) { l, err = net.Listen("tcp", "127.0.0.1:8080"); return err }); err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, testenv.HTTPBody) }),
		ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })

	tmp := testenv.TempDir(t)
	runDir := filepath.Join(tmp, "run")
	os.Mkdir(runDir, 0o755)
	home := ownedDir(t, tmp, "home", uid, gid)
	rt := fmt.Sprintf("/run/user/%d", uid)
	if _, err := os.Stat(rt); errors.Is(err, os.ErrNotExist) {
		os.MkdirAll("/run/user", 0o755)
		if err := os.Mkdir(rt, 0o700); err != nil {
			t.Fatal(err)
		}
		os.Chown(rt, int(uid), int(gid))
		t.Cleanup(func() { os.RemoveAll(rt) })
	}
	// The docs' /run/bastion is this sandbox's directory in the blocks'
	// private mount namespace; the mount point itself must exist.
	if err := os.MkdirAll("/run/bastion", 0o755); err != nil {
		t.Fatal(err)
	}
	// The test user is a system account, which the default policy allows
	// silently; ask about it, as about a person's account.
	conf := filepath.Join(tmp, "agent.toml")
	os.WriteFile(conf, []byte("[[policy.users]]\nuids = \"0-0\"\naction = \"allow\"\n\n[[policy.users]]\nuids = \"1-4294967294\"\naction = \"ask\"\n"), 0o644)
	sock := filepath.Join(runDir, "agent.sock")
	a := testenv.StartAgent(t, testenv.Options{Bin: filepath.Join(bin, "bastion-agent"), Config: conf, NetNS: ns.Name,
		InterceptLoopback: true, Socket: sock, StopTimeout: agentStopTimeout})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	userEnv := []string{"HOME=" + home, "USER=" + testUserName, "LOGNAME=" + testUserName, "XDG_RUNTIME_DIR=" + rt,
		"PATH=" + bin + ":/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin", "LANG=C.UTF-8", "TERM=dumb"}
	if b.ui {
		ui := exec.CommandContext(ctx, "setpriv", append([]string{"--reuid", fmt.Sprint(uid), "--regid", fmt.Sprint(gid), "--clear-groups", "--",
			"env", "-i"}, append(userEnv, filepath.Join(bin, "bastion-uiserver"), "--agent-socket", sock)...)...)
		uiOut := &testenv.SyncBuffer{}
		ui.Stdout, ui.Stderr = uiOut, uiOut
		if err := ui.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			ui.Process.Signal(os.Interrupt)
			ui.Wait()
			if t.Failed() {
				t.Logf("uiserver:\n%s", uiOut.String())
			}
		})
		uiSock := filepath.Join(rt, "bastion", "ui.sock")
		testenv.WaitFor(t, 30*time.Second, "the rules service connected to the agent", func() bool {
			c := exec.Command("setpriv", "--reuid", fmt.Sprint(uid), "--regid", fmt.Sprint(gid), "--clear-groups", "--",
				filepath.Join(bin, "bastionctl"), "--agent-socket", sock, "--ui-socket", uiSock, "--json", "status")
			out, err := c.Output()
			return err == nil && regexp.MustCompile(`"agent_connected":\s*true`).Match(out)
		})
	}
	if b.hold {
		curl := ns.Command(ctx, uid, gid, "curl", "-s", "-m", "60", "http://127.0.0.1:8080/")
		if err := curl.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { curl.Process.Kill(); curl.Wait() })
		if _, err := pendingWhere(t, a.Client, 15*time.Second, func(p *agentv1.PendingConnection) bool {
			return p.GetFlow().GetDstPort() == 8080
		}); err != nil {
			t.Fatal(err)
		}
	}

	if b.conn {
		out, err := ns.Command(ctx, uid, gid, "curl", "-sS", "-m", "30", "http://127.0.0.1:8080/").CombinedOutput()
		if err != nil {
			t.Fatalf("curl as %s: %v: %s", testUserName, err, out)
		}
	}

	text := strings.ReplaceAll(b.text, "bastion-try", ns.Name)
	script := filepath.Join(tmp, "block.sh")
	prelude := "set -euo pipefail\ncd \"$HOME\"\n"
	shim := filepath.Join(tmp, "shim")
	if b.asRoot {
		// The block already runs as root: sudo just runs its command.
		os.Mkdir(shim, 0o755)
		os.WriteFile(filepath.Join(shim, "sudo"), []byte("#!/bin/sh\nexec \"$@\"\n"), 0o755)
	}
	os.WriteFile(script, []byte(prelude+text), 0o755)
	inner := `mount --bind "$RUNDIR" /run/bastion && exec "$@"`
	args := []string{"--mount", "--propagation", "private", "--", "sh", "-c", inner, "sh"}
	env := userEnv
	if b.asRoot {
		// $USER is still "you" in a sudo command line, expanded before sudo runs.
		env = []string{"HOME=" + home, "USER=" + testUserName, "LOGNAME=root", "SUDO_USER=" + testUserName,
			"PATH=" + shim + ":" + bin + ":/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin", "LANG=C.UTF-8", "TERM=dumb"}
		args = append(args, "bash", script)
	} else {
		args = append(args, "setpriv", "--reuid", fmt.Sprint(uid), "--regid", fmt.Sprint(gid), "--clear-groups", "--", "bash", script)
	}
	cmd := exec.CommandContext(ctx, "unshare", args...)
	cmd.Env = append(env, "RUNDIR="+runDir)
	cmd.Dir = home
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.CombinedOutput()
	t.Logf("%s:%d output:\n%s", b.file, b.line, out)
	if err != nil {
		t.Errorf("%s:%d failed: %v\nblock:\n%s\nagent:\n%s", b.file, b.line, err, text, a.Log())
	}
}

// TestReadmeCurlAnswers runs the README's Quick start curl command, as
// printed there, and answers its connection as a person would: Allow
// prints 200, Deny (a reject: the program fails at once) prints the
// failure and ends at once, without a second connection that would be
// held and asked about again (as --retry-connrefused made it).
func TestReadmeCurlAnswers(t *testing.T) {
	testenv.RequireRoot(t)
	testenv.RequireTools(t, "ip", "nsenter", "iptables", "curl", "runuser")
	root := repoRoot(t)
	readme, err := os.ReadFile(filepath.Join(root, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^sudo ip netns exec bastion-try runuser -u "\$USER" -- \\\n(.*)$`).FindStringSubmatch(string(readme))
	if m == nil {
		t.Fatal("README.md has no `sudo ip netns exec bastion-try runuser -u \"$USER\" -- \\` line followed by the curl command")
	}
	userCmd := strings.TrimSpace(m[1])
	bin := buildBinaries(t)
	testUser(t)

	for _, tc := range []struct {
		action agentv1.Action
		want   string
	}{
		{agentv1.Action_ACTION_ALLOW, "200\n"},
		{agentv1.Action_ACTION_REJECT, "curl failed: exit status 7\n"},
	} {
		t.Run(tc.action.String(), func(t *testing.T) {
			ns := testenv.NewNetNS(t)
			var l net.Listener
			if err := ns.Do(func() (err error) { l, err = net.Listen("tcp", "127.0.0.1:8000"); return err }); err != nil {
				t.Fatal(err)
			}
			srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, testenv.HTTPBody) }),
				ReadHeaderTimeout: 10 * time.Second}
			go srv.Serve(l)
			t.Cleanup(func() { srv.Close() })
			tmp := testenv.TempDir(t)
			conf := filepath.Join(tmp, "agent.toml")
			os.WriteFile(conf, []byte("[[policy.users]]\nuids = \"0-0\"\naction = \"allow\"\n\n[[policy.users]]\nuids = \"1-4294967294\"\naction = \"ask\"\n"), 0o644)
			a := testenv.StartAgent(t, testenv.Options{Bin: filepath.Join(bin, "bastion-agent"), Config: conf, NetNS: ns.Name,
				InterceptLoopback: true, Socket: filepath.Join(tmp, "agent.sock"), StopTimeout: agentStopTimeout})
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			script := "sudo ip netns exec bastion-try runuser -u \"$USER\" -- " + userCmd
			script = strings.ReplaceAll(strings.ReplaceAll(script, "bastion-try", ns.Name), "sudo ", "")
			curl := exec.CommandContext(ctx, "bash", "-c", script)
			curl.Env = []string{"USER=" + testUserName, "PATH=/usr/sbin:/usr/bin:/sbin:/bin"}
			out := &testenv.SyncBuffer{}
			curl.Stdout, curl.Stderr = out, out
			if err := curl.Start(); err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() { done <- curl.Wait() }()
			p, err := pendingWhere(t, a.Client, 30*time.Second, func(p *agentv1.PendingConnection) bool { return p.GetFlow().GetDstPort() == 8000 })
			if err != nil {
				t.Fatalf("%v; curl: %s", err, out.String())
			}
			if _, err := a.Client.Decide(ctx, &agentv1.DecideRequest{Id: p.GetId(), Action: tc.action}); err != nil {
				t.Fatal(err)
			}
			// A second connection would be held again for up to 30 s.
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("the README's command failed: %v", err)
				}
			case <-time.After(10 * time.Second):
				r, _ := a.Client.ListPending(ctx, &agentv1.ListPendingRequest{})
				t.Fatalf("curl still running 10 s after the answer (pending now: %v); output: %s", r.GetConnections(), out.String())
			}
			got := out.String()
			if !strings.HasSuffix(got, tc.want) {
				t.Errorf("the README's command printed %q, want it to end with %q", got, tc.want)
			}
		})
	}
}
