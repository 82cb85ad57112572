package workflows

import (
	"time"

	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"github.com/superinstance/mesh/activities"
)

// RenewCertWorkflow has the CA role sign a hub's renewal. A bridge starts
// it (it holds no CA key); the signing runs on activities.CAQueue, which
// only `si server --roles ca` polls.
func RenewCertWorkflow(ctx workflow.Context, in activities.RenewCertInput) (activities.RenewCertResult, error) {
	ctx = workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
		TaskQueue: activities.CAQueue,
		// A renewal waits for a CA role that is down for a while; the hub
		// asks again later if this gives up.
		ScheduleToCloseTimeout: 2 * time.Minute,
		StartToCloseTimeout:    30 * time.Second,
		RetryPolicy: &temporal.RetryPolicy{InitialInterval: time.Second, MaximumInterval: 10 * time.Second,
			NonRetryableErrorTypes: []string{activities.ErrRenewRefused}},
	})
	var ca *activities.CA
	var res activities.RenewCertResult
	err := workflow.ExecuteActivity(ctx, ca.RenewCert, in).Get(ctx, &res)
	return res, err
}
