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

// SaveHeartbeatsUpdated says what it took of each beat: the row, the
// history's reading (one a minute), both, or nothing (a beat older than
// the row's, a hub the registry does not know); a beat whose caller says
// the history holds a recent reading is not offered to it.
func TestSaveHeartbeatsSaysWhatItTook(t *testing.T) {
	s := harness.Store(t)
	ctx := context.Background()
	harness.EnsureAccount(t, s, "acme-took")
	id := harness.UniqueID("hub-took")
	if err := s.RegisterCert(ctx, id, "acme-took", "serial-"+id, time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.HubConnected(ctx, store.Hub{DeviceID: id}); err != nil {
		t.Fatal(err)
	}
	t0 := time.Now().Add(time.Second).Truncate(time.Millisecond)
	history := func() int {
		t.Helper()
		var n int
		if err := s.Pool.QueryRow(ctx, `SELECT count(*) FROM hub_vitals WHERE device_id = $1`, id).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	for _, c := range []struct {
		step string
		at   time.Duration
		kept bool
		want store.BeatSaved
		rows int
	}{
		{"the first beat", 0, false, store.RowSaved | store.HistorySaved, 1},
		{"a beat ten seconds later", 10 * time.Second, false, store.RowSaved, 1},
		{"a beat older than the row's", 5 * time.Second, false, 0, 1},
		{"a minute later, the caller saying the history is kept", 70 * time.Second, true, store.RowSaved, 1},
		{"a minute later, offered", 80 * time.Second, false, store.RowSaved | store.HistorySaved, 2},
	} {
		saved, err := s.SaveHeartbeatsUpdated(ctx, []store.HubBeat{
			{DeviceID: id, At: t0.Add(c.at), GPULoad: 0.5, HistoryKept: c.kept},
			{DeviceID: "no-such-hub", At: t0.Add(c.at)},
		})
		if err != nil {
			t.Fatal(err)
		}
		if got, ok := saved[id]; got != c.want || ok != (c.want != 0) || len(saved) != min(1, int(c.want)) {
			t.Fatalf("%s: saved %v, want %v for the hub and nothing else", c.step, saved, c.want)
		}
		if n := history(); n != c.rows {
			t.Fatalf("%s: %d readings in the history, want %d", c.step, n, c.rows)
		}
	}
}

// A beat that says its row holds its vitals document already writes the
// figures and leaves the document as it is; one without a document
// writes an empty one.
func TestAKeptVitalsDocumentIsNotRewritten(t *testing.T) {
	s := harness.Store(t)
	ctx := context.Background()
	harness.EnsureAccount(t, s, "acme-kept")
	id := harness.UniqueID("hub-kept")
	if err := s.RegisterCert(ctx, id, "acme-kept", "serial-"+id, time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.HubConnected(ctx, store.Hub{DeviceID: id}); err != nil {
		t.Fatal(err)
	}
	t0 := time.Now().Add(time.Second).Truncate(time.Millisecond)
	for i, c := range []struct {
		b       store.HubBeat
		wantDoc string
	}{
		{store.HubBeat{Vitals: `{"cpuCount":2}`, CPULoad: 0.1}, `{"cpuCount": 2}`},
		{store.HubBeat{Vitals: `{"cpuCount":2}`, VitalsKept: true, CPULoad: 0.2}, `{"cpuCount": 2}`},
		{store.HubBeat{Vitals: `{"cpuCount":4}`, VitalsKept: true, CPULoad: 0.3}, `{"cpuCount": 2}`},
		{store.HubBeat{CPULoad: 0.4}, `{}`},
	} {
		c.b.DeviceID, c.b.At = id, t0.Add(time.Duration(i)*time.Second)
		if err := s.SaveHeartbeats(ctx, []store.HubBeat{c.b}); err != nil {
			t.Fatal(err)
		}
		h, err := s.HubByID(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if string(h.Vitals) != c.wantDoc || h.CPULoad != c.b.CPULoad {
			t.Fatalf("beat %d: row has document %s and CPU load %v, want %s and %v", i, h.Vitals, h.CPULoad, c.wantDoc, c.b.CPULoad)
		}
	}
}
