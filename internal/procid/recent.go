package procid

import (
	"fmt"
	"sync/atomic"
	"unsafe"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// recentFlows reads the recent_flows map that nf_local_out fills next to
// flows (see bpf/procid.c): a direct-mapped array of seqlocked slots, mapped
// read-only into the agent, so that looking up the flow of a queued packet
// costs a few memory loads instead of a bpf() syscall. A miss is never an
// answer: the caller then asks the flows map.
type recentFlows struct {
	mem  []byte        // the map's values, RECENT_FLOWS slots of slotSize bytes
	hits atomic.Uint64 // lookups answered; the tests check the path is taken
}

// Layout of one slot in 32-bit words: seq, then the key, then the value.
const (
	slotSize   = unsafe.Sizeof(procidRecentFlow{})
	slotWords  = slotSize / 4
	keyWords   = unsafe.Sizeof(procidFlowKey{}) / 4
	valueWords = unsafe.Sizeof(procidFlowValue{}) / 4
	keyOffset  = unsafe.Offsetof(procidRecentFlow{}.Key)
	valOffset  = unsafe.Offsetof(procidRecentFlow{}.Val)
)

// The copy below moves whole words and the slot must be exactly seq, key,
// value; the C structs keep it so (go generate would change these).
var _ = [1]struct{}{}[slotSize-(4+keyWords*4+valueWords*4)]
var _ = [1]struct{}{}[keyOffset-4]
var _ = [1]struct{}{}[valOffset-(4+keyWords*4)]

// openRecentFlows maps m, which must be the recent_flows array.
func openRecentFlows(m *ebpf.Map) (*recentFlows, error) {
	if m.ValueSize() != uint32(slotSize) || m.Flags()&unix.BPF_F_MMAPABLE == 0 {
		return nil, fmt.Errorf("recent_flows map: %d-byte values, flags %#x; want %d bytes, mmapable: regenerate with go generate ./internal/procid",
			m.ValueSize(), m.Flags(), slotSize)
	}
	n := int(m.MaxEntries())
	if n == 0 || n&(n-1) != 0 {
		return nil, fmt.Errorf("recent_flows map: %d slots, want a power of two", n)
	}
	size := (n*int(slotSize) + unix.Getpagesize() - 1) &^ (unix.Getpagesize() - 1)
	mem, err := unix.Mmap(m.FD(), 0, size, unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("map recent_flows into memory: %w", err)
	}
	return &recentFlows{mem: mem[:n*int(slotSize)]}, nil
}

// Close unmaps the slots. A lookup after Close misses; one running while
// Close unmaps would fault, so the resolver is closed only after its last
// Resolve (as the agent does, once the queue has stopped).
func (f *recentFlows) Close() error {
	if f.mem == nil {
		return nil
	}
	mem := f.mem[:cap(f.mem)]
	f.mem = nil
	return unix.Munmap(mem)
}

// recentSlot is recent_slot in bpf/procid.c: the same function over the
// same words.
func recentSlot(k *procidFlowKey) uint32 {
	w := (*[keyWords]uint32)(unsafe.Pointer(k))
	h := uint32(0x811c9dc5)
	for _, x := range w {
		h ^= x
		h *= 0x9e3779b1
		h ^= h >> 16
	}
	return h
}

// lookup fills v with the flow of k if k's slot holds it, and reports
// whether it did.
func (f *recentFlows) lookup(k *procidFlowKey, v *procidFlowValue) bool {
	slots := uint32(len(f.mem) / int(slotSize))
	if slots == 0 {
		return false // closed
	}
	off := uintptr(recentSlot(k)&(slots-1)) * slotSize
	slot := (*[slotWords]uint32)(unsafe.Pointer(&f.mem[off]))

	// Every word is read with an atomic (acquiring) load, so that no read
	// of the slot's contents can move past the second read of seq, on any
	// CPU. A writer holds seq odd while it writes.
	var cp [slotWords]uint32
	seq := atomic.LoadUint32(&slot[0])
	if seq&1 != 0 {
		return false
	}
	for i := 1; i < len(slot); i++ {
		cp[i] = atomic.LoadUint32(&slot[i])
	}
	if atomic.LoadUint32(&slot[0]) != seq {
		return false
	}
	if *(*[keyWords]uint32)(cp[1:]) != *(*[keyWords]uint32)(unsafe.Pointer(k)) {
		return false
	}
	*(*[valueWords]uint32)(unsafe.Pointer(v)) = *(*[valueWords]uint32)(cp[1+keyWords:])
	f.hits.Add(1)
	return true
}
