package bench

import (
	"context"
	"testing"
	"time"

	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/worker"
	"go.temporal.io/sdk/workflow"

	"github.com/superinstance/mesh/activities"
	"github.com/superinstance/mesh/internal/pki"
	"github.com/superinstance/mesh/internal/simulator"
	"github.com/superinstance/mesh/test/harness"
	"github.com/superinstance/mesh/workers"
)

// oneHubInference runs one Pathos call on the hub queue it is given.
func oneHubInference(ctx workflow.Context, queue string) error {
	ctx = workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
		TaskQueue: queue, StartToCloseTimeout: 30 * time.Second, RetryPolicy: &temporal.RetryPolicy{MaximumAttempts: 1},
	})
	var a *activities.Inference
	return workflow.ExecuteActivity(ctx, a.Pathos, activities.PathosInput{Question: "Bench [sim:agree]"}).Get(ctx, nil)
}

// BenchmarkHubProxyOverhead measures what the bridge's Temporal proxy adds
// to one hub inference activity: the median time of a workflow running one
// Pathos call on a hub whose worker dials Temporal directly, against the
// same on a hub whose worker goes through the bridge over its tunnel,
// interleaved in one run against one Temporal server and simulator.
func BenchmarkHubProxyOverhead(b *testing.B) {
	m := harness.StartMesh(b, simulator.Options{})
	p := harness.NewPKI(b)
	br := harness.StartBridge(b, m, p, "127.0.0.1:0")
	direct, proxied := harness.UniqueID("bench-direct"), harness.UniqueID("bench-proxied")
	m.StartHub(b, direct)
	tc := p.Enroll(b, m.Store, pki.Identity{DeviceID: proxied, Account: "bench"}, time.Hour)
	harness.StartHubNode(b, m, br.Addr().String(), tc, proxied, harness.FixedVitals(10, 40))

	q := harness.UniqueID("bench-hub-proxy")
	w := worker.New(m.Client, q, worker.Options{})
	w.RegisterWorkflowWithOptions(oneHubInference, workflow.RegisterOptions{Name: "OneHubInference"})
	if err := w.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(w.Stop)
	run := func(device string) time.Duration {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		start := time.Now()
		r, err := m.Client.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: harness.UniqueID("bench"), TaskQueue: q}, "OneHubInference", workers.HubQueue(device))
		if err != nil {
			b.Fatal(err)
		}
		if err := r.Get(ctx, nil); err != nil {
			b.Fatal(err)
		}
		return time.Since(start)
	}
	for range 5 { // warm up both workers' pollers and connections
		run(direct)
		run(proxied)
	}
	const n = 60
	var d, px []time.Duration
	for range n {
		d = append(d, run(direct))
		px = append(px, run(proxied))
	}
	if r := br.Proxy.Refused(); len(r) > 0 {
		b.Fatalf("the proxy refused the hub's worker: %v", r)
	}
	record("hub_direct_activity_ms", ms(median(d)), "a workflow of one hub inference (Pathos), the hub worker dialing Temporal directly")
	record("hub_proxied_activity_ms", ms(median(px)), "the same, the hub worker going through the bridge's proxy over its QUIC tunnel")
	record("hub_proxy_overhead_ms", ms(median(px)-median(d)), "what the bridge's Temporal proxy adds to one hub inference activity (target < 2)")
}
