package workflows

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/mock"
	"go.temporal.io/sdk/activity"

	"github.com/superinstance/mesh/activities"
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
