package workflows

import (
	"errors"
	"slices"
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
	// LoRAs are the adapters of the hub's recent escalations, most recent
	// first (LoRA is the first of them when both are set); the bridge has
	// left out those the account may not use.
	LoRAs []string
}

// MaxWarmupLoRAs bounds the adapters one warm-up loads.
const MaxWarmupLoRAs = 8

// WarmupResult says what the cloud made ready.
type WarmupResult struct {
	DeviceID string
	Reason   string
	// Loaded lists the adapters loaded ahead of need (or found loaded).
	Loaded []string
	// Refused lists the adapters the account may not use, or that are not
	// available: none of them is loaded.
	Refused []string `json:",omitempty"`
}

// WarmupWorkflow gets the cloud ready to take a hot hub's work. Its id is
// derived from the device and the minute, so a burst of signals from one hub
// warms once. The base models are always served; the adapters the hub names
// (those of its latest escalations, most recent first) are loaded ahead of
// need, each only if the hub's account may use it, by the rule an
// escalation's adapter meets (UseLoRA). Warm-up is best effort: an adapter
// that is refused or cannot be loaded is logged, not retried forever.
func WarmupWorkflow(ctx workflow.Context, in WarmupInput) (WarmupResult, error) {
	log := workflow.GetLogger(ctx)
	log.Info("pre-warm", "device", in.DeviceID, "reason", in.Reason)
	res := WarmupResult{DeviceID: in.DeviceID, Reason: in.Reason, Loaded: []string{}}
	v := workflow.GetVersion(ctx, "warmup-loads-lora", workflow.DefaultVersion, 2)
	if v == workflow.DefaultVersion {
		return res, nil
	}
	loras := in.adapters()
	if v == 1 {
		// Version 1 loaded the one adapter in.LoRA named.
		loras = nil
		if in.LoRA != "" {
			loras = []string{in.LoRA}
		}
	}
	var a *activities.Adapters
	actx := workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
		StartToCloseTimeout: 5 * time.Minute,
		RetryPolicy: &temporal.RetryPolicy{InitialInterval: time.Second, MaximumAttempts: 3,
			NonRetryableErrorTypes: []string{activities.ErrLoRANotFound, activities.ErrLoRAUnavailable, activities.ErrLoRALoad}},
	})
	// The most recent first: the hub's next escalation most likely names it.
	for _, l := range loras {
		err := workflow.ExecuteActivity(actx, a.UseLoRA, activities.UseLoRAInput{Account: in.Account, ID: l}).Get(ctx, nil)
		var app *temporal.ApplicationError
		switch {
		case err == nil:
			res.Loaded = append(res.Loaded, l)
		case errors.As(err, &app) && (app.Type() == activities.ErrLoRANotFound || app.Type() == activities.ErrLoRAUnavailable):
			log.Warn("pre-warm refused an adapter: the account may not use it, or it is not available", "lora", l, "account", in.Account, "device", in.DeviceID, "error", err)
			res.Refused = append(res.Refused, l)
		default:
			log.Warn("pre-warm could not load the adapter", "lora", l, "error", err)
		}
	}
	return res, nil
}

// adapters lists LoRA then LoRAs, each once, at most MaxWarmupLoRAs.
func (in WarmupInput) adapters() []string {
	var out []string
	for _, l := range append([]string{in.LoRA}, in.LoRAs...) {
		if l != "" && !slices.Contains(out, l) && len(out) < MaxWarmupLoRAs {
			out = append(out, l)
		}
	}
	return out
}
