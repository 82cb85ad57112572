package bench

import (
	"context"
	"fmt"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/superinstance/mesh/hub/agent"
	"github.com/superinstance/mesh/internal/pki"
	"github.com/superinstance/mesh/internal/simulator"
	meshv1 "github.com/superinstance/mesh/proto/meshv1"
	"github.com/superinstance/mesh/test/harness"
)

// prewarmLead is how long after a hub's GPUs turn hot its first escalation
// leaves: the local kernel takes the spike until its queue backs up. The
// hub signals at its first hot heartbeat.
const prewarmLead = 3 * time.Second

// BenchmarkPrewarmColdStart measures the first escalation after a load
// spike, with and without pre-warm, side by side: each trial is a fresh hub
// (one pre-warm signal a minute per hub) that escalated with the account's
// adapter earlier, after which the adapter went cold (unloaded, its cached
// files removed); then the hub's GPUs turn hot and, prewarmLead later (and
// 1 s later in a third arm), it escalates with that adapter. The hub
// heartbeats every 250 ms here (5 s by default: a spike is seen up to one
// interval later). The backend
// (the simulator) takes simulator.DefaultLoRALoadLatency to load an
// adapter; everything else is the real path: QUIC tunnel, bridge, Temporal,
// PostgreSQL, MinIO.
func BenchmarkPrewarmColdStart(b *testing.B) {
	m := harness.StartMesh(b, simulator.Options{LoadDelay: simulator.DefaultLoRALoadLatency}, harness.WithAdapters(b, 8))
	m.Account(b, "bench")
	id := harness.PushAdapter(b, m, "bench", "", "bench-prewarm")
	p := harness.NewPKI(b)
	br := harness.StartBridge(b, m, p, "127.0.0.1:0")

	escalate := func(a *agent.Agent) time.Duration {
		start := time.Now()
		_, out, err := a.Escalate(&meshv1.EscalationRequest{Prompt: "reset my password [sim:agree]", Lora: id, MaxRounds: 1})
		if err != nil {
			b.Fatal(err)
		}
		for r := range out {
			if r.GetProgress() != nil {
				continue
			}
			if r.GetResult() == nil {
				b.Fatalf("escalation with %s: %v", id, r)
			}
			return time.Since(start)
		}
		b.Fatal("responses ended without a result")
		return 0
	}
	var warmed []time.Duration // spike to warm-up done, prewarmLead arm
	// trial returns the first escalation's latency after the spike (lead
	// after it), and that of the next one (the adapter loaded either way).
	trial := func(prewarm bool, lead time.Duration) (first, warm time.Duration) {
		dev := harness.UniqueID("gpu-spike")
		c := p.Enroll(b, m.Store, pki.Identity{DeviceID: dev, Account: "bench"}, time.Hour)
		var hot atomic.Bool
		cool, busy := harness.FixedVitals(20, 50), harness.FixedVitals(95, 60)
		policy := agent.Prewarm{MinInterval: time.Hour}
		if !prewarm {
			policy = agent.Prewarm{LoadHigh: 2, TempHigh: 1e6} // never hot: no signal
		}
		a := agent.New(agent.Options{Bridge: br.Addr().String(), TLS: c, DeviceID: dev, Interval: 250 * time.Millisecond, Prewarm: policy,
			Backoff: agent.Backoff{Min: 50 * time.Millisecond, Max: 500 * time.Millisecond},
			Vitals: func() *meshv1.HardwareVitals {
				if hot.Load() {
					return busy()
				}
				return cool()
			}})
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() {
			defer close(done)
			_ = a.Run(ctx)
		}()
		defer func() { cancel(); <-done }()
		wctx, wcancel := context.WithTimeout(ctx, 30*time.Second)
		defer wcancel()
		if err := a.WaitConnected(wctx); err != nil {
			b.Fatal(err)
		}
		escalate(a) // the hub used the adapter before...
		harness.Cold(b, m, id)
		spike := time.Now() // ...then it went cold, and the spike came
		hot.Store(true)
		time.Sleep(time.Until(spike.Add(lead)))
		first = escalate(a)
		if prewarm {
			res, closed := harness.Warmup(b, m, dev, spike, time.Minute)
			if !slices.Equal(res.Loaded, []string{id}) {
				b.Fatalf("warm-up loaded %v, want %s", res.Loaded, id)
			}
			if lead == prewarmLead {
				warmed = append(warmed, closed.Sub(spike))
			}
		}
		return first, escalate(a)
	}
	var without, with, with1s, warm []time.Duration
	for i := range 5 {
		f, w := trial(false, prewarmLead)
		without, warm = append(without, f), append(warm, w)
		f, w = trial(true, prewarmLead)
		with, warm = append(with, f), append(warm, w)
		if i < 3 {
			f, _ = trial(true, time.Second)
			with1s = append(with1s, f)
		}
	}
	b.Logf("first escalation without pre-warm %v, with %v, with 1 s lead %v; next escalations %v; warm-ups done %v after the spike",
		without, with, with1s, warm, warmed)
	wo, wi, wi1, wa := median(without), median(with), median(with1s), median(warm)
	load := simulator.DefaultLoRALoadLatency
	record("prewarm_cold_start_cut", 1-wi.Seconds()/wo.Seconds(), fmt.Sprintf(
		"1 - with/without: the first escalation %s after a load spike, its adapter cold, against a backend whose adapter load takes %s; median of 5 each, alternating (the seed's goal >= 0.8)",
		prewarmLead, load))
	record("prewarm_first_escalation_ms", ms(wi), "with pre-warm: the hub's signal named the adapter of its last escalation and the cloud loaded it ahead of need")
	record("prewarm_off_first_escalation_ms", ms(wo), "without pre-warm: the escalation loads the adapter itself")
	record("prewarm_warm_escalation_ms", ms(wa), "the next escalation, its adapter loaded: the floor")
	record("prewarm_warmup_done_ms", ms(median(warmed)), "from the spike to the warm-up's end: the hub's next heartbeat, the bridge, the workflow, the access check, the fetch and the load")
	record("prewarm_cold_start_cut_1s_lead", 1-wi1.Seconds()/wo.Seconds(), fmt.Sprintf(
		"the same with the escalation 1 s after the spike: it waits for the rest of the warm-up's load (%.0f ms, median of 3)", ms(wi1)))
}
