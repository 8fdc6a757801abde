package peercred

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"testing"

	"google.golang.org/grpc/peer"
)

func TestReadOwnCredentials(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.sock")
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	done := make(chan Cred, 1)
	errc := make(chan error, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			errc <- err
			return
		}
		defer c.Close()
		_, ai, err := TransportCredentials().ServerHandshake(c)
		if err != nil {
			errc <- err
			return
		}
		done <- ai.(AuthInfo).Cred
	}()
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	select {
	case cred := <-done:
		if cred.UID != uint32(os.Getuid()) || cred.PID != uint32(os.Getpid()) || cred.GID != uint32(os.Getgid()) {
			t.Fatalf("got %+v, want uid %d pid %d gid %d", cred, os.Getuid(), os.Getpid(), os.Getgid())
		}
	case err := <-errc:
		t.Fatal(err)
	}
}

func TestHandshakeRejectsNonUnix(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	if _, _, err := TransportCredentials().ServerHandshake(a); err == nil {
		t.Fatal("handshake over a pipe succeeded; want an error")
	}
}

func TestFromContextWithoutCred(t *testing.T) {
	if _, err := FromContext(context.Background()); err == nil {
		t.Fatal("want error without peer")
	}
	ctx := peer.NewContext(context.Background(), &peer.Peer{})
	if _, err := FromContext(ctx); err == nil {
		t.Fatal("want error for peer without peercred auth info")
	}
}
