package bridge_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/superinstance/mesh/hub/bridge"
	"github.com/superinstance/mesh/hub/wire"
	"github.com/superinstance/mesh/internal/pki"
	"github.com/superinstance/mesh/internal/simulator"
	"github.com/superinstance/mesh/internal/store"
	meshv1 "github.com/superinstance/mesh/proto/meshv1"
	"github.com/superinstance/mesh/test/harness"
)

// countingLoRAs counts the adapter lookups pre-warm signals cause.
type countingLoRAs struct {
	n    atomic.Int64
	next bridge.LoRAChecker
}

func (c *countingLoRAs) LoRAFor(ctx context.Context, account, id string) (store.LoRA, error) {
	c.n.Add(1)
	return c.next.LoRAFor(ctx, account, id)
}

// TestPrewarmFloodIsDroppedBeforeAnyLookup is the attacker's test: a hub
// holding only its certificate sends 1,000 pre-warm signals, each naming
// the most adapters a signal may. The bridge acts on one a minute per
// device, so the registry sees one signal's lookups (two, should the flood
// straddle a minute), not 8,000.
func TestPrewarmFloodIsDroppedBeforeAnyLookup(t *testing.T) {
	m := harness.StartMesh(t, simulator.Options{})
	p := harness.NewPKI(t)
	loras := &countingLoRAs{next: m.Store}
	b := harness.StartBridge(t, m, p, "127.0.0.1:0", func(o *bridge.Options) {
		o.Prewarmer = &bridge.Temporal{Client: m.Client, LoRAs: loras}
	})
	dev := harness.UniqueID("gpu-flood")
	conn := dial(t, b.Addr().String(), p.Enroll(t, m.Store, pki.Identity{DeviceID: dev, Account: "acme"}, time.Hour))
	s, err := conn.OpenStreamSync(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Write([]byte{bridge.StreamControl}); err != nil {
		t.Fatal(err)
	}
	if err := wire.Write(s, &meshv1.HubMessage{Body: &meshv1.HubMessage_Hello{Hello: &meshv1.Hello{}}}); err != nil {
		t.Fatal(err)
	}
	r := wire.NewReader(s)
	var ack meshv1.BridgeMessage
	if err := r.Read(&ack); err != nil || ack.GetHelloAck() == nil {
		t.Fatalf("hello: %v, %v", &ack, err)
	}
	var named []string
	for i := range wire.MaxPrewarmLoRAs {
		named = append(named, fmt.Sprintf("lora-flood-%d", i))
	}
	for range 1000 {
		sig := &meshv1.PrewarmSignal{Reason: "gpu_load", GpuLoad: 0.99, SentUnixNano: time.Now().UnixNano(), Loras: named}
		if err := wire.Write(s, &meshv1.HubMessage{Body: &meshv1.HubMessage_Prewarm{Prewarm: sig}}); err != nil {
			t.Fatal(err)
		}
	}
	// The control stream is read in order: the heartbeat's ack comes after
	// every signal before it was handled.
	if err := wire.Write(s, &meshv1.HubMessage{Body: &meshv1.HubMessage_Heartbeat{Heartbeat: &meshv1.Heartbeat{Seq: 1}}}); err != nil {
		t.Fatal(err)
	}
	_ = s.SetReadDeadline(time.Now().Add(2 * time.Minute))
	for {
		var msg meshv1.BridgeMessage
		if err := r.Read(&msg); err != nil {
			t.Fatalf("no heartbeat ack after the flood: %v", err)
		}
		if msg.GetHeartbeatAck().GetSeq() == 1 {
			break
		}
	}
	if n := loras.n.Load(); n < wire.MaxPrewarmLoRAs || n > 2*wire.MaxPrewarmLoRAs {
		t.Fatalf("1,000 pre-warm signals caused %d adapter lookups, want one signal's %d (two at a minute's turn)", n, wire.MaxPrewarmLoRAs)
	}
}
