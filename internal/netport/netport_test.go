package netport

import (
	"net"
	"strconv"
	"testing"
)

// Ports come from below the ephemeral range, where no outgoing
// connection's local end lands, and can be bound.
func TestFreeIsBelowTheEphemeralRange(t *testing.T) {
	high := ephemeralStart()
	if high-lowest < 1000 {
		t.Skipf("the ephemeral range starts at %d: the kernel chooses", high)
	}
	for range 20 {
		p, err := Free("127.0.0.1")
		if err != nil {
			t.Fatal(err)
		}
		if p < lowest || p >= high {
			t.Fatalf("port %d: want one in [%d, %d)", p, lowest, high)
		}
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
		if err != nil {
			t.Fatalf("port %d cannot be bound: %v", p, err)
		}
		l.Close()
	}
}
