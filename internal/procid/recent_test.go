package procid

import (
	"net/netip"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"github.com/bastion-fw/bastion/internal/flow"
)

// fakeRecent is a recentFlows over Go memory with n slots, and a writer
// that follows put_recent's protocol in bpf/procid.c.
type fakeRecent struct {
	recentFlows
	words []uint32
}

func newFakeRecent(n int) *fakeRecent {
	words := make([]uint32, n*int(slotWords))
	return &fakeRecent{
		recentFlows: recentFlows{mem: unsafe.Slice((*byte)(unsafe.Pointer(&words[0])), n*int(slotSize))},
		words:       words,
	}
}

func (f *fakeRecent) slot(k *procidFlowKey) []uint32 {
	n := uint32(len(f.words) / int(slotWords))
	i := int(recentSlot(k)&(n-1)) * int(slotWords)
	return f.words[i : i+int(slotWords)]
}

// put writes k and v as put_recent does; it gives up if the slot is busy.
func (f *fakeRecent) put(k *procidFlowKey, v *procidFlowValue) bool {
	s := f.slot(k)
	seq := atomic.LoadUint32(&s[0])
	if seq&1 != 0 || !atomic.CompareAndSwapUint32(&s[0], seq, seq+1) {
		return false
	}
	kw := (*[keyWords]uint32)(unsafe.Pointer(k))
	vw := (*[valueWords]uint32)(unsafe.Pointer(v))
	for i, w := range kw {
		atomic.StoreUint32(&s[1+i], w)
	}
	for i, w := range vw {
		atomic.StoreUint32(&s[1+int(keyWords)+i], w)
	}
	atomic.StoreUint32(&s[0], seq+2)
	return true
}

func testKey(sport uint16) procidFlowKey {
	var k procidFlowKey
	setKey(&k, 4026531840, flow.Tuple{Proto: flow.TCP, Src: netip.MustParseAddr("10.0.0.1"),
		Dst: netip.MustParseAddr("192.0.2.7"), SrcPort: sport, DstPort: 443})
	return k
}

func TestRecentFlowsLookup(t *testing.T) {
	f := newFakeRecent(4)
	k := testKey(40000)
	want := procidFlowValue{Pid: 7, Tgid: 7, Uid: 1000, Gid: 1000, StartBoottime: 123, ExecId: 9}
	var got procidFlowValue
	if f.lookup(&k, &got) {
		t.Fatal("empty table: hit")
	}
	if !f.put(&k, &want) {
		t.Fatal("put into an idle slot gave up")
	}
	if !f.lookup(&k, &got) || got != want {
		t.Fatalf("lookup = %+v, want %+v", got, want)
	}

	// The same slot holding another flow is a miss.
	other := k
	other.Sport++
	for recentSlot(&other)&3 != recentSlot(&k)&3 {
		other.Sport++
	}
	if f.lookup(&other, &got) {
		t.Fatal("another key in the slot: hit")
	}

	// A writer holding the slot (odd seq) makes every reader miss, and
	// makes a second writer give up.
	s := f.slot(&k)
	s[0]++
	if f.lookup(&k, &got) {
		t.Fatal("slot being written: hit")
	}
	if f.put(&other, &want) {
		t.Fatal("put into a busy slot did not give up")
	}
	s[0]++
	if hits := f.hits.Load(); hits != 1 {
		t.Fatalf("hits = %d, want 1", hits)
	}

	// Closed (unmapped): a miss, not a fault.
	f.mem = nil
	if f.lookup(&k, &got) {
		t.Fatal("closed table: hit")
	}
}

// TestRecentFlowsNoTornReads has writers rewrite one slot with two flows
// whose values are derived from their keys while readers check every hit:
// a reader that kept a slot copied across a write would pair one flow's
// key with the other's value.
func TestRecentFlowsNoTornReads(t *testing.T) {
	f := newFakeRecent(1)
	keys := [2]procidFlowKey{testKey(1), testKey(2)}
	valueOf := func(k *procidFlowKey) procidFlowValue {
		p := uint32(k.Sport)
		return procidFlowValue{Pid: p, Tgid: p, Uid: p, Gid: p, SkUid: p, StartBoottime: uint64(p), Ts: uint64(p), SkIno: uint64(p), ExecId: uint64(p)}
	}
	var stop atomic.Bool
	var puts atomic.Uint64
	var wg sync.WaitGroup
	for w := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; !stop.Load(); i++ {
				k := &keys[(i+w)%2]
				v := valueOf(k)
				f.put(k, &v)
				puts.Add(1)
			}
		}()
	}
	// Read until both enough tries and enough hits were made: on a busy
	// machine the writers may not run at all during a fixed number of
	// tries, and a test without hits proves nothing.
	var hits, tries int
	deadline := time.Now().Add(30 * time.Second)
	for (tries < 200000 || hits < 100) && time.Now().Before(deadline) {
		k := &keys[tries%2]
		tries++
		if tries%1024 == 0 {
			runtime.Gosched() // let the writers run even on one CPU
		}
		var got procidFlowValue
		if f.lookup(k, &got) {
			hits++
			if got != valueOf(k) {
				stop.Store(true)
				wg.Wait()
				t.Fatalf("key %d read with value %+v", k.Sport, got)
			}
		}
	}
	stop.Store(true)
	wg.Wait()
	t.Logf("%d hits in %d tries, %d writes", hits, tries, puts.Load())
	if hits < 100 {
		t.Fatalf("%d lookup hits in %d tries (%d writes), want at least 100", hits, tries, puts.Load())
	}
}
