package bridge_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/superinstance/mesh/hub/bridge"
	"github.com/superinstance/mesh/internal/store"
	"github.com/superinstance/mesh/test/harness"
)

// A bridge that stalled past store.BridgeStale has its hubs marked lost by
// a survivor's sweep while their links hold. If its first reclaim fails
// (the database blipped, the statement timed out), the next beat reclaims
// them: the hubs are not left offline for as long as the links stay up.
// A survivor's sweep that commits after a successful reclaim is undone by
// the next beat too.
func TestAFailedReclaimIsRetriedOnTheNextBeat(t *testing.T) {
	st := harness.Store(t)
	ctx := context.Background()
	harness.EnsureAccount(t, st, "acme-reclaim")
	a, survivor := harness.UniqueID("bridge-a"), harness.UniqueID("bridge-s")
	devs := []string{harness.UniqueID("gpu-r1"), harness.UniqueID("gpu-r2")}
	fail := 0
	var calls int
	b := bridge.NewLivenessForTest(st, a, devs, func(ctx context.Context, instance string, ids []string) (int64, error) {
		calls++
		if fail > 0 {
			fail--
			return 0, errors.New("reclaim: connection reset")
		}
		return st.ReclaimHubs(ctx, instance, ids)
	})
	b.BeatForTest(ctx)
	for _, d := range devs {
		if err := st.RegisterCert(ctx, d, "acme-reclaim", "serial-"+d, time.Now().Add(time.Hour)); err != nil {
			t.Fatal(err)
		}
		if _, _, err := st.HubConnected(ctx, store.Hub{DeviceID: d, Bridge: "b-" + a, BridgeInstance: a}); err != nil {
			t.Fatal(err)
		}
	}
	connected := func(want bool, when string) {
		t.Helper()
		for _, d := range devs {
			h, err := st.HubByID(ctx, d)
			if err != nil {
				t.Fatal(err)
			}
			if h.Connected != want || h.BridgeDead == want {
				t.Fatalf("%s: %s connected %v, bridge dead %v; want connected %v", when, d, h.Connected, h.BridgeDead, want)
			}
		}
	}
	stall := func() {
		t.Helper()
		if _, err := st.Pool.Exec(ctx, `UPDATE bridge_beats SET last_beat = now() - $2::interval WHERE instance = $1`,
			a, (store.BridgeStale + time.Second).String()); err != nil {
			t.Fatal(err)
		}
		if n, err := st.SweepDeadBridges(ctx, survivor); err != nil || n != int64(len(devs)) {
			t.Fatalf("the survivor swept %d (%v), want %d", n, err, len(devs))
		}
		connected(false, "swept")
	}
	stall()
	fail, calls = 1, 0
	b.BeatForTest(ctx) // the reclaim fails
	connected(false, "after the failed reclaim")
	b.BeatForTest(ctx)
	connected(true, "the beat after the failed reclaim")
	if calls < 2 {
		t.Fatalf("reclaim called %d times", calls)
	}
	// A sweep that lands after the bridge is alive again (it read the
	// stale beat before the bridge's next one committed): the next beat.
	if _, err := st.Pool.Exec(ctx, `UPDATE hubs SET connected = false, bridge_lost_at = now() WHERE device_id = ANY($1)`, devs); err != nil {
		t.Fatal(err)
	}
	b.BeatForTest(ctx)
	connected(true, "the beat after a late sweep")
}

// A beat of a bridge none of whose hubs was marked lost sends the registry
// none of its device ids: with thousands of hubs, a reclaim of every one
// each second would cost the bridge and the database in proportion to
// them. A hub marked lost that this bridge no longer holds is not taken
// back.
func TestABeatWithNoLostHubsSendsNoReclaim(t *testing.T) {
	st := harness.Store(t)
	ctx := context.Background()
	harness.EnsureAccount(t, st, "acme-noreclaim")
	a := harness.UniqueID("bridge-n")
	held, gone := harness.UniqueID("gpu-held"), harness.UniqueID("gpu-gone")
	var asked [][]string
	b := bridge.NewLivenessForTest(st, a, []string{held}, func(ctx context.Context, instance string, ids []string) (int64, error) {
		asked = append(asked, ids)
		return st.ReclaimHubs(ctx, instance, ids)
	})
	b.BeatForTest(ctx)
	for _, d := range []string{held, gone} {
		if err := st.RegisterCert(ctx, d, "acme-noreclaim", "serial-"+d, time.Now().Add(time.Hour)); err != nil {
			t.Fatal(err)
		}
		if _, _, err := st.HubConnected(ctx, store.Hub{DeviceID: d, Bridge: "b-" + a, BridgeInstance: a}); err != nil {
			t.Fatal(err)
		}
	}
	for range 3 {
		b.BeatForTest(ctx)
	}
	if len(asked) != 0 {
		t.Fatalf("beats with no hub lost sent reclaims of %v", asked)
	}
	// Both marked lost: only the hub this bridge holds is asked for, and taken back.
	if _, err := st.Pool.Exec(ctx, `UPDATE hubs SET connected = false, bridge_lost_at = now() WHERE device_id = ANY($1)`, []string{held, gone}); err != nil {
		t.Fatal(err)
	}
	b.BeatForTest(ctx)
	if len(asked) != 1 || len(asked[0]) != 1 || asked[0][0] != held {
		t.Fatalf("reclaims asked %v, want one of [%s]", asked, held)
	}
	for d, want := range map[string]bool{held: true, gone: false} {
		h, err := st.HubByID(ctx, d)
		if err != nil {
			t.Fatal(err)
		}
		if h.Connected != want {
			t.Fatalf("%s connected %v after the beat, want %v", d, h.Connected, want)
		}
	}
}
