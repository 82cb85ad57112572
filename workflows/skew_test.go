package workflows

import (
	"context"
	"strings"
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
// lose every step longer than the heartbeat timeout; a hub step gets a
// heartbeat timeout only when placement positively says the hub heartbeats,
// so a result without the flag (an older worker's, a hub the registry does
// not know) runs with none (StartToClose bounds it, as before heartbeats),
// while a current hub's steps and the cloud's keep theirs. Both placement paths:
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
			{Queue: "hub.old", Note: "old: the only healthy hub of 1"}, // as an older worker's result decodes
			{Queue: "hub.new", Note: "new: the only healthy hub of 1", Heartbeats: true},
			{Note: "cloud: no healthy hub"}, // the cloud's steps heartbeat whatever placement says
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
		}{{"older hub", activities.HubStatus{Healthy: true}, 0}, {"current hub", activities.HubStatus{Healthy: true, Heartbeats: true}, StepHeartbeatTimeout}} {
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

// An older hub ignores a call's temperature and seed, so a vote's samples
// there would be k copies of one answer, each billed. The samples of a vote
// run in the cloud unless placement says the hub samples; a step that is
// not a sample (the vote's Ethos check) still runs on the hub. Both
// placement paths.
func TestAVotesSamplesAvoidAHubThatDoesNotSample(t *testing.T) {
	type step struct{ agent, queue string }
	listen := func(env *testsuite.TestWorkflowEnvironment, steps *[]step) {
		env.SetOnActivityStartedListener(func(info *activity.Info, _ context.Context, _ converter.EncodedValues) {
			switch info.ActivityType.Name {
			case "Logos", "Ethos":
				*steps = append(*steps, step{info.ActivityType.Name, info.TaskQueue})
			}
		})
	}
	check := func(t *testing.T, steps []step, want map[string]string) {
		t.Helper()
		if len(steps) != 4 {
			t.Fatalf("steps %v, want three samples and a check", steps)
		}
		for _, s := range steps {
			if s.queue != want[s.agent] {
				t.Errorf("%s ran on %s, want %s", s.agent, s.queue, want[s.agent])
			}
		}
	}
	for _, tc := range []struct {
		name     string
		sampling bool
		logos    string
	}{{"older hub", false, "cloud"}, {"current hub", true, "hub.gpu"}} {
		t.Run("per step/"+tc.name, func(t *testing.T) {
			env := newEnv(t)
			env.OnActivity(rec.CheckAccount, mock.Anything, "acme").Return(nil)
			env.OnActivity(rec.CheckProject, mock.Anything, "acme", mock.Anything).Return(nil)
			env.OnActivity(led.Reserve, mock.Anything, mock.Anything).Return(store.Hold{ID: "h", Amount: 1 << 40}, nil)
			env.OnActivity(led.LogUsage, mock.Anything, mock.Anything).Return(nil, nil)
			env.OnActivity(led.Release, mock.Anything, mock.Anything).Return(nil)
			env.OnActivity(pl.PickHub, mock.Anything, mock.Anything).Return(activities.HubChoice{Queue: "hub.gpu", Note: "gpu: the only healthy hub of 1",
				Heartbeats: true, Sampling: tc.sampling}, nil)
			var steps []step
			listen(env, &steps)
			if _, err := run(t, env, ConsensusInput{Prompt: "What is 6*7?", Strategy: StrategyVote, Samples: 3, Account: "acme", HubQueue: "hub.gpu", CloudQueue: "cloud"}); err != nil {
				t.Fatal(err)
			}
			check(t, steps, map[string]string{"Logos": tc.logos, "Ethos": "hub.gpu"})
		})
		t.Run("one named hub/"+tc.name, func(t *testing.T) {
			env := newEnv(t)
			env.OnActivity(pl.HubAvailable, mock.Anything, "hub.gpu").Return(activities.HubStatus{Healthy: true, Heartbeats: true, Sampling: tc.sampling}, nil)
			var steps []step
			listen(env, &steps)
			if _, err := run(t, env, ConsensusInput{Prompt: "What is 6*7?", Strategy: StrategyVote, Samples: 3, HubQueue: "hub.gpu", CloudQueue: "cloud"}); err != nil {
				t.Fatal(err)
			}
			check(t, steps, map[string]string{"Logos": tc.logos, "Ethos": "hub.gpu"})
		})
	}
	t.Run("placement hub", func(t *testing.T) {
		env := newEnv(t)
		env.OnActivity(pl.HubAvailable, mock.Anything, "hub.gpu").Return(activities.HubStatus{Healthy: true, Heartbeats: true}, nil)
		_, err := run(t, env, ConsensusInput{Prompt: "What is 6*7?", Strategy: StrategyVote, Samples: 3, HubQueue: "hub.gpu", CloudQueue: "cloud", Placement: PlacementHub})
		if err == nil || !strings.Contains(err.Error(), "does not sample") {
			t.Fatalf("err %v, want a refusal saying the hub does not sample", err)
		}
	})
}
