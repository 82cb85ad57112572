package workflows

import (
	"context"
	"fmt"
	"slices"
	"testing"

	"github.com/stretchr/testify/mock"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/testsuite"

	"github.com/superinstance/mesh/activities"
)

func TestWarmupLoadsTheNamedAdaptersInOrder(t *testing.T) {
	var s testsuite.WorkflowTestSuite
	env := s.NewTestWorkflowEnvironment()
	var a *activities.Adapters
	var used []string
	env.OnActivity(a.UseLoRA, mock.Anything, mock.Anything).Return(func(_ context.Context, in activities.UseLoRAInput) (bool, error) {
		used = append(used, in.ID)
		switch {
		case in.Account != "alice":
			return false, fmt.Errorf("account %s", in.Account)
		case in.ID == "lora-bobs":
			return false, temporal.NewNonRetryableApplicationError("adapter lora-bobs not found", activities.ErrLoRANotFound, nil)
		case in.ID == "lora-broken":
			return false, temporal.NewNonRetryableApplicationError("the backend refused it", activities.ErrLoRALoad, nil)
		}
		return true, nil
	})
	named := []string{"lora-a", "lora-bobs", "lora-a", "lora-broken", "lora-b"}
	for i := range 10 {
		named = append(named, fmt.Sprintf("lora-x%d", i))
	}
	env.ExecuteWorkflow(WarmupWorkflow, WarmupInput{DeviceID: "gpu-1", Account: "alice", Reason: "GPU load 95%", LoRA: "lora-a", LoRAs: named})
	var res WarmupResult
	if err := env.GetWorkflowResult(&res); err != nil {
		t.Fatal(err)
	}
	// Each once, most recent first, at most MaxWarmupLoRAs; refused and
	// failed ones are not loaded, and the rest still are.
	want := []string{"lora-a", "lora-bobs", "lora-broken", "lora-b", "lora-x0", "lora-x1", "lora-x2", "lora-x3"}
	if !slices.Equal(used, want) {
		t.Fatalf("UseLoRA called for %v, want %v", used, want)
	}
	if loaded := []string{"lora-a", "lora-b", "lora-x0", "lora-x1", "lora-x2", "lora-x3"}; !slices.Equal(res.Loaded, loaded) {
		t.Fatalf("loaded %v, want %v", res.Loaded, loaded)
	}
	if !slices.Equal(res.Refused, []string{"lora-bobs"}) {
		t.Fatalf("refused %v", res.Refused)
	}
}

func TestWarmupWithoutAdaptersLoadsNothing(t *testing.T) {
	var s testsuite.WorkflowTestSuite
	env := s.NewTestWorkflowEnvironment()
	env.ExecuteWorkflow(WarmupWorkflow, WarmupInput{DeviceID: "gpu-1", Account: "alice", Reason: "GPU at 85°C"})
	var res WarmupResult
	if err := env.GetWorkflowResult(&res); err != nil || len(res.Loaded) != 0 || res.DeviceID != "gpu-1" {
		t.Fatalf("%+v %v", res, err)
	}
}
