package integration

import (
	"testing"
	"time"

	"github.com/superinstance/mesh/hub/agent"
	"github.com/superinstance/mesh/internal/pki"
	"github.com/superinstance/mesh/internal/simulator"
	"github.com/superinstance/mesh/test/harness"
	"github.com/superinstance/mesh/workers"
	"github.com/superinstance/mesh/workflows"
)

// TestConsensusOnAHubThroughTheBridge runs a hub as si hub does, holding
// only its device certificate: its worker reaches Temporal through the
// bridge's proxy, and a consensus placed on it runs every inference there.
func TestConsensusOnAHubThroughTheBridge(t *testing.T) {
	for _, proto := range []string{agent.ProtocolQUIC, agent.ProtocolTCP} {
		t.Run(proto, func(t *testing.T) { consensusOnAHub(t, proto) })
	}
}

// consensusOnAHub runs the test with the hub's link on proto: over the TCP
// fallback the worker's gRPC streams ride yamux streams as they ride QUIC's.
func consensusOnAHub(t *testing.T, proto string) {
	m := harness.StartMesh(t, simulator.Options{})
	p := harness.NewPKI(t)
	b := harness.StartBridge(t, m, p, "127.0.0.1:0")
	hub := harness.UniqueID("gpu")
	tc := p.Enroll(t, m.Store, pki.Identity{DeviceID: hub, Account: "acme"}, time.Hour)
	n := harness.StartHubNode(t, m, b.Addr().String(), tc, hub, harness.FixedVitals(20, 50), func(o *agent.Options) { o.Protocol = proto })
	if got := n.Agent.Status().Transport; got != proto {
		t.Fatalf("the hub's link is on %q, want %q", got, proto)
	}
	_, st, err := ask(t, m, workflows.ConsensusInput{Prompt: "Q [sim:agree]", Account: "acme", HubQueue: workers.HubQueue(hub)}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if st.Placement != workers.HubQueue(hub) {
		t.Fatalf("placement %s (%s), want the hub", st.Placement, st.PlacementNote)
	}
	if len(st.Usage) == 0 {
		t.Fatal("no inference recorded")
	}
	for _, u := range st.Usage {
		if u.RanOn != workers.HubQueue(hub) {
			t.Fatalf("%s ran on %s, want the hub", u.Role, u.RanOn)
		}
	}
	// The SDK's worker, start to stop, needed nothing the proxy refuses.
	n.Stop()
	if r := b.Proxy.Refused(); len(r) > 0 {
		t.Fatalf("the proxy refused the hub's own worker: %v", r)
	}
}
