package agent

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/bastion-fw/bastion/internal/conntrack"
	agentv1 "github.com/bastion-fw/bastion/proto/bastion/agent/v1"
)

// serveTrafficAPI is serveAPI with traffic accounting ta (nil: none).
func serveTrafficAPI(t *testing.T, e *Engine, ta *trafficAccounting) agentv1.AgentServiceClient {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "agent.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := newGRPCServer(e, staticStatus{Started: time.Now()}, nil, &udpReuseState{}, nil, nil, ta)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(l)
	}()
	t.Cleanup(func() {
		srv.Stop()
		<-done
	})
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return agentv1.NewAgentServiceClient(conn)
}

// TestWatchTrafficOverTheSocket: the caller's own connection's samples
// arrive in batches with the decision's attribution, and the status
// reports the accounting; a stopped accounting refuses new streams with a
// plain reason.
func TestWatchTrafficOverTheSocket(t *testing.T) {
	e, _, _ := newTestEngine(t)
	ta := &trafficAccounting{table: newTrafficTable(16, 16), interval: 5 * time.Second, state: trafficActive}
	client := serveTrafficAPI(t, e, ta)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	stream, err := client.WatchTraffic(ctx, &agentv1.WatchTrafficRequest{})
	if err != nil {
		t.Fatal(err)
	}
	me := curl1000
	me.UID = uint32(os.Getuid())
	c := tcp("192.0.2.1", 40000, 443)
	d := allowedBy(me, c, "rule:web")
	d.RuleID = "web"
	// The stream is subscribed once the server handles it; until then a
	// sample would find no subscriber. Poll with fresh samples.
	var b *agentv1.TrafficBatch
	recv := make(chan *agentv1.TrafficBatch, 1)
	go func() {
		b, err := stream.Recv()
		if err == nil {
			recv <- b
		}
		close(recv)
	}()
	ta.table.allowed(d)
	var sent uint64
	for b == nil {
		sent += 1000
		read(ta.table, ctFlow(c, 1, sent, 2*sent))
		select {
		case b = <-recv:
			if b == nil {
				t.Fatal("stream ended")
			}
		case <-time.After(20 * time.Millisecond):
		case <-ctx.Done():
			t.Fatal("no batch")
		}
	}
	s := b.GetSamples()[0]
	if s.GetProcess().GetExe() != "/usr/bin/curl" || s.GetProcess().GetUid() != me.UID || s.GetDecidedBy() != "rule:web" ||
		s.GetRuleId() != "web" || s.GetHost() != "example.org" || s.GetFlow().GetDstPort() != 443 || s.GetConnectionId() == "" ||
		s.GetBytesSent() == 0 || s.GetBytesReceived() != 2*s.GetBytesSent() || s.GetTotalBytesReceived() < s.GetBytesReceived() || s.GetEnded() {
		t.Errorf("sample %v", s)
	}
	ta.table.destroyed([]conntrack.Flow{ctFlow(c, 1, sent+5, 2*sent)})
	for {
		b, err := stream.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if n := len(b.GetSamples()); n > 0 && b.GetSamples()[n-1].GetEnded() {
			if got := b.GetSamples()[n-1].GetTotalBytesSent(); got != sent+5 {
				t.Errorf("final total sent %d, want %d", got, sent+5)
			}
			break
		}
	}

	st, err := client.GetStatus(ctx, &agentv1.GetStatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	tr := st.GetTrafficAccounting()
	if tr.GetState() != "active" || tr.GetInterval().AsDuration() != 5*time.Second || tr.GetSamplesSent() == 0 || tr.GetTracked() != 0 {
		t.Errorf("status %v", tr)
	}

	ta.setState("stopped (read the conntrack table: boom)")
	s2, err := client.WatchTraffic(ctx, &agentv1.WatchTrafficRequest{})
	if err == nil {
		_, err = s2.Recv()
	}
	if status.Code(err) != codes.Unavailable {
		t.Errorf("WatchTraffic with accounting stopped: %v, want Unavailable", err)
	}
}
