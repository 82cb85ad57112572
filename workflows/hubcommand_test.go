package workflows

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/mock"
	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/testsuite"
	"go.temporal.io/sdk/worker"
	"go.temporal.io/sdk/workflow"

	"github.com/superinstance/mesh/activities"
	"github.com/superinstance/mesh/hub/hubcmd"
)

func hubCommandEnv(t *testing.T, admit activities.HubCommandAdmit, run func(context.Context, hubcmd.RunInput) (hubcmd.RunResult, error)) (*testsuite.TestWorkflowEnvironment, *[]activities.HubCommandOutcome, *int) {
	t.Helper()
	var s testsuite.WorkflowTestSuite
	env := s.NewTestWorkflowEnvironment()
	var a *activities.HubCommands
	env.RegisterActivity(a)
	calls := 0
	env.RegisterActivityWithOptions(func(ctx context.Context, in hubcmd.RunInput) (hubcmd.RunResult, error) {
		calls++
		return run(ctx, in)
	}, activity.RegisterOptions{Name: hubcmd.ActivityRunCommand})
	env.OnActivity(a.AskHubCommand, mock.Anything, mock.Anything).Return(admit, nil)
	var outs []activities.HubCommandOutcome
	env.OnActivity(a.FinishHubCommand, mock.Anything, mock.Anything).Return(func(_ context.Context, o activities.HubCommandOutcome) error {
		outs = append(outs, o)
		return nil
	})
	return env, &outs, &calls
}

func TestHubCommandWorkflowRefusedByTheCloudNeverReachesTheHub(t *testing.T) {
	env, outs, calls := hubCommandEnv(t, activities.HubCommandAdmit{Refused: "no device gpu-1 in account bob"}, nil)
	env.ExecuteWorkflow(HubCommandWorkflow, HubCommandInput{Device: "gpu-1", Account: "bob", Command: "echo"})
	var res HubCommandResult
	if err := env.GetWorkflowResult(&res); err != nil {
		t.Fatal(err)
	}
	if *calls != 0 || res.RefusedBy != "cloud" || len(*outs) != 0 {
		t.Fatalf("calls %d result %+v outcomes %+v", *calls, res, *outs)
	}
}

func TestHubCommandWorkflowRunsOnceAndRecords(t *testing.T) {
	var got hubcmd.RunInput
	env, outs, calls := hubCommandEnv(t, activities.HubCommandAdmit{Account: "acme"}, func(_ context.Context, in hubcmd.RunInput) (hubcmd.RunResult, error) {
		got = in
		return hubcmd.RunResult{Outcome: hubcmd.Outcome{ExitCode: 3, BytesOut: 7, Stdout: []byte("x")}}, nil
	})
	// The asker's account is not what the hub sees: the cloud's answer is.
	env.ExecuteWorkflow(HubCommandWorkflow, HubCommandInput{Device: "gpu-1", Operator: true, AskedBy: "operator", Command: "echo", Args: []string{"a"}, Timeout: 2 * time.Second})
	var res HubCommandResult
	if err := env.GetWorkflowResult(&res); err != nil {
		t.Fatal(err)
	}
	if *calls != 1 || got.Account != "acme" || got.Timeout != 2*time.Second || res.ExitCode != 3 || string(res.Stdout) != "x" {
		t.Fatalf("calls %d input %+v result %+v", *calls, got, res)
	}
	if len(*outs) != 1 || (*outs)[0].ExitCode != 3 || (*outs)[0].BytesOut != 7 {
		t.Fatalf("outcomes %+v", *outs)
	}
}

// A hub that fails mid-run is not asked again: the command might have run.
func TestHubCommandWorkflowNeverRetriesTheHub(t *testing.T) {
	env, outs, calls := hubCommandEnv(t, activities.HubCommandAdmit{Account: "acme"}, func(context.Context, hubcmd.RunInput) (hubcmd.RunResult, error) {
		return hubcmd.RunResult{}, context.DeadlineExceeded
	})
	env.ExecuteWorkflow(HubCommandWorkflow, HubCommandInput{Device: "gpu-1", Command: "echo"})
	var res HubCommandResult
	if err := env.GetWorkflowResult(&res); err != nil {
		t.Fatal(err)
	}
	if *calls != 1 || res.Error == "" || len(*outs) != 1 || (*outs)[0].Error == "" {
		t.Fatalf("calls %d result %+v outcomes %+v", *calls, res, *outs)
	}
}

// TestReplayHubCommandHistory replays runs recorded from a real server
// through a real hub, one of them cancelled while the hub ran its command
// (re-record them with SI_WRITE_HISTORY=1 go test -run
// 'TestHubCommandsThroughTheBridge|TestACancelledHubCommandStopsOnTheHub'
// ./test/integration/).
func TestReplayHubCommandHistory(t *testing.T) {
	r := worker.NewWorkflowReplayer()
	r.RegisterWorkflow(HubCommandWorkflow)
	for _, f := range []string{"hubcommand_history_v0.json", "hubcommand_cancelled_history_v0.json"} {
		if err := r.ReplayWorkflowHistoryFromJSONFile(nil, "testdata/"+f); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
	}
}

// A workflow of an account (a consensus, say) asks a hub as a child: the
// child's own id is the audit's, and the account is the parent's.
func TestHubCommandWorkflowAsAChild(t *testing.T) {
	var got hubcmd.RunInput
	env, outs, calls := hubCommandEnv(t, activities.HubCommandAdmit{Account: "acme"}, func(_ context.Context, in hubcmd.RunInput) (hubcmd.RunResult, error) {
		got = in
		return hubcmd.RunResult{Outcome: hubcmd.Outcome{Stdout: []byte("ok")}}, nil
	})
	parent := func(ctx workflow.Context) (HubCommandResult, error) {
		var res HubCommandResult
		ctx = workflow.WithChildOptions(ctx, workflow.ChildWorkflowOptions{WorkflowID: "parent-1/hubcmd"})
		err := workflow.ExecuteChildWorkflow(ctx, HubCommandWorkflow, HubCommandInput{Device: "gpu-1", Account: "acme",
			AskedBy: "consensus parent-1", Command: "echo"}).Get(ctx, &res)
		return res, err
	}
	env.RegisterWorkflow(HubCommandWorkflow)
	env.RegisterWorkflowWithOptions(parent, workflow.RegisterOptions{Name: "Parent"})
	env.ExecuteWorkflow("Parent")
	var res HubCommandResult
	if err := env.GetWorkflowResult(&res); err != nil {
		t.Fatal(err)
	}
	if *calls != 1 || res.ID != "parent-1/hubcmd" || string(res.Stdout) != "ok" || got.AskedBy != "consensus parent-1" || len(*outs) != 1 || (*outs)[0].ID != "parent-1/hubcmd" {
		t.Fatalf("calls %d result %+v input %+v outcomes %+v", *calls, res, got, *outs)
	}
}
