package workflows

import (
	"testing"

	"go.temporal.io/sdk/worker"
)

// TestReplayCommittedHistories replays consensuses recorded from a real
// server: two-round debates that ended with the arbiter, v0 before steps had
// named activity ids and billing, v1 with them (re-record it with `make
// history`), v1 again with an input naming strategy vote (a worker from
// before strategies ran it as a debate, so it replays as one), and a
// three-sample vote (re-record it with SI_WRITE_HISTORY=1
// go test -run TestLiveVoteHistoryReplays ./test/integration/). A change
// that makes the workflow non-deterministic for runs already in flight
// fails here.
func TestReplayCommittedHistories(t *testing.T) {
	for _, f := range []string{"testdata/consensus_history_v0.json", "testdata/consensus_history_v1.json", "testdata/consensus_history_v1_vote_input.json", "testdata/consensus_history_vote.json"} {
		t.Run(f, func(t *testing.T) {
			r := worker.NewWorkflowReplayer()
			r.RegisterWorkflow(ConsensusWorkflow)
			if err := r.ReplayWorkflowHistoryFromJSONFile(nil, f); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestReplayFlushHistories replays flushes recorded from a real server: v0
// before flushes were reserved ahead of their workflow (one lost answer,
// then sent; such runs in flight keep their path behind the
// flush-reserved-in-doubt version), v1 in doubt for a round and then sent
// (re-record it with SI_WRITE_HISTORY=1 go test -run TestLiveFlushHistoryReplays ./test/integration/).
func TestReplayFlushHistories(t *testing.T) {
	for _, f := range []string{"testdata/flush_history_v0.json", "testdata/flush_history_v1.json"} {
		t.Run(f, func(t *testing.T) {
			r := worker.NewWorkflowReplayer()
			r.RegisterWorkflow(FlushWorkflow)
			if err := r.ReplayWorkflowHistoryFromJSONFile(nil, f); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestReplayHandoverHistories replays handovers recorded from a real
// server: v0 before accepted handovers waited for a payment method (offer,
// accept, clone, subscribe, completed; such runs in flight keep their path
// behind the handover-payment-method version), v1 through the wait (the
// webhook's signal, then subscribe; re-record it with SI_WRITE_HISTORY=1 go
// test -run TestLiveHandoverHistoryReplays ./test/integration/).
func TestReplayHandoverHistories(t *testing.T) {
	for _, f := range []string{"testdata/handover_history_v0.json", "testdata/handover_history_v1.json"} {
		t.Run(f, func(t *testing.T) {
			r := worker.NewWorkflowReplayer()
			r.RegisterWorkflow(HandoverWorkflow)
			if err := r.ReplayWorkflowHistoryFromJSONFile(nil, f); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestReplayWarmupHistories replays warm-ups recorded from a real server: v1
// loaded the one adapter the signal named (warmup-loads-lora version 1;
// such runs in flight keep that path), v2 the recent adapters in order, one
// of them refused (re-record it with SI_WRITE_HISTORY=1 go test -run
// TestLiveWarmupHistoryReplays ./test/integration/).
func TestReplayWarmupHistories(t *testing.T) {
	for _, f := range []string{"testdata/warmup_history_v1.json", "testdata/warmup_history_v2.json"} {
		t.Run(f, func(t *testing.T) {
			r := worker.NewWorkflowReplayer()
			r.RegisterWorkflow(WarmupWorkflow)
			if err := r.ReplayWorkflowHistoryFromJSONFile(nil, f); err != nil {
				t.Fatal(err)
			}
		})
	}
}
