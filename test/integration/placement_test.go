package integration

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/superinstance/mesh/internal/pki"
	"github.com/superinstance/mesh/internal/simulator"
	meshv1 "github.com/superinstance/mesh/proto/meshv1"
	"github.com/superinstance/mesh/test/harness"
	"github.com/superinstance/mesh/workers"
	"github.com/superinstance/mesh/workflows"
)

// Real hubs through a real bridge: a run of acme goes to acme's least
// loaded hub, follows the vitals when they change, and never to evil's
// idle hub, even when the run names it.
func TestPlacementFollowsTheAccountsHubVitals(t *testing.T) {
	m := harness.StartMesh(t, simulator.Options{})
	p := harness.NewPKI(t)
	b := harness.StartBridge(t, m, p, "127.0.0.1:0")
	type gpu struct{ util atomic.Uint32 }
	hubs := map[string]*gpu{}
	start := func(account, device string, util uint32) {
		g := &gpu{}
		g.util.Store(util)
		hubs[device] = g
		tc := p.Enroll(t, m.Store, pki.Identity{DeviceID: device, Account: account}, time.Hour)
		harness.StartHubNode(t, m, b.Addr().String(), tc, device, func() *meshv1.HardwareVitals {
			return harness.FixedVitals(g.util.Load(), 50)()
		})
	}
	a, bb, evil := harness.UniqueID("acme-a"), harness.UniqueID("acme-b"), harness.UniqueID("evil")
	start("acme", a, 60)
	start("acme", bb, 20)
	start("evil", evil, 0)
	// waitLoads waits until the registry shows every hub's load.
	waitLoads := func() {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for {
			ok := true
			for id, g := range hubs {
				h, err := m.Store.HubByID(context.Background(), id)
				if err != nil || int(h.GPULoad*100+0.5) != int(g.util.Load()) {
					ok = false
				}
			}
			if ok {
				return
			}
			if time.Now().After(deadline) {
				t.Fatal("the registry never showed the hubs' vitals")
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	runOn := func(want string) {
		t.Helper()
		_, st, err := ask(t, m, workflows.ConsensusInput{Prompt: "Q [sim:agree]", Account: "acme", MaxRounds: 1,
			HubQueue: workers.HubQueue(evil)}, nil)
		if err != nil {
			t.Fatal(err)
		}
		for _, u := range st.Usage {
			if u.RanOn != workers.HubQueue(want) {
				t.Fatalf("%s ran on %s, want %s (%s)", u.Role, u.RanOn, want, st.PlacementNote)
			}
		}
		if st.Placement != workers.HubQueue(want) || st.PlacementNote == "" {
			t.Fatalf("state placement %s (%s), want %s with a reason", st.Placement, st.PlacementNote, want)
		}
	}
	waitLoads()
	runOn(bb)
	hubs[a].util.Store(10)
	hubs[bb].util.Store(90)
	waitLoads()
	runOn(a)
}
