// Package integration runs the mesh's workflows against a real embedded
// Temporal server, PostgreSQL and the inference simulator.
package integration

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	historypb "go.temporal.io/api/history/v1"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/worker"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/superinstance/mesh/internal/runner"
	"github.com/superinstance/mesh/internal/simulator"
	"github.com/superinstance/mesh/internal/store"
	"github.com/superinstance/mesh/test/harness"
	"github.com/superinstance/mesh/workers"
	"github.com/superinstance/mesh/workflows"
)

func TestMain(m *testing.M) { harness.Main(m) }

func ask(t *testing.T, m *harness.Mesh, in workflows.ConsensusInput, onChange func(workflows.ConsensusState)) (string, workflows.ConsensusState, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	id := harness.UniqueID("consensus")
	if _, err := runner.Start(ctx, m.Client, id, in); err != nil {
		t.Fatal(err)
	}
	if onChange == nil {
		onChange = func(workflows.ConsensusState) {}
	}
	st, err := runner.Watch(ctx, m.Client, id, 20*time.Millisecond, onChange)
	return id, st, err
}

func TestConsensusIsRecordedInPostgres(t *testing.T) {
	m := harness.StartMesh(t, simulator.Options{})
	id, st, err := ask(t, m, workflows.ConsensusInput{Prompt: "Name a prime [sim:agree]", Project: "maths"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if st.Status != workflows.StatusConsensus {
		t.Fatalf("status %s", st.Status)
	}
	run, err := m.Store.ConsensusRun(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	if run.Project != "maths" || run.Status != st.Status || run.Score != st.Score || run.Rounds != 1 || run.Answer != st.Answer {
		t.Fatalf("stored %+v, state %+v", run, st)
	}
	if _, err := m.Store.ConsensusRun(context.Background(), "nope"); err != store.ErrNotFound {
		t.Fatalf("missing run: %v, want ErrNotFound", err)
	}
}

func TestWatchSeesEveryStep(t *testing.T) {
	m := harness.StartMesh(t, simulator.Options{Latency: 150 * time.Millisecond})
	var steps []int
	_, st, err := ask(t, m, workflows.ConsensusInput{Prompt: "Q [sim:disagree]", MaxRounds: 1}, func(s workflows.ConsensusState) {
		steps = append(steps, s.Steps)
	})
	if err != nil {
		t.Fatal(err)
	}
	// pathos, logos, ethos, arbiter: each step is seen live, in order.
	if st.Status != workflows.StatusArbiter || st.Steps != 4 {
		t.Fatalf("final %s with %d steps", st.Status, st.Steps)
	}
	seen := map[int]bool{}
	for i, s := range steps {
		if i > 0 && s < steps[i-1] {
			t.Fatalf("steps went backwards: %v", steps)
		}
		seen[s] = true
	}
	for want := 1; want <= 4; want++ {
		if !seen[want] {
			t.Fatalf("watch saw steps %v, missing %d", steps, want)
		}
	}
}

func TestPlacementOnALiveHub(t *testing.T) {
	m := harness.StartMesh(t, simulator.Options{})
	hub := harness.UniqueID("gpu")
	m.StartHub(t, hub)
	_, st, err := ask(t, m, workflows.ConsensusInput{Prompt: "Q [sim:agree]", HubQueue: workers.HubQueue(hub)}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if st.Placement != workers.HubQueue(hub) {
		t.Fatalf("placement %s (%s)", st.Placement, st.PlacementNote)
	}
	for _, u := range st.Usage {
		if u.RanOn != workers.HubQueue(hub) {
			t.Fatalf("%s ran on %s, want the hub", u.Role, u.RanOn)
		}
	}
}

func TestPlacementFallsBackToCloud(t *testing.T) {
	m := harness.StartMesh(t, simulator.Options{})
	t.Run("no hub ever polled", func(t *testing.T) {
		_, st, err := ask(t, m, workflows.ConsensusInput{Prompt: "Q [sim:agree]", HubQueue: workers.HubQueue(harness.UniqueID("absent"))}, nil)
		if err != nil {
			t.Fatal(err)
		}
		if st.Placement != workers.CloudQueue {
			t.Fatalf("placement %s (%s)", st.Placement, st.PlacementNote)
		}
	})
	t.Run("hub died after polling", func(t *testing.T) {
		hub := harness.UniqueID("gone")
		stop := m.StartHub(t, hub)
		time.Sleep(300 * time.Millisecond) // let its pollers register
		stop()
		// The hub still looks live to the poller check; the step's
		// schedule-to-start timeout moves the work to the cloud.
		_, st, err := ask(t, m, workflows.ConsensusInput{Prompt: "Q [sim:agree]", HubQueue: workers.HubQueue(hub)}, nil)
		if err != nil {
			t.Fatal(err)
		}
		if st.Placement != workers.CloudQueue || st.Status != workflows.StatusConsensus {
			t.Fatalf("placement %s (%s), status %s", st.Placement, st.PlacementNote, st.Status)
		}
		for _, u := range st.Usage {
			if u.RanOn != workers.CloudQueue {
				t.Fatalf("%s ran on %s after the move", u.Role, u.RanOn)
			}
		}
	})
}

func TestFailedRoundIsRecorded(t *testing.T) {
	m := harness.StartMesh(t, simulator.Options{})
	id, _, err := ask(t, m, workflows.ConsensusInput{Prompt: "Q [sim:malformed]"}, nil)
	if err == nil || err.Error() != "round 1: pathos's output is unusable after one repair attempt: reply contains no JSON object" {
		t.Fatalf("error %v", err)
	}
	run, err := m.Store.ConsensusRun(context.Background(), id)
	if err != nil || run.Status != workflows.StatusFailed {
		t.Fatalf("stored %+v, %v", run, err)
	}
}

// TestLiveHistoryReplays replays a real server's history of a multi-round
// consensus against the current workflow code. With SI_WRITE_HISTORY set it
// also writes that history to the file the workflows package's replay test
// reads (the current version, with billing).
func TestLiveHistoryReplays(t *testing.T) {
	m := harness.StartMesh(t, simulator.Options{})
	m.Account(t, "replay")
	id, st, err := ask(t, m, workflows.ConsensusInput{Prompt: "Which sort for nearly sorted data? [sim:disagree]", MaxRounds: 2,
		Account: "replay"}, nil)
	if err != nil || st.Status != workflows.StatusArbiter {
		t.Fatalf("%s %v", st.Status, err)
	}
	replays(t, m.Client, id, workflows.ConsensusWorkflow, "consensus_history_v1.json")
}

// replays checks that workflow id's history replays on wf's code; with
// SI_WRITE_HISTORY set it becomes workflows/testdata/<file>, the history the
// workflows package's replay test reads.
func replays(t *testing.T, c client.Client, id string, wf any, file string) {
	t.Helper()
	hist, err := history(c, id)
	if err != nil {
		t.Fatal(err)
	}
	r := worker.NewWorkflowReplayer()
	r.RegisterWorkflow(wf)
	if err := r.ReplayWorkflowHistory(nil, hist); err != nil {
		t.Fatalf("replay: %v", err)
	}
	if os.Getenv("SI_WRITE_HISTORY") != "" {
		b, err := protojson.MarshalOptions{Indent: "  "}.Marshal(hist)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join("..", "..", "workflows", "testdata", file), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func history(c client.Client, id string) (*historypb.History, error) {
	iter := c.GetWorkflowHistory(context.Background(), id, "", false, 0)
	h := &historypb.History{}
	for iter.HasNext() {
		ev, err := iter.Next()
		if err != nil {
			return nil, err
		}
		h.Events = append(h.Events, ev)
	}
	return h, nil
}
