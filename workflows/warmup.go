package workflows

import (
	"go.temporal.io/sdk/workflow"
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
// warms once. The base models are always served; adapter loading joins here
// with LoRA hot-swap.
func WarmupWorkflow(ctx workflow.Context, in WarmupInput) (WarmupResult, error) {
	workflow.GetLogger(ctx).Info("pre-warm", "device", in.DeviceID, "reason", in.Reason)
	return WarmupResult{DeviceID: in.DeviceID, Reason: in.Reason, Loaded: []string{}}, nil
}
