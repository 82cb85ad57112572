package e2e

import (
	"context"
	"encoding/json"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/superinstance/mesh/activities"
	"github.com/superinstance/mesh/hub"
	"github.com/superinstance/mesh/hub/agent"
	"github.com/superinstance/mesh/hub/bridge"
	"github.com/superinstance/mesh/internal/pki"
	"github.com/superinstance/mesh/internal/simulator"
	"github.com/superinstance/mesh/internal/store"
	"github.com/superinstance/mesh/test/harness"
)

// TestDeadBridgesHubsOfflineWithinSeconds: two bridges; one dies without a
// word (its packets blackholed and its database connections gone, as with
// SIGKILL: it closes no link and writes nothing). `si hubs` shows the hub
// it held offline within a few seconds, well before the hub's own 15 s
// silence bound, while the survivor's hub stays online; placement does not
// choose the dead bridge's hub though its worker still polls; a hub that
// redials the survivor is online again there.
func TestDeadBridgesHubsOfflineWithinSeconds(t *testing.T) {
	si, _ := binaries(t)
	m := harness.StartMesh(t, simulator.Options{})
	p := harness.NewPKI(t)
	// The bridge that dies has database connections of its own, so that
	// killing them does not touch the survivor's.
	doomedStore, err := store.Open(context.Background(), m.DatabaseURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(doomedStore.Close)
	doomed := harness.StartBridge(t, m, p, "127.0.0.1:0", func(o *bridge.Options) {
		o.Store, o.TLS, o.Name, o.NoTCP = doomedStore, p.ServerTLS(t, doomedStore), "bridge-doomed", true
	})
	survivor := harness.StartBridge(t, m, p, "127.0.0.1:0", func(o *bridge.Options) { o.Name = "bridge-survivor" })
	lb := harness.StartBalancer(t, doomed.Addr().String())

	enroll := func(device, account string) *agent.Options {
		return &agent.Options{DeviceID: device, TLS: p.Enroll(t, m.Store, pki.Identity{DeviceID: device, Account: account}, time.Hour),
			Interval: 200 * time.Millisecond, QUICTimeout: 500 * time.Millisecond}
	}
	// stranded has only the doomed bridge; mover has the survivor next;
	// steady is on the survivor from the start.
	stranded, mover, steady := enroll("gpu-stranded", "acme-stranded"), enroll("gpu-mover", "acme-mover"), enroll("gpu-steady", "acme-steady")
	stranded.Bridge = lb.Addr()
	mover.Bridge = lb.Addr() + "," + survivor.Addr().String()
	steady.Bridge = survivor.Addr().String()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for _, o := range []*agent.Options{stranded, mover, steady} {
		if err := harness.StartAgent(t, *o).WaitConnected(ctx); err != nil {
			t.Fatal(err)
		}
	}
	// The stranded hub's worker polls Temporal directly: its poller stays
	// live after its bridge dies, as a hub's does for up to a minute.
	m.StartHub(t, "gpu-stranded")

	type row struct {
		DeviceID   string `json:"device_id"`
		Link       string `json:"link"`
		Bridge     string `json:"bridge"`
		Health     string `json:"health"`
		BridgeDead bool   `json:"bridge_dead"`
	}
	hubs := func() map[string]row {
		t.Helper()
		cmd := exec.CommandContext(ctx, si, "hubs", "--json", "--database-url", m.DatabaseURL)
		cmd.Env = cleanEnv()
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("si hubs --json: %v\n%s", err, out)
		}
		var rows []row
		if err := json.Unmarshal(out, &rows); err != nil {
			t.Fatalf("si hubs --json: %v\n%s", err, out)
		}
		byID := map[string]row{}
		for _, r := range rows {
			byID[r.DeviceID] = r
		}
		return byID
	}
	waitRows := func(what string, limit time.Duration, ok func(map[string]row) bool) (map[string]row, time.Duration) {
		t.Helper()
		start := time.Now()
		for {
			rows := hubs()
			if ok(rows) {
				return rows, time.Since(start)
			}
			if time.Since(start) > limit {
				t.Fatalf("after %s, still waiting for %s: %+v", limit, what, rows)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	rows, _ := waitRows("every hub online", 30*time.Second, func(r map[string]row) bool {
		return r["gpu-stranded"].Link == "online" && r["gpu-mover"].Link == "online" && r["gpu-steady"].Link == "online"
	})
	if rows["gpu-stranded"].Bridge != "bridge-doomed" || rows["gpu-steady"].Bridge != "bridge-survivor" {
		t.Fatalf("bridges before the kill: %+v", rows)
	}
	place := &activities.Placement{Temporal: m.Client, Accounts: m.Store, Hubs: m.Store}
	if ch, err := place.PickHub(ctx, activities.PickHubInput{Account: "acme-stranded"}); err != nil || ch.Queue != hub.Queue("gpu-stranded") {
		t.Fatalf("placement before the kill: %+v %v", ch, err)
	}

	// The kill: packets vanish, and the bridge can write nothing more.
	lb.Blackhole(true)
	doomedStore.Close()
	killed := time.Now()

	rows, took := waitRows("the dead bridge's hub offline", 12*time.Second, func(r map[string]row) bool { return r["gpu-stranded"].Link == "offline" })
	t.Logf("the dead bridge's hub offline %s after the kill (%s)", took.Round(time.Millisecond), rows["gpu-stranded"].Health)
	// Its own heartbeat age (15 s) would take far longer: the bridge's
	// silence is what took it offline.
	if bound := store.BridgeStale + 4*time.Second; took > bound {
		t.Fatalf("the dead bridge's hub went offline %s after the kill, want within %s", took, bound)
	}
	if r := rows["gpu-steady"]; r.Link != "online" {
		t.Fatalf("the survivor's hub: %+v", r)
	}
	if r := rows["gpu-stranded"]; !strings.Contains(r.Health, "bridge-doomed stopped") {
		t.Errorf("the dead bridge's hub's health says %q, want its bridge named", r.Health)
	}
	// Placement agrees, though the hub's worker still polls its queue.
	ch, err := place.PickHub(ctx, activities.PickHubInput{Account: "acme-stranded"})
	if err != nil || ch.Queue != "" {
		t.Fatalf("placement after the kill chose %+v (%v), want the cloud", ch, err)
	}
	if st, err := place.HubAvailable(ctx, hub.Queue("gpu-stranded")); err != nil || st.Healthy {
		t.Fatalf("the dead bridge's hub available: %+v %v", st, err)
	}

	// The hub that had another bridge to go to is online there.
	waitRows("the moved hub online on the survivor", 10*time.Second, func(r map[string]row) bool {
		return r["gpu-mover"].Link == "online" && r["gpu-mover"].Bridge == "bridge-survivor"
	})
	t.Logf("the moved hub online on the survivor %s after the kill", time.Since(killed).Round(time.Millisecond))

	// The survivor's sweep writes it down in the registry's row too.
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		var flag bool
		if err := m.Store.Pool.QueryRow(ctx, `SELECT connected FROM hubs WHERE device_id = 'gpu-stranded'`).Scan(&flag); err != nil {
			t.Fatal(err)
		}
		if !flag {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the dead bridge's hub is still connected in the registry's row 5 s after it went offline")
		}
	}
}
