package peercred

import (
	"context"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"
)

func TestConnLimitsCountPerUID(t *testing.T) {
	l := LimitListener(nil, ConnLimits{PerUID: 2, NonRoot: 3}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	a, b := Cred{UID: 1000}, Cred{UID: 1001}
	for i, tc := range []struct {
		c    Cred
		want bool
	}{{a, true}, {a, true}, {a, false}, {b, true}, {b, false}} {
		if got := l.admit(tc.c) == ""; got != tc.want {
			t.Fatalf("step %d: uid %d admitted %v, want %v", i, tc.c.UID, got, tc.want)
		}
	}
	l.release(1000)
	if l.Open(1000) != 1 || l.admit(b) != "" {
		t.Fatalf("after a release: uid 1000 has %d, uid 1001 not admitted", l.Open(1000))
	}
}

// Connections through the listener keep their credentials readable, and
// closing one gives its place back.
func TestLimitListenerServesAndReleases(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.sock")
	ul, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer ul.Close()
	l := LimitListener(ul, ConnLimits{PerUID: 1, NonRoot: 1}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	for range 3 { // root is not bounded; others are, one at a time
		c, err := net.Dial("unix", path)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		sc, err := l.Accept()
		if err != nil {
			t.Fatal(err)
		}
		cred, err := Read(sc)
		if err != nil || cred.UID != uint32(os.Getuid()) {
			t.Fatalf("Read through the listener: %+v, %v", cred, err)
		}
		if err := sc.Close(); err != nil {
			t.Fatal(err)
		}
		if n := l.Open(cred.UID); n != 0 {
			t.Fatalf("%d connections counted after close", n)
		}
	}
}

// A refused gRPC client is told why.
func TestRefusedClientIsToldWhy(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.sock")
	ul, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer ul.Close()
	go func() {
		for {
			c, err := ul.Accept()
			if err != nil {
				return
			}
			refuse(c, "uid 1001 has 16 connections open, the limit")
		}
	}()
	cc, err := grpc.NewClient("unix://"+path, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err = cc.Invoke(ctx, "/x.Y/Z", &emptypb.Empty{}, &emptypb.Empty{})
	if status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), "16 connections open, the limit") {
		t.Fatalf("refused call: %v; want ResourceExhausted with the reason", err)
	}
}
