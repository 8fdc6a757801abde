package rules

import (
	"math/rand/v2"
	"testing"
)

// TestKernelDepsIsSound: when KernelDeps says a decision depends on
// neither the process nor the name, every connection that differs only in
// the command line, the executable's hash and the host name is decided by
// the same rule; when it says it depends only on the name, every
// connection with the same name is. This is what makes a decision the
// agent remembers in the kernel (which knows none of the three) the one
// userspace would make, for every operand the kernel cannot see.
func TestKernelDepsIsSound(t *testing.T) {
	rng := rand.New(rand.NewPCG(13, 13))
	var exact, byName, neither int
	for round := range 200 {
		rs := randomRules(rng, 1+rng.IntN(60))
		m, err := NewMatcher(rs)
		if err != nil {
			t.Fatal(err)
		}
		for range 50 {
			c := randomConn(rng)
			process, host := m.KernelDeps(c, t0)
			if process {
				neither++
				continue
			}
			want, wantOK := m.Match(c, t0)
			if host {
				byName++
			} else {
				exact++
			}
			for range 20 {
				v := randomConn(rng)
				o := c
				o.Args, o.SHA256 = v.Args, v.SHA256
				if !host {
					o.Host = v.Host
				}
				got, ok := m.Match(o, t0)
				if ok != wantOK || (ok && got != want) {
					t.Fatalf("round %d: KernelDeps(%+v) = %v, %v, but %+v is decided by %v (%v), not %v (%v)",
						round, c, process, host, o, got, ok, want, wantOK)
				}
			}
		}
	}
	if exact < 500 || byName < 500 || neither < 500 {
		t.Errorf("exact %d, by name %d, neither %d of 10000: the generator no longer exercises every case", exact, byName, neither)
	}
	t.Logf("exact %d, by name %d, process-dependent %d", exact, byName, neither)
}
