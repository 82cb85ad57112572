package workflows

import (
	"time"

	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"github.com/superinstance/mesh/activities"
	"github.com/superinstance/mesh/internal/store"
)

// RecordRunInput is what RecordRunWorkflow writes: a consensus's outcome
// and the hold to release.
type RecordRunInput struct {
	Run store.ConsensusRun
	// Hold is the id of the run's hold to release; empty releases none.
	Hold string
}

// RecordRunWait bounds how long RecordRunWorkflow waits for PostgreSQL.
const RecordRunWait = 7 * 24 * time.Hour

// RecordRunWorkflow records a consensus that failed because PostgreSQL was
// unreachable, and releases its hold, once PostgreSQL answers again. The
// consensus starts it and fails at once rather than waiting for the
// database itself.
func RecordRunWorkflow(ctx workflow.Context, in RecordRunInput) error {
	ctx = workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
		StartToCloseTimeout:    10 * time.Second,
		ScheduleToCloseTimeout: RecordRunWait,
		RetryPolicy:            &temporal.RetryPolicy{InitialInterval: time.Second, MaximumInterval: time.Minute},
	})
	var l *activities.Ledger
	var r *activities.Records
	if in.Hold != "" {
		if err := workflow.ExecuteActivity(ctx, l.Release, in.Hold).Get(ctx, nil); err != nil {
			workflow.GetLogger(ctx).Error("releasing the run's hold failed; it expires by itself", "hold", in.Hold, "error", err)
		}
	}
	return workflow.ExecuteActivity(ctx, r.RecordConsensus, in.Run).Get(ctx, nil)
}
