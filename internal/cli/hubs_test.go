package cli

import (
	"testing"
	"time"

	"github.com/superinstance/mesh/hub"
	"github.com/superinstance/mesh/internal/store"
)

// TestHubRows: a hub whose bridge died without closing its link is still
// "connected" in the registry; past the silence bound it is shown offline,
// with no round trip; enrolled devices that never connected are listed.
func TestHubRows(t *testing.T) {
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	hubs := []store.Hub{
		{DeviceID: "live", Account: "acme", Connected: true, LastSeen: now.Add(-2 * time.Second), RTTMicros: 850},
		{DeviceID: "orphaned", Account: "acme", Connected: true, LastSeen: now.Add(-16 * time.Second), RTTMicros: 900},
		{DeviceID: "closed", Account: "acme", Connected: false, LastSeen: now.Add(-time.Second), RTTMicros: 700},
	}
	never := []store.EnrolledDevice{{DeviceID: "new", Account: "beta", EnrolledAt: now.Add(-time.Hour)}}
	rows := hubRows(hub.Policy{}, hubs, never, now)
	if len(rows) != 4 {
		t.Fatalf("%d rows, want 4", len(rows))
	}
	want := []struct {
		link      string
		connected bool
		rtt       int
	}{{"online", true, 850}, {"offline", false, 0}, {"offline", false, 0}, {"never connected", false, 0}}
	for i, w := range want {
		r := rows[i]
		if r.Link != w.link || r.Connected != w.connected || r.RTTMicros != w.rtt {
			t.Errorf("%s: link %q connected %v rtt %d, want %q %v %d", r.DeviceID, r.Link, r.Connected, r.RTTMicros, w.link, w.connected, w.rtt)
		}
	}
	if !rows[3].NeverConnected || rows[3].Healthy {
		t.Errorf("never-connected row %+v", rows[3])
	}
}
