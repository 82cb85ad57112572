package bridge_test

import (
	"bytes"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/superinstance/mesh/hub/agent"
	"github.com/superinstance/mesh/hub/bridge"
	"github.com/superinstance/mesh/internal/pki"
	"github.com/superinstance/mesh/internal/simulator"
	meshv1 "github.com/superinstance/mesh/proto/meshv1"
	"github.com/superinstance/mesh/test/harness"
)

// spike is a hub's vitals: cool until hot is set, then GPU load 95%.
func spike(hot *atomic.Bool) func() *meshv1.HardwareVitals {
	cool, busy := harness.FixedVitals(20, 50), harness.FixedVitals(95, 60)
	return func() *meshv1.HardwareVitals {
		if hot.Load() {
			return busy()
		}
		return cool()
	}
}

// escalateWith sends one escalation naming adapter and returns its final
// response (a result, or the error of a run the cloud refused).
func escalateWith(t *testing.T, a *agent.Agent, adapter string) *meshv1.EscalationResponse {
	t.Helper()
	_, out, err := a.Escalate(&meshv1.EscalationRequest{Prompt: "reset my password [sim:agree]", Lora: adapter, MaxRounds: 1})
	if err != nil {
		t.Fatal(err)
	}
	timeout := time.After(time.Minute)
	for {
		select {
		case r, ok := <-out:
			if !ok {
				t.Fatal("responses ended without a final one")
			}
			if r.GetProgress() == nil {
				return r
			}
		case <-timeout:
			t.Fatalf("no answer within a minute to an escalation with %s", adapter)
		}
	}
}

// TestPrewarmWarmsTheHubsRecentAdapters: a hub that escalated with two
// adapters, both since gone cold, runs hot; its signal names both, the
// cloud loads both, and the next escalation finds its adapter loaded.
func TestPrewarmWarmsTheHubsRecentAdapters(t *testing.T) {
	m := harness.StartMesh(t, simulator.Options{LoadDelay: 50 * time.Millisecond}, harness.WithAdapters(t, 4))
	m.Account(t, "alice")
	support := harness.PushAdapter(t, m, "alice", "", "support")
	billing := harness.PushAdapter(t, m, "alice", "", "billing")
	p := harness.NewPKI(t)
	b := harness.StartBridge(t, m, p, "127.0.0.1:0")
	dev := harness.UniqueID("gpu-warm")
	c := p.Enroll(t, m.Store, pki.Identity{DeviceID: dev, Account: "alice"}, time.Hour)
	var hot atomic.Bool
	a := harness.StartAgent(t, agent.Options{Bridge: b.Addr().String(), TLS: c, DeviceID: dev, Vitals: spike(&hot),
		Prewarm: agent.Prewarm{MinInterval: time.Hour}})
	for _, l := range []string{billing, support} {
		if r := escalateWith(t, a, l); r.GetResult() == nil {
			t.Fatalf("escalation with %s: %v", l, r)
		}
		harness.Cold(t, m, l)
	}
	loads := m.Adapters.Cache.Stats().Loads

	since := time.Now()
	hot.Store(true)
	res, _ := harness.Warmup(t, m, dev, since, time.Minute)
	if !slices.Equal(res.Loaded, []string{support, billing}) {
		t.Fatalf("warm-up loaded %v, want the latest escalation's %s then %s", res.Loaded, support, billing)
	}
	if got := m.Sim.LoadedLoRAs(); !slices.Contains(got, support) || !slices.Contains(got, billing) {
		t.Fatalf("the backend has %v loaded", got)
	}
	if got := m.Adapters.Cache.Stats().Loads - loads; got != 2 {
		t.Fatalf("warm-up made %d loads, want 2", got)
	}
	// The escalation after the spike finds the adapter loaded: no second load.
	if r := escalateWith(t, a, support); r.GetResult() == nil {
		t.Fatalf("escalation after the warm-up: %v", r)
	}
	if got := m.Adapters.Cache.Stats().Loads - loads; got != 2 {
		t.Fatalf("the escalation after the warm-up loaded its adapter again (%d loads in all)", got)
	}
}

// TestPrewarmRefusesAnotherAccountsAdapter is the attacker's test: bob's
// hub escalates with alice's adapter (refused, as any escalation naming it
// is), then with its own, and runs hot. Its signal names both; the cloud
// loads bob's, never alice's, and the bridge logs the refusal.
func TestPrewarmRefusesAnotherAccountsAdapter(t *testing.T) {
	m := harness.StartMesh(t, simulator.Options{}, harness.WithAdapters(t, 4))
	m.Account(t, "alice")
	m.Account(t, "bob")
	alices := harness.PushAdapter(t, m, "alice", "", "alices-secret")
	bobs := harness.PushAdapter(t, m, "bob", "", "bobs-own")
	logs := &syncBuffer{}
	p := harness.NewPKI(t)
	b := harness.StartBridge(t, m, p, "127.0.0.1:0", func(o *bridge.Options) {
		o.Logger = slog.New(slog.NewTextHandler(logs, nil))
	})
	dev := harness.UniqueID("gpu-bob")
	c := p.Enroll(t, m.Store, pki.Identity{DeviceID: dev, Account: "bob"}, time.Hour)
	var hot atomic.Bool
	a := harness.StartAgent(t, agent.Options{Bridge: b.Addr().String(), TLS: c, DeviceID: dev, Vitals: spike(&hot),
		Prewarm: agent.Prewarm{MinInterval: time.Hour}})
	if r := escalateWith(t, a, alices); r.GetError() == nil {
		t.Fatalf("bob's escalation with alice's adapter ran: %v", r)
	}
	if r := escalateWith(t, a, bobs); r.GetResult() == nil {
		t.Fatalf("bob's escalation with his own adapter: %v", r)
	}
	harness.Cold(t, m, bobs)
	if got := a.RecentLoRAs(); !slices.Equal(got, []string{bobs, alices}) {
		t.Fatalf("the hub's recent adapters are %v", got)
	}
	loads := m.Adapters.Cache.Stats().Loads

	since := time.Now()
	hot.Store(true)
	res, _ := harness.Warmup(t, m, dev, since, time.Minute)
	if !slices.Equal(res.Loaded, []string{bobs}) {
		t.Fatalf("bob's warm-up loaded %v, want only his own %s", res.Loaded, bobs)
	}
	if slices.Contains(m.Sim.LoadedLoRAs(), alices) {
		t.Fatalf("alice's adapter %s was loaded for bob's hub", alices)
	}
	if got := m.Adapters.Cache.Stats().Loads - loads; got != 1 {
		t.Fatalf("bob's warm-up made %d loads, want 1", got)
	}
	waitFor(t, 5*time.Second, "the refusal in the bridge's log", func() bool {
		for _, line := range strings.Split(logs.String(), "\n") {
			if strings.Contains(line, "pre-warm") && strings.Contains(line, alices) && strings.Contains(line, "account=bob") &&
				strings.Contains(line, "may not use") {
				return true
			}
		}
		return false
	})
	if strings.Contains(logs.String(), bobs) {
		t.Fatalf("the bridge logged bob's own adapter as refused:\n%s", logs.String())
	}
}

// syncBuffer is a bytes.Buffer the bridge's goroutines may log into.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
