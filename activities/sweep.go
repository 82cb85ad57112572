package activities

import (
	"context"
	"errors"

	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/api/serviceerror"
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

// Start starts the account's next flush; a flush already started under
// that id (a racing trigger) is not an error.
func (f *FlushStarter) Start(ctx context.Context, account string) (string, error) {
	id, err := f.Store.NextFlushID(ctx, account)
	if err != nil {
		return "", err
	}
	_, err = f.Temporal.ExecuteWorkflow(ctx, client.StartWorkflowOptions{
		ID: id, TaskQueue: f.Queue,
		WorkflowIDConflictPolicy: enumspb.WORKFLOW_ID_CONFLICT_POLICY_USE_EXISTING,
		WorkflowIDReusePolicy:    enumspb.WORKFLOW_ID_REUSE_POLICY_REJECT_DUPLICATE,
	}, f.Workflow, f.NewInput(account, id))
	var started *serviceerror.WorkflowExecutionAlreadyStarted
	if errors.As(err, &started) {
		return id, nil
	}
	return id, err
}

// Sweep starts a flush for every account with a cent or more unbilled, a
// Stripe customer and no flush in flight: the schedule's way to bill small
// balances that never reach their threshold.
func (f *FlushStarter) Sweep(ctx context.Context) ([]string, error) {
	accounts, err := f.Store.FlushableAccounts(ctx)
	if err != nil {
		return nil, err
	}
	var ids []string
	for _, a := range accounts {
		id, err := f.Start(ctx, a)
		if err != nil {
			return ids, err
		}
		ids = append(ids, id)
	}
	return ids, nil
}
