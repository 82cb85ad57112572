package activities_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/superinstance/mesh/activities"
	"github.com/superinstance/mesh/hub/wire"
	"github.com/superinstance/mesh/internal/store"
	"github.com/superinstance/mesh/test/harness"
	"github.com/superinstance/mesh/workers"
)

// A hub's hello decides whether its steps get a heartbeat timeout and its
// vote samples: one that names the step-heartbeat and sampling features
// does; an older one, which names none, does not (its steps never
// heartbeat, and it ignores a call's temperature and seed); nor does a
// worker the registry does not know, whose code placement cannot vouch for.
func TestPlacementSaysWhichHubsDoNotHeartbeat(t *testing.T) {
	st := harness.Store(t)
	ctx := context.Background()
	connect := func(account, device string, features []string) {
		t.Helper()
		harness.EnsureAccount(t, st, account)
		if err := st.RegisterCert(ctx, device, account, "serial-"+device, time.Now().Add(time.Hour)); err != nil {
			t.Fatal(err)
		}
		if _, _, err := st.HubConnected(ctx, store.Hub{DeviceID: device, Version: "v", Features: features}); err != nil {
			t.Fatal(err)
		}
		if err := st.SaveHeartbeats(ctx, []store.HubBeat{{DeviceID: device, At: time.Now(), GPUCount: 1, GPULoad: 0.1, GPUTempC: 50}}); err != nil {
			t.Fatal(err)
		}
	}
	connect("acme-old", "gpu-old", nil)
	connect("acme-new", "gpu-new", wire.HubFeatures())
	connect("acme-mid", "gpu-mid", []string{wire.FeatureStepHeartbeat})
	p := &activities.Placement{Temporal: livePollers{}, Hubs: st, Accounts: st}
	for _, tc := range []struct {
		account, device      string
		heartbeats, sampling bool
	}{{"acme-old", "gpu-old", false, false}, {"acme-new", "gpu-new", true, true}, {"acme-mid", "gpu-mid", true, false}} {
		ch, err := p.PickHub(ctx, activities.PickHubInput{Account: tc.account})
		if err != nil || ch.Queue != workers.HubQueue(tc.device) || ch.Heartbeats != tc.heartbeats || ch.Sampling != tc.sampling {
			t.Errorf("%s: picked %+v (%v), want %s with Heartbeats %v Sampling %v", tc.device, ch, err, workers.HubQueue(tc.device), tc.heartbeats, tc.sampling)
		}
		if !tc.heartbeats && !strings.Contains(ch.Note, "does not heartbeat") {
			t.Errorf("%s: the note %q does not say why its steps have no heartbeat timeout", tc.device, ch.Note)
		}
		hs, err := p.HubAvailable(ctx, workers.HubQueue(tc.device))
		if err != nil || !hs.Healthy || hs.Heartbeats != tc.heartbeats || hs.Sampling != tc.sampling {
			t.Errorf("%s: available %+v (%v), want healthy with Heartbeats %v Sampling %v", tc.device, hs, err, tc.heartbeats, tc.sampling)
		}
		// A vote's sample is placed only on a hub that samples.
		ch, err = p.PickHub(ctx, activities.PickHubInput{Account: tc.account, Sampling: true})
		if want := map[bool]string{true: workers.HubQueue(tc.device), false: ""}[tc.sampling]; err != nil || ch.Queue != want {
			t.Errorf("%s: a sample picked %+v (%v), want queue %q", tc.device, ch, err, want)
		}
		if !tc.sampling && !strings.Contains(ch.Note, "ignores temperature and seed") {
			t.Errorf("%s: the note %q does not say why a sample runs in the cloud", tc.device, ch.Note)
		}
	}
	// A queue the registry does not know: the operator's worker.
	hs, err := p.HubAvailable(ctx, workers.HubQueue("operator-gpu"))
	if err != nil || !hs.Healthy || hs.Heartbeats || hs.Sampling {
		t.Errorf("unregistered worker: %+v (%v), want healthy with no heartbeat timeout and no samples", hs, err)
	}
}

// A hub registered on a bridge process that stops beating is offline for
// placement within store.BridgeStale, though its row still says connected
// and its heartbeat is fresh; it is a candidate again once it registers on
// a live bridge.
func TestPlacementSkipsHubsOfADeadBridge(t *testing.T) {
	st := harness.Store(t)
	ctx := context.Background()
	hubWith(t, st, "acme", "gpu-a", 0.1)
	if _, err := st.BridgeBeat(ctx, "instance-dead", "bridge-1"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := st.HubConnected(ctx, store.Hub{DeviceID: "gpu-a", Bridge: "bridge-1", BridgeInstance: "instance-dead", Features: wire.HubFeatures()}); err != nil {
		t.Fatal(err)
	}
	p := &activities.Placement{Temporal: livePollers{}, Hubs: st, Accounts: st}
	if ch, err := p.PickHub(ctx, activities.PickHubInput{Account: "acme"}); err != nil || ch.Queue != "hub.gpu-a" {
		t.Fatalf("with its bridge alive: %+v %v", ch, err)
	}
	// The bridge's last beat ages past the stale bound (as the database's
	// clock sees it); the hub keeps beating through nothing, its row untouched.
	if _, err := st.Pool.Exec(ctx, `UPDATE bridge_beats SET last_beat = now() - interval '4 seconds' WHERE instance = 'instance-dead'`); err != nil {
		t.Fatal(err)
	}
	if err := st.SaveHeartbeats(ctx, []store.HubBeat{{DeviceID: "gpu-a", At: time.Now(), GPUCount: 1, GPULoad: 0.1}}); err != nil {
		t.Fatal(err)
	}
	ch, err := p.PickHub(ctx, activities.PickHubInput{Account: "acme"})
	if err != nil || ch.Queue != "" {
		t.Fatalf("with its bridge dead: picked %+v (%v), want the cloud", ch, err)
	}
	hs, err := p.HubAvailable(ctx, "hub.gpu-a")
	if err != nil || hs.Healthy || !strings.Contains(hs.Reason, "bridge-1 stopped") {
		t.Fatalf("with its bridge dead: %+v (%v), want unavailable naming its bridge", hs, err)
	}
	if h, err := st.PreferredHub(ctx, "acme"); err == nil {
		t.Fatalf("preferred hub %s with its bridge dead", h.DeviceID)
	}
	// Another bridge's sweep writes it down; the hub reconnects there.
	if n, err := st.SweepDeadBridges(ctx, "instance-live"); err != nil || n != 1 {
		t.Fatalf("sweep marked %d (%v), want 1", n, err)
	}
	if _, err := st.BridgeBeat(ctx, "instance-live", "bridge-2"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := st.HubConnected(ctx, store.Hub{DeviceID: "gpu-a", Bridge: "bridge-2", BridgeInstance: "instance-live", Features: wire.HubFeatures()}); err != nil {
		t.Fatal(err)
	}
	if ch, err := p.PickHub(ctx, activities.PickHubInput{Account: "acme"}); err != nil || ch.Queue != "hub.gpu-a" {
		t.Fatalf("reconnected to a live bridge: %+v %v", ch, err)
	}
	// A bridge that stops cleanly takes its hubs offline at once.
	if err := st.BridgeStopped(ctx, "instance-live"); err != nil {
		t.Fatal(err)
	}
	if ch, err := p.PickHub(ctx, activities.PickHubInput{Account: "acme"}); err != nil || ch.Queue != "" {
		t.Fatalf("its bridge stopped: %+v %v", ch, err)
	}
}
