package workflows

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/mock"
	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/converter"
	"go.temporal.io/sdk/testsuite"

	"github.com/superinstance/mesh/activities"
	"github.com/superinstance/mesh/internal/store"
)

// A hub whose hello does not say its steps heartbeat (an older hub) would
// lose every step longer than the heartbeat timeout; its steps run with no
// heartbeat timeout (StartToClose bounds them, as before heartbeats), while
// a current hub's steps and the cloud's keep theirs. Both placement paths:
// per step among the account's hubs, and the one named hub checked once.
func TestAHubThatDoesNotHeartbeatGetsNoHeartbeatTimeout(t *testing.T) {
	type step struct {
		queue     string
		heartbeat time.Duration
	}
	listen := func(env *testsuite.TestWorkflowEnvironment, steps *[]step) {
		env.SetOnActivityStartedListener(func(info *activity.Info, _ context.Context, _ converter.EncodedValues) {
			switch info.ActivityType.Name {
			case "Pathos", "Logos", "Ethos", "Arbiter":
				*steps = append(*steps, step{info.TaskQueue, info.HeartbeatTimeout})
			}
		})
	}
	t.Run("per step", func(t *testing.T) {
		env := newEnv(t)
		env.OnActivity(rec.CheckAccount, mock.Anything, "acme").Return(nil)
		env.OnActivity(rec.CheckProject, mock.Anything, "acme", mock.Anything).Return(nil)
		env.OnActivity(led.Reserve, mock.Anything, mock.Anything).Return(store.Hold{ID: "h", Amount: 1 << 40}, nil)
		env.OnActivity(led.LogUsage, mock.Anything, mock.Anything).Return(nil, nil)
		env.OnActivity(led.Release, mock.Anything, mock.Anything).Return(nil)
		choices := []activities.HubChoice{
			{Queue: "hub.old", Note: "old: the only healthy hub of 1", NoHeartbeat: true},
			{Queue: "hub.new", Note: "new: the only healthy hub of 1"},
			{Note: "cloud: no healthy hub", NoHeartbeat: true}, // a stray flag with no hub changes nothing
		}
		picked := 0
		env.OnActivity(pl.PickHub, mock.Anything, mock.Anything).Return(func(context.Context, activities.PickHubInput) (activities.HubChoice, error) {
			c := choices[min(picked, len(choices)-1)]
			picked++
			return c, nil
		})
		var steps []step
		listen(env, &steps)
		if _, err := run(t, env, ConsensusInput{Prompt: "hello [sim:agree]", Account: "acme", MaxRounds: 1, HubQueue: "hub.old", CloudQueue: "cloud"}); err != nil {
			t.Fatal(err)
		}
		want := []step{{"hub.old", 0}, {"hub.new", StepHeartbeatTimeout}, {"cloud", StepHeartbeatTimeout}}
		if len(steps) != len(want) {
			t.Fatalf("steps %v, want %v", steps, want)
		}
		for i := range want {
			if steps[i] != want[i] {
				t.Errorf("step %d ran on %s with heartbeat timeout %s, want %s with %s", i, steps[i].queue, steps[i].heartbeat, want[i].queue, want[i].heartbeat)
			}
		}
	})
	t.Run("one named hub", func(t *testing.T) {
		for _, tc := range []struct {
			name string
			st   activities.HubStatus
			want time.Duration
		}{{"older hub", activities.HubStatus{Healthy: true, NoHeartbeat: true}, 0}, {"current hub", activities.HubStatus{Healthy: true}, StepHeartbeatTimeout}} {
			t.Run(tc.name, func(t *testing.T) {
				env := newEnv(t)
				env.OnActivity(pl.HubAvailable, mock.Anything, "hub.gpu").Return(tc.st, nil)
				var steps []step
				listen(env, &steps)
				if _, err := run(t, env, ConsensusInput{Prompt: "hello [sim:agree]", MaxRounds: 1, HubQueue: "hub.gpu", CloudQueue: "cloud"}); err != nil {
					t.Fatal(err)
				}
				if len(steps) != 3 {
					t.Fatalf("steps %v", steps)
				}
				for i, s := range steps {
					if s.queue != "hub.gpu" || s.heartbeat != tc.want {
						t.Errorf("step %d ran on %s with heartbeat timeout %s, want hub.gpu with %s", i, s.queue, s.heartbeat, tc.want)
					}
				}
			})
		}
	})
}
