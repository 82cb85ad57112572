package integration

import (
	"context"
	"testing"
	"time"

	enumspb "go.temporal.io/api/enums/v1"

	"github.com/superinstance/mesh/internal/simulator"
	"github.com/superinstance/mesh/test/harness"
	"github.com/superinstance/mesh/workflows"
)

// A Logos step that loads its adapter first keeps heartbeating through the
// load: a load longer than the step's heartbeat timeout does not make the
// step time out.
func TestLogosHeartbeatsThroughASlowAdapterLoad(t *testing.T) {
	const load = workflows.StepHeartbeatTimeout + 2*time.Second
	m := harness.StartMesh(t, simulator.Options{LoadDelay: load}, harness.WithAdapters(t, 1))
	m.Account(t, "alice")
	first := mustPush(t, m, adapter(t, "first", 2, 8<<10), "alice", "")
	mustPush(t, m, adapter(t, "second", 3, 8<<10), "alice", "") // evicts the first
	id, st, err := ask(t, m, workflows.ConsensusInput{Prompt: "hi [sim:agree]", Account: "alice", LoRA: first, MaxRounds: 1}, nil)
	if err != nil {
		t.Fatalf("a %s adapter load under a %s heartbeat timeout: %v", load, workflows.StepHeartbeatTimeout, err)
	}
	if st.Status != workflows.StatusConsensus {
		t.Fatalf("status %s", st.Status)
	}
	// And on its first attempt: the load did not cost a heartbeat timeout.
	ctx := context.Background()
	iter := m.Client.GetWorkflowHistory(ctx, id, "", false, enumspb.HISTORY_EVENT_FILTER_TYPE_ALL_EVENT)
	scheduled := map[int64]string{}
	for iter.HasNext() {
		e, err := iter.Next()
		if err != nil {
			t.Fatal(err)
		}
		switch e.GetEventType() {
		case enumspb.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
			scheduled[e.GetEventId()] = e.GetActivityTaskScheduledEventAttributes().GetActivityType().GetName()
		case enumspb.EVENT_TYPE_ACTIVITY_TASK_STARTED:
			a := e.GetActivityTaskStartedEventAttributes()
			if scheduled[a.GetScheduledEventId()] == "Logos" && a.GetAttempt() != 1 {
				t.Fatalf("Logos completed on attempt %d: the adapter load timed out its heartbeat (%s)", a.GetAttempt(), a.GetLastFailure().GetMessage())
			}
		}
	}
}
