package workflows

import (
	"errors"
	"time"

	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"github.com/superinstance/mesh/activities"
	"github.com/superinstance/mesh/internal/store"
)

// ErrFlushFailed is the type of a flush that Stripe refused for good.
const ErrFlushFailed = "FlushFailed"

// FlushInput names the flush; the workflow id is the flush id.
type FlushInput struct {
	Account string
	FlushID string
	// SendAttempts bounds the tries to reach Stripe. Default 12 (about 10 minutes).
	SendAttempts int32
}

// FlushResult is how a flush ended.
type FlushResult struct {
	Flush store.Flush
	// Skipped says why no flush was needed (nothing to flush, one in flight, no customer).
	Skipped string `json:",omitempty"`
}

// FlushWorkflow moves an account's unbilled whole cents to Stripe as one
// billing meter event: it reserves the cents, sends them with the same
// idempotency key on every retry (backing off on network errors, 429 and
// 5xx), and on success subtracts exactly what was sent. A permanent refusal
// marks the flush failed, visible in `si billing flushes`, and the balance
// stays for a later flush.
func FlushWorkflow(ctx workflow.Context, in FlushInput) (FlushResult, error) {
	if in.SendAttempts == 0 {
		in.SendAttempts = 12
	}
	db := workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
		StartToCloseTimeout: 10 * time.Second,
		RetryPolicy:         &temporal.RetryPolicy{InitialInterval: 500 * time.Millisecond, MaximumInterval: 30 * time.Second},
	})
	var b *activities.Billing
	var started activities.StartedFlush
	if err := workflow.ExecuteActivity(db, b.StartFlush, activities.FlushStart{Account: in.Account, FlushID: in.FlushID}).Get(ctx, &started); err != nil {
		var ae *temporal.ApplicationError
		if errors.As(err, &ae) {
			switch ae.Type() {
			case activities.ErrNothingToFlush, activities.ErrFlushInFlight, activities.ErrNoStripeCustomer:
				return FlushResult{Skipped: ae.Message()}, nil
			}
		}
		return FlushResult{}, err
	}
	send := workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
		StartToCloseTimeout: 30 * time.Second,
		RetryPolicy: &temporal.RetryPolicy{
			InitialInterval: time.Second, BackoffCoefficient: 2, MaximumInterval: 2 * time.Minute,
			MaximumAttempts: in.SendAttempts, NonRetryableErrorTypes: []string{activities.ErrStripeRejected},
		},
	})
	if err := workflow.ExecuteActivity(send, b.SendFlush, started).Get(ctx, nil); err != nil {
		var f store.Flush
		if ferr := workflow.ExecuteActivity(db, b.FailFlush, in.FlushID, cause(err)).Get(ctx, &f); ferr != nil {
			return FlushResult{}, ferr
		}
		return FlushResult{Flush: f}, temporal.NewNonRetryableApplicationError("flush "+in.FlushID+" failed: "+cause(err), ErrFlushFailed, err)
	}
	var f store.Flush
	if err := workflow.ExecuteActivity(db, b.CompleteFlush, in.FlushID).Get(ctx, &f); err != nil {
		return FlushResult{}, err
	}
	return FlushResult{Flush: f}, nil
}

// SweepWorkflow starts a flush for every account with a billable balance; a
// schedule runs it (hourly by default) so small balances reach Stripe too.
func SweepWorkflow(ctx workflow.Context) ([]string, error) {
	actx := workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
		StartToCloseTimeout: time.Minute,
		RetryPolicy:         &temporal.RetryPolicy{InitialInterval: time.Second, MaximumAttempts: 5},
	})
	var f *activities.FlushStarter
	var ids []string
	err := workflow.ExecuteActivity(actx, f.Sweep).Get(ctx, &ids)
	return ids, err
}
