package rules

import (
	"testing"
	"time"
)

func TestClocks(t *testing.T) {
	before := time.Now()
	c, err := NewBootClock()
	if err != nil {
		t.Fatal(err)
	}
	clocks := []Clock{c, WallClock{}}
	for _, clk := range clocks {
		a := clk.Now()
		// No monotonic reading: comparisons use the wall clock, as they
		// do for Expires values read from the wire or disk.
		if a != a.Round(0) {
			t.Errorf("%T.Now() carries a monotonic reading", clk)
		}
		if d := a.Sub(before); d < -time.Second || d > time.Minute {
			t.Errorf("%T.Now() is %v away from the wall clock", clk, d)
		}
	}
	// BootClock advances with CLOCK_BOOTTIME: wait (with a deadline) until
	// it has moved on, and check it never runs backwards meanwhile.
	first := c.Now()
	deadline := time.Now().Add(10 * time.Second)
	last := first
	for !last.After(first) {
		if time.Now().After(deadline) {
			t.Fatal("BootClock did not advance in 10s")
		}
		n := c.Now()
		if n.Before(last) {
			t.Fatalf("BootClock ran backwards: %v then %v", last, n)
		}
		last = n
	}
}
