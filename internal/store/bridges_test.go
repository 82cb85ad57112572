package store_test

import (
	"context"
	"testing"
	"time"

	"github.com/superinstance/mesh/internal/store"
	"github.com/superinstance/mesh/test/harness"
)

// Bridge liveness in the registry: a hub on a bridge that stops beating is
// not connected for any reader and is named as lost to its bridge; another
// bridge's sweep writes that down (never its own hubs); a bridge that only
// stalled learns so at its next beat and takes back the hubs still on it,
// but not one that has moved to another bridge meanwhile; a hub registered
// by a bridge without an instance (an older one) is left to its age.
func TestBridgeLiveness(t *testing.T) {
	s := harness.Store(t)
	ctx := context.Background()
	harness.EnsureAccount(t, s, "acme")
	connect := func(device, instance string) {
		t.Helper()
		if _, err := s.HubByID(ctx, device); err != nil {
			if err := s.RegisterCert(ctx, device, "acme", "serial-"+device, time.Now().Add(time.Hour)); err != nil {
				t.Fatal(err)
			}
		}
		if _, _, err := s.HubConnected(ctx, store.Hub{DeviceID: device, Bridge: "b-" + instance, BridgeInstance: instance}); err != nil {
			t.Fatal(err)
		}
	}
	hub := func(device string) store.Hub {
		t.Helper()
		h, err := s.HubByID(ctx, device)
		if err != nil {
			t.Fatal(err)
		}
		return h
	}
	age := func(instance string) {
		t.Helper()
		if _, err := s.Pool.Exec(ctx, `UPDATE bridge_beats SET last_beat = now() - $2::interval WHERE instance = $1`,
			instance, (store.BridgeStale + time.Second).String()); err != nil {
			t.Fatal(err)
		}
	}
	for _, i := range []string{"one", "two"} {
		if dead, err := s.BridgeBeat(ctx, i, "b-"+i); err != nil || dead {
			t.Fatalf("first beat of %s: dead %v, %v", i, dead, err)
		}
	}
	connect("gpu-stays", "one")
	connect("gpu-moves", "one")
	connect("gpu-two", "two")
	connect("gpu-old", "") // a bridge without instances registered it
	for _, d := range []string{"gpu-stays", "gpu-moves", "gpu-two", "gpu-old"} {
		if h := hub(d); !h.Connected || h.BridgeDead {
			t.Fatalf("%s before any death: %+v", d, h)
		}
	}

	age("one")
	for d, dead := range map[string]bool{"gpu-stays": true, "gpu-moves": true, "gpu-two": false, "gpu-old": false} {
		if h := hub(d); h.Connected == dead || h.BridgeDead != dead {
			t.Errorf("%s with bridge one silent: connected %v, bridge dead %v", d, h.Connected, h.BridgeDead)
		}
	}
	if hs, err := s.AccountHubs(ctx, "acme"); err != nil || len(hs) != 2 {
		t.Fatalf("account hubs with bridge one silent: %d %v, want gpu-two and gpu-old", len(hs), err)
	}
	// A bridge never sweeps its own hubs; the other does.
	if n, err := s.SweepDeadBridges(ctx, "one"); err != nil || n != 0 {
		t.Fatalf("bridge one swept %d of its own (%v)", n, err)
	}
	if n, err := s.SweepDeadBridges(ctx, "two"); err != nil || n != 2 {
		t.Fatalf("bridge two swept %d (%v), want 2", n, err)
	}
	if h := hub("gpu-stays"); h.Connected || !h.BridgeDead {
		t.Fatalf("swept hub: %+v", h)
	}
	// gpu-moves reconnects through bridge two; then bridge one beats again.
	connect("gpu-moves", "two")
	dead, err := s.BridgeBeat(ctx, "one", "b-one")
	if err != nil || !dead {
		t.Fatalf("bridge one's beat after its silence: dead %v, %v; want told it was dead", dead, err)
	}
	if _, err := s.ReclaimHubs(ctx, "one", []string{"gpu-stays", "gpu-moves"}); err != nil {
		t.Fatal(err)
	}
	if h := hub("gpu-stays"); !h.Connected || h.BridgeDead {
		t.Errorf("reclaimed hub: %+v", h)
	}
	if h := hub("gpu-moves"); !h.Connected || h.BridgeInstance != "two" {
		t.Errorf("moved hub taken back by its old bridge: %+v", h)
	}
	// A clean stop takes the stopped bridge's hubs offline at once.
	if err := s.BridgeStopped(ctx, "two"); err != nil {
		t.Fatal(err)
	}
	if h := hub("gpu-two"); h.Connected {
		t.Errorf("hub of a stopped bridge: %+v", h)
	}
	bs, err := s.Bridges(ctx)
	if err != nil || len(bs) != 2 {
		t.Fatalf("bridges %+v %v", bs, err)
	}
	for _, b := range bs {
		if b.Dead != (b.Instance == "two") {
			t.Errorf("bridge %s dead %v", b.Instance, b.Dead)
		}
	}
}

// A rolling upgrade: a hub registered by a new bridge reconnects through
// a bridge that predates liveness rows, whose registration sets neither the
// instance nor the features. The new bridge's later death must not take the
// hub offline (it is on the older bridge now, judged by its age), and the
// features the hub said through the new bridge no longer count.
func TestAnOlderBridgesRegistrationIsNotJudgedByANewOnesLiveness(t *testing.T) {
	s := harness.Store(t)
	ctx := context.Background()
	harness.EnsureAccount(t, s, "acme")
	if err := s.RegisterCert(ctx, "gpu-roll", "acme", "serial-roll", time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.BridgeBeat(ctx, "new", "b-new"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.HubConnected(ctx, store.Hub{DeviceID: "gpu-roll", Bridge: "b-new", BridgeInstance: "new", Features: []string{"step-heartbeat"}}); err != nil {
		t.Fatal(err)
	}
	// The older bridge's HubConnected, as it was before liveness rows.
	if _, err := s.Pool.Exec(ctx, `INSERT INTO hubs (device_id, version, hostname, bridge, connected, connected_at, last_seen)
		VALUES ($1, $2, $3, $4, true, now(), now())
		ON CONFLICT (device_id) DO UPDATE SET version = excluded.version, hostname = excluded.hostname,
			bridge = excluded.bridge, connected = true, connected_at = now(), last_seen = now(),
			reconnects = hubs.reconnects + 1`, "gpu-roll", "v0", "h", "b-old"); err != nil {
		t.Fatal(err)
	}
	if err := s.BridgeStopped(ctx, "new"); err != nil {
		t.Fatal(err)
	}
	if n, err := s.SweepDeadBridges(ctx, "other"); err != nil || n != 0 {
		t.Fatalf("swept %d (%v) hubs the older bridge holds", n, err)
	}
	h, err := s.HubByID(ctx, "gpu-roll")
	if err != nil {
		t.Fatal(err)
	}
	if !h.Connected || h.BridgeDead || h.BridgeInstance != "" || len(h.Features) != 0 {
		t.Fatalf("hub on the older bridge: connected %v, bridge dead %v, instance %q, features %v; want connected, judged by its age, no features",
			h.Connected, h.BridgeDead, h.BridgeInstance, h.Features)
	}
	// Swept while on a new bridge that died, then registered by an older
	// one: connected there, and not reported lost to the dead bridge.
	if _, err := s.BridgeBeat(ctx, "new2", "b-new2"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.HubConnected(ctx, store.Hub{DeviceID: "gpu-roll", Bridge: "b-new2", BridgeInstance: "new2"}); err != nil {
		t.Fatal(err)
	}
	if err := s.BridgeStopped(ctx, "new2"); err != nil {
		t.Fatal(err)
	}
	if n, err := s.SweepDeadBridges(ctx, "other"); err != nil || n != 1 {
		t.Fatalf("swept %d (%v), want the hub of the stopped bridge", n, err)
	}
	if _, err := s.Pool.Exec(ctx, `UPDATE hubs SET bridge = 'b-old', connected = true, connected_at = now() WHERE device_id = 'gpu-roll'`); err != nil {
		t.Fatal(err)
	}
	if h, err := s.HubByID(ctx, "gpu-roll"); err != nil || !h.Connected || h.BridgeDead {
		t.Fatalf("hub back on the older bridge after a sweep: %+v %v", h, err)
	}
}

// TestAHubThatDisconnectsAfterASweepIsNotBlamedOnItsBridge: a hub swept as
// lost while its bridge stalled, whose link then ends on its own before the
// bridge takes it back, is offline because it disconnected, not because its
// bridge died: the bridge beats again, and says nothing of it.
func TestAHubThatDisconnectsAfterASweepIsNotBlamedOnItsBridge(t *testing.T) {
	s := harness.Store(t)
	ctx := context.Background()
	harness.EnsureAccount(t, s, "acme")
	stalled, survivor, device := harness.UniqueID("stalls"), harness.UniqueID("survives"), harness.UniqueID("gpu-leaves")
	for _, i := range []string{stalled, survivor} {
		if _, err := s.BridgeBeat(ctx, i, "b-"+i); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.RegisterCert(ctx, device, "acme", "serial-"+device, time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	at, _, err := s.HubConnected(ctx, store.Hub{DeviceID: device, Bridge: "b-" + stalled, BridgeInstance: stalled})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Pool.Exec(ctx, `UPDATE bridge_beats SET last_beat = now() - $2::interval WHERE instance = $1`,
		stalled, (store.BridgeStale + time.Second).String()); err != nil {
		t.Fatal(err)
	}
	if n, err := s.SweepDeadBridges(ctx, survivor); err != nil || n != 1 {
		t.Fatalf("the survivor swept %d (%v), want the stalled bridge's hub", n, err)
	}
	if dead, err := s.BridgeBeat(ctx, stalled, "b-"+stalled); err != nil || !dead {
		t.Fatalf("the stalled bridge's beat: dead %v, %v; want told it was dead", dead, err)
	}
	// The end of a connection older than the swept one changes nothing:
	// the bridge still takes the hub back.
	if err := s.HubDisconnected(ctx, device, at.Add(-time.Second)); err != nil {
		t.Fatal(err)
	}
	if lost, err := s.LostHubs(ctx, stalled); err != nil || len(lost) != 1 || lost[0] != device {
		t.Errorf("the bridge's hubs marked lost after an older connection ended: %v (%v), want %s", lost, err, device)
	}
	// The hub's link ends before the bridge reclaims it.
	if err := s.HubDisconnected(ctx, device, at); err != nil {
		t.Fatal(err)
	}
	h, err := s.HubByID(ctx, device)
	if err != nil {
		t.Fatal(err)
	}
	if h.Connected || h.BridgeDead {
		t.Errorf("hub disconnected after a sweep, its bridge beating: connected %v, bridge dead %v; want offline, bridge alive", h.Connected, h.BridgeDead)
	}
	if lost, err := s.LostHubs(ctx, stalled); err != nil || len(lost) != 0 {
		t.Errorf("the bridge's hubs marked lost: %v (%v), want none: it holds no link to take back", lost, err)
	}
}

// TestARegistrationIsDatedAfterTheLastOneWritten: a hub's registration is
// dated after the one before it in the registry, even when that one's date
// is later than the database's clock now (a registration whose transaction
// began later but was written first, or a clock stepped back), so the end
// of the connection it replaces does not mark the hub offline.
func TestARegistrationIsDatedAfterTheLastOneWritten(t *testing.T) {
	s := harness.Store(t)
	ctx := context.Background()
	harness.EnsureAccount(t, s, "acme")
	device := harness.UniqueID("gpu-dated")
	if err := s.RegisterCert(ctx, device, "acme", "serial-"+device, time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	first, _, err := s.HubConnected(ctx, store.Hub{DeviceID: device, Bridge: "b-one", BridgeInstance: "one"})
	if err != nil {
		t.Fatal(err)
	}
	var ahead time.Time
	if err := s.Pool.QueryRow(ctx, `UPDATE hubs SET connected_at = connected_at + interval '1 hour', instance_at = connected_at + interval '1 hour'
		WHERE device_id = $1 RETURNING connected_at`, device).Scan(&ahead); err != nil {
		t.Fatal(err)
	}
	second, seen, err := s.HubConnected(ctx, store.Hub{DeviceID: device, Bridge: "b-one", BridgeInstance: "one"})
	if err != nil || !seen {
		t.Fatalf("second registration: seen %v, %v", seen, err)
	}
	if !second.After(ahead) {
		t.Errorf("second registration dated %v, not after the one before it (%v; the first %v)", second, ahead, first)
	}
	// The replaced connection ends.
	if err := s.HubDisconnected(ctx, device, ahead); err != nil {
		t.Fatal(err)
	}
	if h, err := s.HubByID(ctx, device); err != nil || !h.Connected || h.BridgeDead {
		t.Errorf("after the replaced connection ended: connected %v, bridge dead %v (%v); want the newer one's hub online", h.Connected, h.BridgeDead, err)
	}
	if err := s.HubDisconnected(ctx, device, second); err != nil {
		t.Fatal(err)
	}
	if h, err := s.HubByID(ctx, device); err != nil || h.Connected {
		t.Errorf("after the newer connection ended: connected %v (%v), want offline", h.Connected, err)
	}
}
