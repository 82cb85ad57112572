package activities

import (
	"context"
	"errors"
	"fmt"

	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/client"

	"github.com/superinstance/mesh/internal/store"
)

// FlushStarter starts flush workflows; Ledger and the sweep use it.
type FlushStarter struct {
	Store    *store.Store
	Temporal client.Client
	// Queue runs the flush workflows (the cloud queue).
	Queue string
	// Workflow is the flush workflow function (workflows.FlushWorkflow); it
	// is passed in because workflows depend on this package.
	Workflow any
	// NewInput builds its input from an account and a flush id.
	NewInput func(account, flushID string) any
}

// FlushStarted is what Start did.
type FlushStarted struct {
	// Flush is the account's open flush: the one reserved now, or the one
	// that was already open (its cents may be at Stripe, so no second one
	// is reserved while it is).
	Flush store.Flush
	// Reserved is true when Flush was reserved by this call.
	Reserved bool
	// RunID is the flush workflow's run, started now or found running.
	RunID string
}

// Start reserves the account's unbilled whole cents as a new flush, its id
// taken in the same transaction, and then starts the flush's workflow under
// that id. An account with an open flush gets that flush's workflow
// (re)started instead. Nothing to flush is store.ErrNothingToFlush and
// consumes no id; an account without a Stripe customer is
// store.ErrNoStripeCustomer.
func (f *FlushStarter) Start(ctx context.Context, account string) (FlushStarted, error) {
	fl, reserved, err := f.Store.ReserveFlush(ctx, account)
	if err != nil {
		return FlushStarted{}, err
	}
	run, err := f.Ensure(ctx, fl)
	return FlushStarted{Flush: fl, Reserved: reserved, RunID: run}, err
}

// Ensure makes sure an open flush has its workflow running: a workflow
// already running under the flush's id is that flush (ids are never
// reused) and is left alone; one that ended while the flush is still open
// (a crash between reservation and start, a workflow that gave up) is
// started again, and carries on under the same Stripe identifier.
func (f *FlushStarter) Ensure(ctx context.Context, fl store.Flush) (string, error) {
	if !fl.Open() {
		return "", nil
	}
	run, err := f.Temporal.ExecuteWorkflow(ctx, client.StartWorkflowOptions{
		ID: fl.ID, TaskQueue: f.Queue,
		WorkflowIDConflictPolicy: enumspb.WORKFLOW_ID_CONFLICT_POLICY_USE_EXISTING,
		WorkflowIDReusePolicy:    enumspb.WORKFLOW_ID_REUSE_POLICY_ALLOW_DUPLICATE,
	}, f.Workflow, f.NewInput(fl.Account, fl.ID))
	if err != nil {
		return "", fmt.Errorf("starting flush %s: %w", fl.ID, err)
	}
	return run.GetRunID(), nil
}

// Sweep makes sure every open flush has its workflow running, then starts a
// flush for every account with a cent or more unbilled, a Stripe customer,
// its usage subscription once si stripe setup has run, and no open flush
// (store.UnbillableAccounts are skipped and logged): the schedule's way to
// bill small balances that never reach their threshold, and to pick up
// flushes a crash left reserved.
func (f *FlushStarter) Sweep(ctx context.Context) ([]string, error) {
	open, err := f.Store.OpenFlushes(ctx)
	if err != nil {
		return nil, err
	}
	var ids []string
	var errs []error
	for _, fl := range open {
		if _, err := f.Ensure(ctx, fl); err != nil {
			errs = append(errs, err)
			continue
		}
		ids = append(ids, fl.ID)
	}
	// Accounts Stripe cannot invoice are skipped, named, and take no id.
	if nb, err := f.Store.UnbillableAccounts(ctx); err != nil {
		errs = append(errs, err)
	} else if len(nb) > 0 && activity.IsActivity(ctx) {
		activity.GetLogger(ctx).Warn("accounts not billable: no subscription to the metered price (run si stripe setup to subscribe them)", "accounts", nb)
	}
	accounts, err := f.Store.FlushableAccounts(ctx)
	if err != nil {
		return ids, errors.Join(append(errs, err)...)
	}
	for _, a := range accounts {
		s, err := f.Start(ctx, a)
		if errors.Is(err, store.ErrNothingToFlush) || errors.Is(err, store.ErrNoStripeCustomer) || errors.Is(err, store.ErrNoUsageSubscription) {
			continue // changed since the listing
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		ids = append(ids, s.Flush.ID)
	}
	return ids, errors.Join(errs...)
}
