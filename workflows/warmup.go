package workflows

import (
	"time"

	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"github.com/superinstance/mesh/activities"
)

// WarmupInput is a hub's pre-warm signal, as the bridge received it.
type WarmupInput struct {
	DeviceID string
	Account  string
	Reason   string
	GPULoad  float64
	TempC    float64
	// LoRA is the adapter the hub expects to hand over, if any.
	LoRA string
}

// WarmupResult says what the cloud made ready.
type WarmupResult struct {
	DeviceID string
	Reason   string
	// Loaded lists the adapters loaded ahead of need.
	Loaded []string
}

// WarmupWorkflow gets the cloud ready to take a hot hub's work. Its id is
// derived from the device and the minute, so a burst of signals from one hub
// warms once. The base models are always served; an adapter the hub names is
// loaded ahead of need, if the hub's account may use it. Warm-up is best
// effort: an adapter that cannot be loaded is logged, not retried forever.
func WarmupWorkflow(ctx workflow.Context, in WarmupInput) (WarmupResult, error) {
	log := workflow.GetLogger(ctx)
	log.Info("pre-warm", "device", in.DeviceID, "reason", in.Reason)
	res := WarmupResult{DeviceID: in.DeviceID, Reason: in.Reason, Loaded: []string{}}
	if workflow.GetVersion(ctx, "warmup-loads-lora", workflow.DefaultVersion, 1) == workflow.DefaultVersion || in.LoRA == "" {
		return res, nil
	}
	var a *activities.Adapters
	actx := workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
		StartToCloseTimeout: 5 * time.Minute,
		RetryPolicy: &temporal.RetryPolicy{InitialInterval: time.Second, MaximumAttempts: 3,
			NonRetryableErrorTypes: []string{activities.ErrLoRANotFound, activities.ErrLoRAUnavailable, activities.ErrLoRALoad}},
	})
	if err := workflow.ExecuteActivity(actx, a.UseLoRA, activities.UseLoRAInput{Account: in.Account, ID: in.LoRA}).Get(ctx, nil); err != nil {
		log.Warn("pre-warm could not load the adapter", "lora", in.LoRA, "error", err)
		return res, nil
	}
	res.Loaded = append(res.Loaded, in.LoRA)
	return res, nil
}
