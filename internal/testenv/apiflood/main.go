// Command apiflood is an unprivileged user's attack on the agent's API, for
// the end-to-end tests: it takes what it can of the agent's memory through
// the socket, prints what the agent let it have as one JSON line, and then
// holds its connections and unread streams until it is killed.
//
// In order: -setrules-par concurrent SetRules of about -setrules-bytes each;
// -udp datagrams to 127.0.0.1 (its rules allow them, so each is a decision
// in its history); -conns connections with -streams unread WatchDecisions
// streams each; -udp more datagrams, which the unread streams must queue;
// then -cache cache entries, each made by holding a datagram and deciding
// it with the destination-port scope.
//
// Usage: apiflood -socket PATH [-conns N] [-streams N] [-udp N] [-cache N]
// [-setrules-bytes N] [-setrules-par N]
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	agentv1 "github.com/bastion-fw/bastion/proto/bastion/agent/v1"
	rulesv1 "github.com/bastion-fw/bastion/proto/bastion/rules/v1"
)

// result is the JSON line printed.
type result struct {
	ConnsAccepted   int            `json:"conns_accepted"`
	StreamsAccepted int            `json:"streams_accepted"`
	StreamsAlive    int            `json:"streams_alive"`
	StreamsRefused  int            `json:"streams_refused"`
	SetRulesOK      int            `json:"setrules_ok"`
	Datagrams       int            `json:"datagrams"`
	CacheEntries    int            `json:"cache_entries"`
	Decided         int            `json:"decided"`
	Errors          map[string]int `json:"errors,omitempty"`
}

func main() {
	socket := flag.String("socket", "/run/bastion/agent.sock", "agent socket")
	conns := flag.Int("conns", 32, "connections to open")
	streams := flag.Int("streams", 16, "unread WatchDecisions streams per connection")
	udp := flag.Int("udp", 2000, "datagrams sent before and after opening the streams")
	cache := flag.Int("cache", 5000, "cache entries to make")
	ruleBytes := flag.Int("setrules-bytes", 3_900_000, "bytes of each SetRules request")
	rulePar := flag.Int("setrules-par", 8, "concurrent SetRules requests")
	flag.Parse()

	r := result{Errors: map[string]int{}}
	var mu sync.Mutex
	fail := func(what string, err error) {
		mu.Lock()
		defer mu.Unlock()
		r.Errors[what+": "+status.Code(err).String()]++
	}
	dial := func() (*grpc.ClientConn, agentv1.AgentServiceClient) {
		cc, err := grpc.NewClient("unix://"+*socket, grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithDefaultCallOptions(grpc.MaxCallSendMsgSize(64<<20)))
		if err != nil {
			fmt.Fprintln(os.Stderr, "apiflood:", err)
			os.Exit(1)
		}
		return cc, agentv1.NewAgentServiceClient(cc)
	}
	ctx := context.Background()
	_, api := dial()

	// Big rule sets, at once; the last one sent leaves an allow rule for
	// the datagrams.
	var wg sync.WaitGroup
	for range *rulePar {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, c := dial()
			if _, err := c.SetRules(ctx, bigRules(*ruleBytes)); err != nil {
				fail("setrules", err)
				return
			}
			mu.Lock()
			r.SetRulesOK++
			mu.Unlock()
		}()
	}
	wg.Wait()
	if _, err := api.SetRules(ctx, &agentv1.SetRulesRequest{Rules: []*rulesv1.Rule{allowUDP()}}); err != nil {
		fail("setrules allow", err)
	}
	r.Datagrams += sendDatagrams(*udp, 20000)

	// Unread streams. A stream the agent accepted sends its history (the
	// decisions above) at once; a refused one ends with an error.
	var open []grpc.ClientStream
	for range *conns {
		cc, c := dial()
		sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		_, err := c.GetStatus(sctx, &agentv1.GetStatusRequest{})
		cancel()
		if err != nil {
			fail("connect", err)
			cc.Close()
			continue
		}
		r.ConnsAccepted++
		for range *streams {
			st, err := c.WatchDecisions(ctx, &agentv1.WatchDecisionsRequest{})
			if err == nil {
				_, err = headerWithin(st, 10*time.Second)
			}
			if err != nil {
				fail("stream", err)
				r.StreamsRefused++
				continue
			}
			r.StreamsAccepted++
			open = append(open, st)
		}
	}
	r.Datagrams += sendDatagrams(*udp, 30000)

	// Cache entries: hold datagrams to distinct ports, decide each for its
	// destination and port.
	if _, err := api.SetRules(ctx, &agentv1.SetRulesRequest{}); err != nil {
		fail("setrules none", err)
	}
	for done := 0; done < *cache; {
		n := min(256, *cache-done)
		sendDatagrams(n, 40000+done%20000)
		deadline := time.Now().Add(10 * time.Second)
		var pend []*agentv1.PendingConnection
		for time.Now().Before(deadline) {
			lp, err := api.ListPending(ctx, &agentv1.ListPendingRequest{})
			if err != nil {
				fail("listpending", err)
				break
			}
			if pend = lp.GetConnections(); len(pend) >= n {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
		if len(pend) == 0 {
			break
		}
		for _, p := range pend {
			_, err := api.Decide(ctx, &agentv1.DecideRequest{Id: p.GetId(), Action: agentv1.Action_ACTION_ALLOW,
				Scope: agentv1.Scope_SCOPE_DESTINATION_PORT})
			if err != nil {
				fail("decide", err)
				continue
			}
			r.Decided++
		}
		done += n
	}
	if lc, err := api.ListCache(ctx, &agentv1.ListCacheRequest{}); err != nil {
		fail("listcache", err)
	} else {
		r.CacheEntries = len(lc.GetEntries())
	}

	r.StreamsAlive = alive(open)

	line, _ := json.Marshal(r)
	fmt.Println(string(line))
	// Hold everything until killed.
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	<-sig
}

// alive returns how many streams the agent still keeps open: it reads
// each (now, at the end) and counts those that do not end within a few
// seconds of their last queued event.
func alive(streams []grpc.ClientStream) int {
	var n sync.WaitGroup
	var mu sync.Mutex
	count := 0
	for _, st := range streams {
		n.Add(1)
		go func() {
			defer n.Done()
			ended := make(chan struct{})
			go func() {
				defer close(ended)
				var ev agentv1.DecisionEvent
				for st.RecvMsg(&ev) == nil {
				}
			}()
			select {
			case <-ended:
			case <-time.After(5 * time.Second):
				mu.Lock()
				count++
				mu.Unlock()
			}
		}()
	}
	n.Wait()
	return count
}

// headerWithin waits for the stream's response headers.
func headerWithin(st grpc.ClientStream, d time.Duration) (bool, error) {
	done := make(chan error, 1)
	go func() {
		_, err := st.Header()
		done <- err
	}()
	select {
	case err := <-done:
		return err == nil, err
	case <-time.After(d):
		return false, fmt.Errorf("no response headers within %v", d)
	}
}

// sendDatagrams sends n datagrams to 127.0.0.1, from a new socket each, to
// ports from base on, and returns how many were sent.
func sendDatagrams(n, base int) int {
	sent := 0
	for i := range n {
		c, err := net.Dial("udp4", net.JoinHostPort("127.0.0.1", strconv.Itoa(base+i%20000)))
		if err != nil {
			continue
		}
		if _, err := c.Write([]byte("x")); err == nil {
			sent++
		}
		c.Close()
	}
	return sent
}

func allowUDP() *rulesv1.Rule {
	return &rulesv1.Rule{Id: "allow-udp", Enabled: true, Action: rulesv1.Action_ACTION_ALLOW,
		Protocol: rulesv1.Protocol_PROTOCOL_UDP, Lifetime: rulesv1.Lifetime_LIFETIME_FOREVER}
}

// bigRules is a SetRules request of about size bytes: rules with long
// paths and notes, as many as fit.
func bigRules(size int) *agentv1.SetRulesRequest {
	req := &agentv1.SetRulesRequest{Rules: []*rulesv1.Rule{allowUDP()}}
	note := strings.Repeat("n", 300)
	for total := 0; total < size && len(req.Rules) < 10_000; {
		i := len(req.Rules)
		r := &rulesv1.Rule{Id: "r" + strconv.Itoa(i), Enabled: true, Action: rulesv1.Action_ACTION_DENY,
			Exe: "/opt/" + strings.Repeat("p", 60) + "/" + strconv.Itoa(i), Dst: "192.0.2." + strconv.Itoa(i%250+1),
			DstPortMin: uint32(i%60000 + 1), DstPortMax: uint32(i%60000 + 1), Note: note,
			Lifetime: rulesv1.Lifetime_LIFETIME_FOREVER}
		req.Rules = append(req.Rules, r)
		total += proto.Size(r) + 4 // the field's tag and length

	}
	return req
}
