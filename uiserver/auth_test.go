package uiserver

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/bastion-fw/bastion/internal/peercred"
	"github.com/bastion-fw/bastion/internal/testenv"
	uiv1 "github.com/bastion-fw/bastion/proto/bastion/ui/v1"
)

func TestAuthorize(t *testing.T) {
	tests := []struct {
		name   string
		caller peercred.Cred
		owner  uint32
		ok     bool
	}{
		{"owner", peercred.Cred{UID: 1000, PID: 5}, 1000, true},
		{"other user", peercred.Cred{UID: 1001, PID: 5}, 1000, false},
		{"root is not the owner", peercred.Cred{UID: 0, PID: 5}, 1000, false},
		{"root's own service", peercred.Cred{UID: 0, PID: 5}, 0, true},
		{"user at root's service", peercred.Cred{UID: 1000, PID: 5}, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := authorize(tt.caller, tt.owner)
			if tt.ok && err != nil {
				t.Errorf("refused: %v", err)
			}
			if !tt.ok && code(err) != codes.PermissionDenied {
				t.Errorf("got %v, want PermissionDenied", err)
			}
		})
	}
	if err := authorizeContext(context.Background(), 0); code(err) != codes.Unauthenticated {
		t.Errorf("no credentials: %v, want Unauthenticated", err)
	}
}

// Another user's process reaching the socket (here: a socket made
// reachable on purpose) is refused on every method, streams included.
func TestOtherUserIsRefused(t *testing.T) {
	testenv.RequireRoot(t) // to connect as another user
	h := newHarness(t, func(c *Config) { c.Socket = filepath.Join(t.TempDir(), "open", "ui.sock") })
	// Open the way to the socket: every directory the test made.
	for p := filepath.Dir(h.cfg.Socket); p != os.TempDir() && p != "/"; p = filepath.Dir(p) {
		if err := os.Chmod(p, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(h.cfg.Socket, 0o666); err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient("passthrough:///ui", grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) {
			return testenv.DialUnixAs(ctx, h.cfg.Socket, 1000, 1000)
		}))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ui := uiv1.NewUIServiceClient(conn)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if _, err := ui.GetStatus(ctx, &uiv1.GetStatusRequest{}); code(err) != codes.PermissionDenied {
		t.Errorf("GetStatus as uid 1000: %v, want PermissionDenied", err)
	}
	if _, err := ui.ListRules(ctx, &uiv1.ListRulesRequest{}); code(err) != codes.PermissionDenied {
		t.Errorf("ListRules as uid 1000: %v, want PermissionDenied", err)
	}
	stream, err := ui.WatchPrompts(ctx, &uiv1.WatchPromptsRequest{})
	if err == nil {
		_, err = stream.Recv()
	}
	if code(err) != codes.PermissionDenied {
		t.Errorf("WatchPrompts as uid 1000: %v, want PermissionDenied", err)
	}
	if n := h.status().GetPromptClients(); n != 0 {
		t.Errorf("a refused caller became a prompt client (%d)", n)
	}
}

func TestSocketDirectory(t *testing.T) {
	uid := uint32(os.Getuid())
	t.Run("created private", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "bastion")
		if err := prepareSocketDir(dir, uid); err != nil {
			t.Fatal(err)
		}
		if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o700 {
			t.Fatalf("mode %v %v", fi.Mode(), err)
		}
	})
	t.Run("tightened", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "bastion")
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := prepareSocketDir(dir, uid); err != nil {
			t.Fatal(err)
		}
		if fi, _ := os.Stat(dir); fi.Mode().Perm() != 0o700 {
			t.Errorf("mode %v, want 0700", fi.Mode())
		}
	})
	t.Run("symlink refused", func(t *testing.T) {
		base := t.TempDir()
		if err := os.Symlink(t.TempDir(), filepath.Join(base, "bastion")); err != nil {
			t.Fatal(err)
		}
		if err := prepareSocketDir(filepath.Join(base, "bastion"), uid); err == nil {
			t.Error("a symlinked socket directory was accepted")
		}
	})
	t.Run("other owner refused", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "bastion")
		if err := os.Mkdir(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := prepareSocketDir(dir, uid+1); err == nil {
			t.Error("a directory owned by someone else was accepted")
		}
	})
	t.Run("socket is private and a second server refused", func(t *testing.T) {
		h := newHarness(t, nil)
		fi, err := os.Stat(h.cfg.Socket)
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("socket mode %v %v", fi.Mode(), err)
		}
		if _, err := listen(h.cfg.Socket, uid); err == nil {
			t.Error("a second server took over a live socket")
		}
		if st, ok := fi.Sys().(*syscall.Stat_t); !ok || st.Uid != uid {
			t.Error("socket not owned by the user")
		}
	})
}
