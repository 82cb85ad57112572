package integration

import (
	"context"
	"testing"

	"github.com/superinstance/mesh/internal/runner"
	"github.com/superinstance/mesh/internal/store"
	"github.com/superinstance/mesh/workflows"
)

// TestLiveHandoverHistoryReplays runs a handover through the wait for a
// payment method on a real server (offer, accept, clone, awaiting_payment,
// the webhook's signal, subscribe, completed) and replays its history; with
// SI_WRITE_HISTORY=1 it rewrites workflows/testdata/handover_history_v1.json.
func TestLiveHandoverHistoryReplays(t *testing.T) {
	hm := startHandoverMesh(t)
	ctx := context.Background()
	h, _, _ := hm.offer(t)
	if err := runner.AcceptHandover(ctx, hm.Client, h.ID, workflows.HandoverAccept{Account: "rec", NewAccount: true}); err != nil {
		t.Fatal(err)
	}
	hm.pay(t, h.ID)
	if st, err := hm.result(t, h.ID); err != nil || st.Status != store.HandoverCompleted {
		t.Fatalf("%+v %v", st, err)
	}
	replays(t, hm.Client, workflows.HandoverWorkflowID(h.ID), workflows.HandoverWorkflow, "handover_history_v1.json")
}
