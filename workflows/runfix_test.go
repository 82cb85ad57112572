package workflows

import (
	"testing"

	"github.com/stretchr/testify/mock"

	"github.com/superinstance/mesh/activities"
	"github.com/superinstance/mesh/internal/store"
	"github.com/superinstance/mesh/internal/synapse"
)

// TestRecordCarriesStrategyAndEstimate: a single run's record names its
// strategy, and a step whose usage the server did not report is marked
// estimated in the step log.
func TestRecordCarriesStrategyAndEstimate(t *testing.T) {
	var got store.ConsensusRun
	env := newEnvRecording(t, func(r store.ConsensusRun) { got = r })
	env.OnActivity(inf.Logos, mock.Anything, mock.Anything).Return(activities.LogosOutput{Solution: synapse.Solution{Answer: "a", Confidence: 1},
		Usage: activities.AgentUsage{Role: synapse.Logos, Model: "m", PromptTokens: 10, CompletionTokens: 3, UsageEstimated: true}}, nil)
	st, err := run(t, env, ConsensusInput{Prompt: "q", Strategy: StrategySingle, Project: "p"})
	if err != nil {
		t.Fatal(err)
	}
	if got.Strategy != string(StrategySingle) {
		t.Fatalf("recorded strategy %q, want single", got.Strategy)
	}
	if len(st.StepLog) != 1 || !st.StepLog[0].UsageEstimated {
		t.Fatalf("step log %+v: want the step marked estimated", st.StepLog)
	}
}

// TestRecordOfADebateNamesIt: the default strategy is recorded by name.
func TestRecordOfADebateNamesIt(t *testing.T) {
	var got store.ConsensusRun
	env := newEnvRecording(t, func(r store.ConsensusRun) { got = r })
	if _, err := run(t, env, ConsensusInput{Prompt: "q", Project: "p"}); err != nil {
		t.Fatal(err)
	}
	if got.Strategy != string(StrategyDebate) {
		t.Fatalf("recorded strategy %q, want debate", got.Strategy)
	}
}
