package runner_test

import (
	"context"
	"testing"
	"time"

	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/worker"
	"go.temporal.io/sdk/workflow"

	"github.com/superinstance/mesh/internal/runner"
	"github.com/superinstance/mesh/test/harness"
	"github.com/superinstance/mesh/workflows"
)

func TestMain(m *testing.M) { harness.Main(m) }

// lingering reaches its final state, then takes a while to close, as a
// consensus does when a long poll misses its close.
func lingering(ctx workflow.Context) (*workflows.ConsensusState, error) {
	st := workflows.ConsensusState{Status: workflows.StatusRunning}
	if err := workflow.SetQueryHandler(ctx, workflows.QueryState, func() (workflows.ConsensusState, error) { return st, nil }); err != nil {
		return nil, err
	}
	_ = workflow.Sleep(ctx, 200*time.Millisecond)
	st = workflows.ConsensusState{Status: workflows.StatusConsensus, Answer: "42", Steps: 3, Final: true}
	_ = workflow.Sleep(ctx, 5*time.Second)
	return &st, nil
}

// TestWatchFollowsTheFinalState: the result is the final state as soon as
// the workflow reports it, not when the workflow's close reaches the
// watcher.
func TestWatchFollowsTheFinalState(t *testing.T) {
	c := harness.Client(t)
	queue := "watch-final-" + time.Now().Format("150405.000000")
	w := worker.New(c, queue, worker.Options{})
	w.RegisterWorkflowWithOptions(lingering, workflow.RegisterOptions{Name: "lingering"})
	if err := w.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.Stop)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	run, err := c.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: queue, TaskQueue: queue}, "lingering")
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	st, err := runner.Watch(ctx, c, run.GetID(), 20*time.Millisecond, func(workflows.ConsensusState) {})
	if err != nil || st.Answer != "42" || st.Status != workflows.StatusConsensus {
		t.Fatalf("Watch: %+v %v", st, err)
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Fatalf("the result took %v: it waited for the workflow to close", took)
	}
}
