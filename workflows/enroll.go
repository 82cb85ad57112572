package workflows

import (
	"time"

	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"github.com/superinstance/mesh/activities"
)

// EnrollWorkflow has the CA role spend a new hub's one-time enrollment
// token and sign its first certificate. A bridge starts it for a hub that
// connected with pki.EnrollALPN (it holds no CA key, and passes the token's
// hash, never the token); the signing runs on activities.CAQueue, which only
// `si server --roles ca` polls.
func EnrollWorkflow(ctx workflow.Context, in activities.EnrollInput) (activities.EnrollResult, error) {
	ctx = workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
		TaskQueue: activities.CAQueue,
		// The hub waits on its connection for this; it enrolls again (the
		// token unspent) if the CA role stays down longer.
		ScheduleToCloseTimeout: time.Minute,
		StartToCloseTimeout:    30 * time.Second,
		RetryPolicy: &temporal.RetryPolicy{InitialInterval: time.Second, MaximumInterval: 10 * time.Second,
			NonRetryableErrorTypes: []string{activities.ErrRenewRefused}},
	})
	var ca *activities.CA
	var res activities.EnrollResult
	err := workflow.ExecuteActivity(ctx, ca.Enroll, in).Get(ctx, &res)
	return res, err
}
