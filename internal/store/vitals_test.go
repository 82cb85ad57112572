package store_test

import (
	"context"
	"testing"
	"time"

	"github.com/superinstance/mesh/internal/store"
	"github.com/superinstance/mesh/test/harness"
)

// The vitals history keeps one reading per hub per minute however often it
// beats, drops readings past the retention window, and shows each account
// its own hubs alone.
func TestVitalsHistoryIsBounded(t *testing.T) {
	s := harness.Store(t)
	ctx := context.Background()
	harness.EnsureAccount(t, s, "alice")
	harness.EnsureAccount(t, s, "bob")
	for _, d := range [][2]string{{"hub-a", "alice"}, {"hub-b", "bob"}} {
		if err := s.RegisterCert(ctx, d[0], d[1], "serial-"+d[0], time.Now().Add(time.Hour)); err != nil {
			t.Fatal(err)
		}
		if _, _, err := s.HubConnected(ctx, store.Hub{DeviceID: d[0]}); err != nil {
			t.Fatal(err)
		}
	}
	beat := func(id string, at time.Time, load float64) {
		t.Helper()
		if err := s.SaveHeartbeats(ctx, []store.HubBeat{{DeviceID: id, At: at, GPULoad: load}}); err != nil {
			t.Fatal(err)
		}
	}
	now := time.Now()
	// A stale reading from before the retention window (a hub's clock
	// behind, a backlog flushed late) is pruned.
	beat("hub-a", now.Add(-store.VitalsRetention-time.Hour), 0.9)
	start := now.Add(-10 * time.Minute)
	for i := range 120 { // every 5 s for 10 minutes
		beat("hub-a", start.Add(time.Duration(i)*5*time.Second), float64(i)/120)
	}
	beat("hub-b", now, 0.5)
	h, err := s.VitalsHistory(ctx, "alice", now.Add(-2*store.VitalsRetention))
	if err != nil {
		t.Fatal(err)
	}
	if n := len(h["hub-a"]); n < 9 || n > 11 {
		t.Fatalf("alice's hub has %d readings for 10 minutes, want about 10", n)
	}
	if h["hub-a"][0].At.Before(now.Add(-store.VitalsRetention)) {
		t.Fatalf("a reading past retention survived: %v", h["hub-a"][0].At)
	}
	if _, ok := h["hub-b"]; ok || len(h) != 1 {
		t.Fatalf("alice sees another account's hub: %v", h)
	}
	var total int
	if err := s.Pool.QueryRow(ctx, `SELECT count(*) FROM hub_vitals`).Scan(&total); err != nil || total != len(h["hub-a"])+1 {
		t.Fatalf("hub_vitals holds %d rows: %v", total, err)
	}
	hubs, err := s.HubsOf(ctx, "bob")
	if err != nil || len(hubs) != 1 || hubs[0].DeviceID != "hub-b" {
		t.Fatalf("bob's hubs: %+v %v", hubs, err)
	}
}
