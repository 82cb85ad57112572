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
	// SendAttempts bounds one round of quick tries to reach Stripe; when it
	// runs out without an answer the flush is in doubt and is tried again
	// every RetryEvery. Default 12 (about 10 minutes).
	SendAttempts int32
	// RetryEvery is the pause between rounds of a flush in doubt. Default 10m.
	RetryEvery time.Duration `json:",omitempty"`
	// Window is how long after the first request the flush may be sent
	// again without asking Stripe first: inside Stripe's 24-hour uniqueness
	// window for the identifier, with a margin. Default 23h.
	Window time.Duration `json:",omitempty"`
	// Settle is how long after a send that followed a reconciliation the
	// flush is reconciled once more, to cancel a copy that Stripe's
	// summaries had not counted yet. Default 1h.
	Settle time.Duration `json:",omitempty"`
}

// FlushResult is how a flush ended.
type FlushResult struct {
	Flush store.Flush
	// Skipped says why no flush was needed (nothing to flush, one in flight, no customer).
	Skipped string `json:",omitempty"`
	// Reconciled is the last reconciliation against Stripe's summaries, if any.
	Reconciled *activities.Reconciled `json:",omitempty"`
}

// flushReserved is the change id of flushes reserved before their workflow
// starts (store.ReserveFlush) and kept in doubt when Stripe's answer is lost.
const flushReserved = "flush-reserved-in-doubt"

// FlushWorkflow moves a reserved flush's whole cents to Stripe as one
// billing meter event, under the flush's own identifier and idempotency key
// on every request. Stripe accepting it, or answering that it already holds
// the identifier, completes it (exactly what was sent is subtracted). A
// definite refusal (a 4xx other than 409 and 429) fails it, and the cents
// are unbilled again. Anything else leaves it in doubt: it is retried under
// the same identifier for as long as Stripe keeps identifiers unique, and
// past that it is reconciled against Stripe's meter event summaries before
// anything is sent again; a copy Stripe holds twice is cancelled.
func FlushWorkflow(ctx workflow.Context, in FlushInput) (FlushResult, error) {
	if in.SendAttempts == 0 {
		in.SendAttempts = 12
	}
	if workflow.GetVersion(ctx, flushReserved, workflow.DefaultVersion, 1) == workflow.DefaultVersion {
		return flushV0(ctx, in)
	}
	if in.RetryEvery <= 0 {
		in.RetryEvery = 10 * time.Minute
	}
	if in.Window <= 0 {
		in.Window = 23 * time.Hour
	}
	if in.Settle <= 0 {
		in.Settle = time.Hour
	}
	db, send := flushOptions(ctx, in)
	var b *activities.Billing
	setState := func(state string) {
		// Visibility only: a namespace without the attributes still flushes.
		if err := workflow.UpsertTypedSearchAttributes(ctx, FlushStateAttr.ValueSet(state), FlushAccountAttr.ValueSet(in.Account)); err != nil {
			workflow.GetLogger(ctx).Warn("flush search attributes", "error", err)
		}
	}
	var started activities.StartedFlush
	if err := workflow.ExecuteActivity(db, b.OpenFlush, activities.FlushStart{Account: in.Account, FlushID: in.FlushID}).Get(ctx, &started); err != nil {
		var ae *temporal.ApplicationError
		if errors.As(err, &ae) && (ae.Type() == activities.ErrUnknownFlush || ae.Type() == activities.ErrNoStripeCustomer) {
			return FlushResult{Skipped: ae.Message()}, nil
		}
		return FlushResult{}, err
	}
	setState(started.Flush.State)
	if !started.Flush.Open() {
		return FlushResult{Flush: started.Flush}, nil
	}
	complete := func(res FlushResult) (FlushResult, error) {
		if err := workflow.ExecuteActivity(db, b.CompleteFlush, in.FlushID).Get(ctx, &res.Flush); err != nil {
			return res, err
		}
		setState(res.Flush.State)
		return res, nil
	}
	// windowFrom is when Stripe's uniqueness window for the identifier
	// began at the earliest: the first request, or a resend after Stripe
	// was found to hold nothing.
	windowFrom := started.Flush.FirstAttemptAt
	resent := false
	var res FlushResult
	for {
		if !windowFrom.IsZero() && !workflow.Now(ctx).Before(windowFrom.Add(in.Window)) {
			var r activities.Reconciled
			if err := workflow.ExecuteActivity(db, b.ReconcileFlush, started).Get(ctx, &r); err != nil {
				return res, err
			}
			res.Reconciled = &r
			switch r.Outcome {
			case activities.ReconcileCommitted, activities.ReconcileOverbilled:
				// Overbilled (recorded on the flush): Stripe holds it, more than
				// once, and will not cancel the copies; waiting changes nothing.
				return complete(res)
			case activities.ReconcileAbsent:
				windowFrom, resent = workflow.Now(ctx), true
			default:
				if err := workflow.ExecuteActivity(db, b.MarkInDoubt, in.FlushID, "reconcile: Stripe's summaries match neither the flush sent nor not sent").Get(ctx, nil); err != nil {
					return res, err
				}
				if err := workflow.Sleep(ctx, in.RetryEvery); err != nil {
					return res, err
				}
				continue
			}
		}
		err := workflow.ExecuteActivity(send, b.SendFlush, started).Get(ctx, nil)
		if err == nil {
			res, err := complete(res)
			if err != nil || !resent {
				return res, err
			}
			// Summaries are eventually consistent: the copy that seemed
			// absent may surface; a later look cancels it while Stripe still can.
			if err := workflow.Sleep(ctx, in.Settle); err != nil {
				return res, err
			}
			var r activities.Reconciled
			if err := workflow.ExecuteActivity(db, b.ReconcileFlush, started).Get(ctx, &r); err != nil {
				return res, err
			}
			res.Reconciled = &r
			return res, nil
		}
		var ae *temporal.ApplicationError
		if errors.As(err, &ae) && ae.Type() == activities.ErrStripeRejected {
			var f store.Flush
			if ferr := workflow.ExecuteActivity(db, b.RefuseFlush, in.FlushID, cause(err)).Get(ctx, &f); ferr != nil {
				return FlushResult{}, ferr
			}
			setState(f.State)
			return FlushResult{Flush: f}, temporal.NewNonRetryableApplicationError("flush "+in.FlushID+" failed: "+cause(err), ErrFlushFailed, err)
		}
		var f store.Flush
		if err := workflow.ExecuteActivity(db, b.MarkInDoubt, in.FlushID, cause(err)).Get(ctx, &f); err != nil {
			return res, err
		}
		if !f.Open() {
			res.Flush = f
			setState(f.State)
			return res, nil
		}
		setState(f.State)
		if windowFrom.IsZero() || (!resent && f.FirstAttemptAt.Before(windowFrom)) {
			windowFrom = f.FirstAttemptAt
		}
		if err := workflow.Sleep(ctx, in.RetryEvery); err != nil {
			return res, err
		}
	}
}

func flushOptions(ctx workflow.Context, in FlushInput) (db, send workflow.Context) {
	db = workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
		StartToCloseTimeout: 10 * time.Second,
		RetryPolicy:         &temporal.RetryPolicy{InitialInterval: 500 * time.Millisecond, MaximumInterval: 30 * time.Second},
	})
	send = workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
		StartToCloseTimeout: 30 * time.Second,
		RetryPolicy: &temporal.RetryPolicy{
			InitialInterval: time.Second, BackoffCoefficient: 2, MaximumInterval: 2 * time.Minute,
			MaximumAttempts: in.SendAttempts, NonRetryableErrorTypes: []string{activities.ErrStripeRejected},
		},
	})
	return db, send
}

// flushV0 is the flush as recorded before flushes were reserved ahead of
// their workflow: it reserves the cents itself. Its histories replay here.
func flushV0(ctx workflow.Context, in FlushInput) (FlushResult, error) {
	db, send := flushOptions(ctx, in)
	var b *activities.Billing
	var started activities.StartedFlush
	if err := workflow.ExecuteActivity(db, b.StartFlush, activities.FlushStart{Account: in.Account, FlushID: in.FlushID}).Get(ctx, &started); err != nil {
		var ae *temporal.ApplicationError
		if errors.As(err, &ae) {
			switch ae.Type() {
			case activities.ErrNothingToFlush, activities.ErrFlushInFlight, activities.ErrNoStripeCustomer, activities.ErrNotBillable:
				return FlushResult{Skipped: ae.Message()}, nil
			}
		}
		return FlushResult{}, err
	}
	if err := workflow.ExecuteActivity(send, b.SendFlush, started).Get(ctx, nil); err != nil {
		var f store.Flush
		// A flush in doubt is not failed (FailFlush refuses): this run ends
		// with that error and the sweep starts the flush again.
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
