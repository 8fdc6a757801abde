package rules

import (
	"fmt"
	"time"

	"golang.org/x/sys/unix"
)

// Clock tells the time Duration rules are written and matched on.
type Clock interface {
	Now() time.Time
}

// Now is the wall clock without Go's monotonic reading. A time.Now()
// value carries a CLOCK_MONOTONIC reading, which stops while the machine
// is suspended, and comparisons between two such values use it: a 5-minute
// rule created before an hour of suspend would then still apply after
// resume. Stripping the reading makes comparisons use the wall clock,
// which the kernel advances by the time spent suspended. Expires values
// that crossed the wire or the disk have no monotonic reading either, so
// both sides of a comparison are on the same clock. Use a BootClock to be
// immune to the wall clock being set as well.
func Now() time.Time { return time.Now().Round(0) }

// WallClock is a Clock whose Now is the package's Now.
type WallClock struct{}

// Now implements Clock.
func (WallClock) Now() time.Time { return Now() }

// BootClock is a wall clock anchored once and advanced by CLOCK_BOOTTIME,
// which, unlike CLOCK_MONOTONIC, keeps counting while the machine is
// suspended, and, unlike CLOCK_REALTIME, is never set: a user or NTP
// stepping the wall clock back an hour does not make a 5-minute rule last
// 65 minutes. It reads the wall time once, in NewBootClock.
//
// (Computing realtime - monotonic + boottime on each call would not do:
// on resume the kernel advances both realtime and boottime by the time
// suspended, so the sum would count suspended time twice.)
type BootClock struct {
	wall time.Time
	boot time.Duration
}

// NewBootClock anchors a BootClock at the current wall time.
func NewBootClock() (*BootClock, error) {
	boot, err := boottime()
	if err != nil {
		return nil, err
	}
	return &BootClock{wall: Now(), boot: boot}, nil
}

// Now implements Clock. If CLOCK_BOOTTIME cannot be read (it always can on
// Linux 2.6.39 and later) it returns the wall clock.
func (c *BootClock) Now() time.Time {
	boot, err := boottime()
	if err != nil {
		return Now()
	}
	return c.wall.Add(boot - c.boot)
}

func boottime() (time.Duration, error) {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts); err != nil {
		return 0, fmt.Errorf("read CLOCK_BOOTTIME: %w", err)
	}
	return time.Duration(ts.Nano()), nil
}
