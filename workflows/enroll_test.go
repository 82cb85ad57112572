package workflows

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/stretchr/testify/mock"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/testsuite"

	"github.com/superinstance/mesh/activities"
)

// TestEnrollWorkflow: the CA role's answer is the workflow's result; its
// refusal (a spent token, say) is not retried; an outage is, until the
// CA role answers.
func TestEnrollWorkflow(t *testing.T) {
	in := activities.EnrollInput{TokenHash: make([]byte, 32), DeviceID: "gpu-1", CSR: []byte{1}}
	run := func(answers ...error) (*testsuite.TestWorkflowEnvironment, int) {
		var s testsuite.WorkflowTestSuite
		env := s.NewTestWorkflowEnvironment()
		ca := &activities.CA{}
		env.RegisterActivity(ca)
		calls := 0
		env.OnActivity(ca.Enroll, mock.Anything, in).Return(func(context.Context, activities.EnrollInput) (activities.EnrollResult, error) {
			calls++
			if calls <= len(answers) && answers[calls-1] != nil {
				return activities.EnrollResult{}, answers[calls-1]
			}
			return activities.EnrollResult{Account: "acme", CertPEM: []byte("cert"), CAPEM: []byte("ca")}, nil
		})
		env.ExecuteWorkflow(EnrollWorkflow, in)
		return env, calls
	}
	env, calls := run()
	var res activities.EnrollResult
	if err := env.GetWorkflowResult(&res); err != nil || res.Account != "acme" || calls != 1 {
		t.Fatalf("enrolled %+v after %d calls: %v", res, calls, err)
	}
	env, calls = run(temporal.NewNonRetryableApplicationError("enrollment refused: the token was used", activities.ErrRenewRefused, nil))
	if err := env.GetWorkflowError(); err == nil || !strings.Contains(err.Error(), "the token was used") || calls != 1 {
		t.Fatalf("a refusal after %d calls: %v", calls, err)
	}
	env, calls = run(errors.New("database down"), errors.New("database down"))
	if err := env.GetWorkflowResult(&res); err != nil || calls != 3 {
		t.Fatalf("an outage: %d calls, %v", calls, err)
	}
}
