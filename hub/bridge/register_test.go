package bridge_test

import (
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/superinstance/mesh/hub/bridge"
)

// closedConn is a connection that records how it was closed.
type closedConn struct {
	bridge.Conn // unused methods panic
	code        quic.ApplicationErrorCode
	closed      bool
}

func (c *closedConn) CloseWithError(code quic.ApplicationErrorCode, _ string) error {
	c.code, c.closed = code, true
	return nil
}

// TestAnOlderConnectionsLateHelloDoesNotReplaceTheNewer: a hub with two
// connections whose hellos come back from the registry out of order (the
// newer one's first) keeps the newer one; the older is closed as replaced,
// and so is one dated the same as the one registered.
// Before, the older replaced the newer, closing it, and the newer one's end
// then marked the hub offline in the registry while the older still beat.
func TestAnOlderConnectionsLateHelloDoesNotReplaceTheNewer(t *testing.T) {
	b := bridge.NewRegistryForTest()
	t0 := time.Now()
	older, newer := &closedConn{}, &closedConn{}
	if !b.RegisterForTest(newer, "gpu-race", t0.Add(time.Millisecond)) {
		t.Fatal("the first connection registered was refused")
	}
	if b.RegisterForTest(older, "gpu-race", t0) {
		t.Error("a connection whose hello the registry wrote earlier replaced the one written later")
	}
	if got := b.ConnOfForTest("gpu-race"); got != newer {
		t.Errorf("the device's connection is %p, want the newer %p", got, newer)
	}
	if newer.closed {
		t.Errorf("the newer connection was closed (code %d)", newer.code)
	}
	if !older.closed || older.code != bridge.CodeReplaced {
		t.Errorf("the older connection: closed %v code %d, want closed with %d", older.closed, older.code, bridge.CodeReplaced)
	}

	same := &closedConn{}
	if b.RegisterForTest(same, "gpu-race", t0.Add(time.Millisecond)) || !same.closed || b.ConnOfForTest("gpu-race") != newer {
		t.Errorf("a connection dated the same as the registered one: kept %v, closed %v; want it closed, the registered one kept",
			b.ConnOfForTest("gpu-race") == same, same.closed)
	}

	// In order, the newer replaces the older, as it always has.
	later := &closedConn{}
	if !b.RegisterForTest(later, "gpu-race", t0.Add(time.Second)) {
		t.Error("a connection written later than the registered one was refused")
	}
	if !newer.closed || newer.code != bridge.CodeReplaced {
		t.Errorf("the replaced connection: closed %v code %d, want closed with %d", newer.closed, newer.code, bridge.CodeReplaced)
	}
	if got := b.ConnOfForTest("gpu-race"); got != later {
		t.Errorf("the device's connection is %p, want the latest %p", got, later)
	}
}
