package workflows

import (
	"testing"

	"go.temporal.io/sdk/worker"
)

// TestReplayCommittedHistory replays a two-round consensus that ended with the
// arbiter, recorded from a real server (regenerate with `make history`). A
// change that makes the workflow non-deterministic for runs already in
// flight fails here.
func TestReplayCommittedHistory(t *testing.T) {
	r := worker.NewWorkflowReplayer()
	r.RegisterWorkflow(ConsensusWorkflow)
	if err := r.ReplayWorkflowHistoryFromJSONFile(nil, "testdata/consensus_history.json"); err != nil {
		t.Fatal(err)
	}
}
