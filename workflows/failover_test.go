package workflows

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/mock"
	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/converter"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/testsuite"
	"go.temporal.io/sdk/workflow"

	"github.com/superinstance/mesh/activities"
	"github.com/superinstance/mesh/internal/store"
	"github.com/superinstance/mesh/internal/synapse"
)

// Every agent step carries a heartbeat timeout of a few seconds, so a step
// whose worker was killed moves on within seconds, not at StartToClose.
func TestAgentStepsHaveAHeartbeatTimeout(t *testing.T) {
	env := newEnv(t)
	var seen []time.Duration
	note := func(ctx context.Context) { seen = append(seen, activity.GetInfo(ctx).HeartbeatTimeout) }
	env.OnActivity(inf.Pathos, mock.Anything, mock.Anything).Return(func(ctx context.Context, _ activities.PathosInput) (activities.PathosOutput, error) {
		note(ctx)
		return activities.PathosOutput{Manifest: synapse.Manifest{Intent: "x", Confidence: 1}}, nil
	})
	env.OnActivity(inf.Logos, mock.Anything, mock.Anything).Return(func(ctx context.Context, _ activities.LogosInput) (activities.LogosOutput, error) {
		note(ctx)
		return activities.LogosOutput{Solution: synapse.Solution{Answer: "a", Confidence: 1}}, nil
	})
	env.OnActivity(inf.Ethos, mock.Anything, mock.Anything).Return(func(ctx context.Context, _ activities.EthosInput) (activities.EthosOutput, error) {
		note(ctx)
		return activities.EthosOutput{Verification: synapse.Verification{Scores: synapse.Scores{Accuracy: 1, Relevance: 1, Safety: 1}}}, nil
	})
	if _, err := run(t, env, ConsensusInput{Prompt: "hello", Placement: PlacementCloud}); err != nil {
		t.Fatal(err)
	}
	if len(seen) != 3 {
		t.Fatalf("%d steps ran, want 3", len(seen))
	}
	for i, d := range seen {
		if d <= 0 || d > 10*time.Second || d < 2*activities.HeartbeatEvery {
			t.Fatalf("step %d has heartbeat timeout %s; want a few seconds, at least two heartbeats (%s)", i, d, activities.HeartbeatEvery)
		}
	}
}

// A consensus whose account check cannot reach PostgreSQL fails at once
// with that reason, instead of staying Running while recording its failure
// retries against the same dead database; the failure is recorded once the
// database is back.
func TestLedgerUnreachableFailsAtOnce(t *testing.T) {
	var s testsuite.WorkflowTestSuite
	env := s.NewTestWorkflowEnvironment()
	env.RegisterWorkflow(ConsensusWorkflow)
	env.RegisterWorkflow(RecordRunWorkflow)
	env.RegisterActivity(&activities.Inference{})
	env.RegisterActivity(&activities.Records{})
	env.RegisterActivity(&activities.Ledger{})
	down := errors.New("dial tcp: connection refused")
	checks := 0
	env.OnActivity(rec.CheckAccount, mock.Anything, "acme").Return(func(context.Context, string) error {
		checks++
		return temporal.NewApplicationErrorWithCause("the ledger is unreachable", activities.ErrLedgerUnreachable, down)
	})
	// PostgreSQL comes back two minutes after the run started.
	start := env.Now()
	back := func() bool { return env.Now().Sub(start) > 2*time.Minute }
	recorded := 0
	env.OnActivity(rec.RecordConsensus, mock.Anything, mock.Anything).Return(func(_ context.Context, r store.ConsensusRun) error {
		if !back() {
			return down
		}
		if r.Status != StatusFailed {
			t.Errorf("recorded %s, want %s", r.Status, StatusFailed)
		}
		recorded++
		return nil
	})
	env.OnActivity(led.Release, mock.Anything, mock.Anything).Return(func(context.Context, string) error {
		if !back() {
			return down
		}
		return nil
	})
	// The run ends when it hands its record to RecordRunWorkflow (the test
	// environment waits for that child too); without one, at the end.
	var failedAt time.Duration
	env.SetOnChildWorkflowStartedListener(func(wi *workflow.Info, _ workflow.Context, _ converter.EncodedValues) {
		if wi.WorkflowType.Name == "RecordRunWorkflow" {
			failedAt = env.Now().Sub(start)
		}
	})
	env.ExecuteWorkflow(ConsensusWorkflow, ConsensusInput{Prompt: "hello", Account: "acme", Placement: PlacementCloud})
	if failedAt == 0 {
		failedAt = env.Now().Sub(start)
	}
	var ae *temporal.ApplicationError
	if err := env.GetWorkflowError(); !errors.As(err, &ae) || ae.Type() != activities.ErrLedgerUnreachable ||
		!strings.Contains(ae.Message(), "the ledger is unreachable") {
		t.Fatalf("error %v, want type %s saying the ledger is unreachable", err, activities.ErrLedgerUnreachable)
	}
	if failedAt > 30*time.Second {
		t.Fatalf("the run failed %s after it started; want at once (seconds)", failedAt)
	}
	if checks < 2 || checks > 5 {
		t.Fatalf("the account check ran %d times; want a short bounded retry", checks)
	}
	if recorded != 1 {
		t.Fatalf("the failure was recorded %d times once the database was back, want 1", recorded)
	}
}

// From placement-per-step on, every step runs on the hub PickHub chooses
// among the run's account's hubs at that moment, with the reason in the
// run's state; a HubQueue naming another account's hub is never used.
func TestPlacementPerStepAmongTheAccountsHubs(t *testing.T) {
	env := newEnv(t)
	env.OnActivity(rec.CheckAccount, mock.Anything, "acme").Return(nil)
	env.OnActivity(rec.CheckProject, mock.Anything, "acme", mock.Anything).Return(nil)
	env.OnActivity(led.Reserve, mock.Anything, mock.Anything).Return(store.Hold{ID: "h", Amount: 1 << 40}, nil)
	env.OnActivity(led.LogUsage, mock.Anything, mock.Anything).Return(nil, nil)
	env.OnActivity(led.Release, mock.Anything, mock.Anything).Return(nil)
	// The other account's idle hub looks healthy to a check by name.
	env.OnActivity(pl.HubAvailable, mock.Anything, mock.Anything).Return(activities.HubStatus{Healthy: true}, nil)
	// acme's hubs as their loads change: b, then a, then none healthy.
	choices := []activities.HubChoice{
		{Queue: "hub.acme-b", Note: "acme-b: lowest GPU load (20%) of 2 healthy hubs"},
		{Queue: "hub.acme-a", Note: "acme-a: lowest GPU load (10%) of 2 healthy hubs"},
		{Note: "cloud: no healthy hub (hub acme-a is offline; hub acme-b is offline)"},
	}
	var notes []string
	env.OnActivity(pl.PickHub, mock.Anything, activities.PickHubInput{Account: "acme", Prefer: "hub.evil-idle"}).Return(func(context.Context, activities.PickHubInput) (activities.HubChoice, error) {
		c := choices[min(len(notes), len(choices)-1)]
		notes = append(notes, c.Note)
		return c, nil
	})
	st, err := run(t, env, ConsensusInput{Prompt: "hello [sim:agree]", Account: "acme", MaxRounds: 1,
		HubQueue: "hub.evil-idle", CloudQueue: "cloud"})
	if err != nil {
		t.Fatal(err)
	}
	var ran []string
	for _, u := range st.Usage {
		ran = append(ran, u.RanOn)
	}
	if want := []string{"hub.acme-b", "hub.acme-a", "cloud"}; !slices.Equal(ran, want) {
		t.Fatalf("steps ran on %v, want %v (picked per step: %v)", ran, want, notes)
	}
	if st.Placement != "cloud" || st.PlacementNote != choices[2].Note {
		t.Fatalf("state placement %q (%q), want the last step's choice", st.Placement, st.PlacementNote)
	}
}
