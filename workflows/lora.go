package workflows

import (
	"errors"
	"time"

	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"github.com/superinstance/mesh/activities"
	"github.com/superinstance/mesh/internal/store"
)

// LoRAPushResult is what a push registered.
type LoRAPushResult struct {
	ID string
	// Existing is true when the owner had already registered these bytes.
	Existing bool
	State    string
}

// ErrLoRAPushFailed is the error type of a push that failed and was undone.
const ErrLoRAPushFailed = "LoRAPushFailed"

// LoRAPushWorkflowID is the push workflow's id: one per owner and checksum,
// so pushing the same adapter twice joins or repeats one registration.
func LoRAPushWorkflowID(owner, sha256 string) string { return "lora-push/" + owner + "/" + sha256 }

// LoRAPushWorkflow turns an uploaded adapter into an available one: verify
// the stored object (size and SHA-256), register it, load it into the
// inference backend, mark it available. A failure after the upload undoes
// what was done (unload, unregister, delete the object) and says why.
func LoRAPushWorkflow(ctx workflow.Context, in activities.LoRAPushInput) (LoRAPushResult, error) {
	var a *activities.Adapters
	ctx = workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
		StartToCloseTimeout: 5 * time.Minute,
		RetryPolicy: &temporal.RetryPolicy{InitialInterval: 500 * time.Millisecond, MaximumInterval: 10 * time.Second,
			MaximumAttempts: 5},
	})
	undo := func(id string, cause error) (LoRAPushResult, error) {
		dctx, _ := workflow.NewDisconnectedContext(ctx)
		dctx = workflow.WithActivityOptions(dctx, workflow.ActivityOptions{StartToCloseTimeout: time.Minute,
			RetryPolicy: &temporal.RetryPolicy{InitialInterval: time.Second, MaximumInterval: 30 * time.Second}})
		if id != "" {
			if err := workflow.ExecuteActivity(dctx, a.UnregisterLoRA, id).Get(dctx, nil); err != nil {
				workflow.GetLogger(ctx).Error("unregistering after a failed push", "id", id, "error", err)
			}
		}
		if err := workflow.ExecuteActivity(dctx, a.DeleteLoRAObject, in.Owner, in.SHA256).Get(dctx, nil); err != nil {
			workflow.GetLogger(ctx).Error("deleting the object after a failed push", "error", err)
		}
		return LoRAPushResult{ID: id}, temporal.NewNonRetryableApplicationError(
			"push failed and was undone (adapter unregistered, object deleted): "+cause.Error(), ErrLoRAPushFailed, cause)
	}

	if err := workflow.ExecuteActivity(ctx, a.VerifyLoRAObject, in).Get(ctx, nil); err != nil {
		return undo("", err)
	}
	var reg activities.RegisterLoRAResult
	if err := workflow.ExecuteActivity(ctx, a.RegisterLoRA, in).Get(ctx, &reg); err != nil {
		var ae *temporal.ApplicationError
		if errors.As(err, &ae) && (ae.Type() == activities.ErrLoRAForbidden || ae.Type() == activities.ErrLoRANotFound) {
			// Someone else's project: the owner's earlier registrations of
			// these bytes, if any, keep the object.
			return LoRAPushResult{}, temporal.NewNonRetryableApplicationError(ae.Message(), ae.Type(), err)
		}
		return undo("", err)
	}
	if !reg.Created && reg.State == store.LoRAAvailable {
		return LoRAPushResult{ID: reg.ID, Existing: true, State: reg.State}, nil
	}
	loadCtx := workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
		StartToCloseTimeout: 10 * time.Minute,
		RetryPolicy: &temporal.RetryPolicy{InitialInterval: time.Second, MaximumInterval: 10 * time.Second, MaximumAttempts: 3,
			NonRetryableErrorTypes: []string{activities.ErrLoRALoad}},
	})
	if err := workflow.ExecuteActivity(loadCtx, a.LoadLoRA, reg.ID).Get(ctx, nil); err != nil {
		return undo(reg.ID, err)
	}
	if err := workflow.ExecuteActivity(ctx, a.MarkLoRAAvailable, reg.ID).Get(ctx, nil); err != nil {
		return undo(reg.ID, err)
	}
	return LoRAPushResult{ID: reg.ID, Existing: !reg.Created, State: store.LoRAAvailable}, nil
}

// LoRARemoveWorkflowID is the removal workflow's id.
func LoRARemoveWorkflowID(id string) string { return "lora-rm/" + id }

// LoRARemoveWorkflow removes an adapter the caller may remove: mark it
// deleting, unload it, delete its registry row, then its object.
func LoRARemoveWorkflow(ctx workflow.Context, in activities.RemoveLoRAInput) error {
	var a *activities.Adapters
	ctx = workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
		StartToCloseTimeout: time.Minute,
		RetryPolicy:         &temporal.RetryPolicy{InitialInterval: 500 * time.Millisecond, MaximumInterval: 30 * time.Second},
	})
	var l store.LoRA
	if err := workflow.ExecuteActivity(ctx, a.PrepareRemoveLoRA, in).Get(ctx, &l); err != nil {
		var ae *temporal.ApplicationError
		if errors.As(err, &ae) {
			return temporal.NewNonRetryableApplicationError(ae.Message(), ae.Type(), err)
		}
		return err
	}
	if err := workflow.ExecuteActivity(ctx, a.UnregisterLoRA, l.ID).Get(ctx, nil); err != nil {
		return err
	}
	return workflow.ExecuteActivity(ctx, a.DeleteLoRAObject, l.Owner, l.SHA256).Get(ctx, nil)
}
