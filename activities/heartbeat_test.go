package activities

import (
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/testsuite"
	"go.temporal.io/sdk/worker"
	"go.temporal.io/sdk/workflow"

	"github.com/superinstance/mesh/internal/llm"
)

// A step heartbeats on a timer while its model call runs, so that a worker
// killed mid-call is noticed at the heartbeat timeout, not at StartToClose:
// a call twice as long than the heartbeat timeout completes on its
// first attempt.
func TestStepHeartbeatsWhileTheModelCallRuns(t *testing.T) {
	const call, timeout = 5 * time.Second, 2500 * time.Millisecond
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(call)
		(&server{replies: []string{manifest}}).ServeHTTP(w, r)
	}))
	t.Cleanup(slow.Close)
	a := &Inference{LLM: &llm.Client{BaseURL: slow.URL + "/v1"}, Models: Models{Pathos: "m"}}
	step := func(ctx workflow.Context) (PathosOutput, error) {
		ctx = workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
			StartToCloseTimeout: time.Minute, HeartbeatTimeout: timeout,
			RetryPolicy: &temporal.RetryPolicy{MaximumAttempts: 1},
		})
		var out PathosOutput
		err := workflow.ExecuteActivity(ctx, a.Pathos, PathosInput{Question: "2+2?"}).Get(ctx, &out)
		return out, err
	}
	var s testsuite.WorkflowTestSuite
	env := s.NewTestWorkflowEnvironment()
	env.SetTestTimeout(time.Minute)
	// A loaded machine can stall the test workflow's goroutine past the
	// default one second; the heartbeat timeout is what this test is about.
	env.SetWorkerOptions(worker.Options{DeadlockDetectionTimeout: time.Minute})
	env.RegisterWorkflowWithOptions(step, workflow.RegisterOptions{Name: "step"})
	env.RegisterActivity(a)
	env.ExecuteWorkflow("step")
	if err := env.GetWorkflowError(); err != nil {
		t.Fatalf("a %s call under a %s heartbeat timeout: %v", call, timeout, err)
	}
	var out PathosOutput
	if err := env.GetWorkflowResult(&out); err != nil || out.Manifest.Intent != "add" {
		t.Fatalf("result %+v, %v", out, err)
	}
}
