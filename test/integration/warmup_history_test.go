package integration

import (
	"context"
	"slices"
	"testing"

	"go.temporal.io/sdk/client"

	"github.com/superinstance/mesh/internal/simulator"
	"github.com/superinstance/mesh/test/harness"
	"github.com/superinstance/mesh/workers"
	"github.com/superinstance/mesh/workflows"
)

// TestLiveWarmupHistoryReplays warms two adapters of alice's on a real
// server, one of them named twice, and one of bob's that alice may not use
// (the bridge leaves such an adapter out; the workflow refuses it too),
// then replays the history; with SI_WRITE_HISTORY=1 it rewrites
// workflows/testdata/warmup_history_v2.json.
func TestLiveWarmupHistoryReplays(t *testing.T) {
	m := harness.StartMesh(t, simulator.Options{}, harness.WithAdapters(t, 4))
	m.Account(t, "alice")
	m.Account(t, "bob")
	support := harness.PushAdapter(t, m, "alice", "", "warm-support")
	billing := harness.PushAdapter(t, m, "alice", "", "warm-billing")
	bobs := harness.PushAdapter(t, m, "bob", "", "warm-bobs")
	ctx := context.Background()
	wid := harness.UniqueID("warmup-history")
	run, err := m.Client.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: wid, TaskQueue: workers.CloudQueue},
		workflows.WarmupWorkflow, workflows.WarmupInput{DeviceID: "gpu-history", Account: "alice", Reason: "GPU load 95%", GPULoad: 0.95, TempC: 60,
			LoRA: support, LoRAs: []string{support, bobs, billing}})
	if err != nil {
		t.Fatal(err)
	}
	var res workflows.WarmupResult
	if err := run.Get(ctx, &res); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(res.Loaded, []string{support, billing}) || !slices.Equal(res.Refused, []string{bobs}) {
		t.Fatalf("warm-up loaded %v and refused %v; want %v and [%s]", res.Loaded, res.Refused, []string{support, billing}, bobs)
	}
	if slices.Contains(m.Sim.LoadedLoRAs(), bobs) {
		t.Fatalf("bob's adapter was loaded for alice")
	}
	replays(t, m.Client, wid, workflows.WarmupWorkflow, "warmup_history_v2.json")
}
