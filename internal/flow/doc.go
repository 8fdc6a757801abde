// Package flow holds the small value types every part of Bastion shares: a
// connection's tuple, the process behind it and the verdict it gets.
//
// Trust boundary: none. These are plain values; whoever fills them in decides
// how far they can be trusted (a Tuple parsed from a packet is
// attacker-controlled, a Process read from the kernel is not).
package flow
