package runner

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"os"
	"time"

	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/client"

	"github.com/superinstance/mesh/activities"
	"github.com/superinstance/mesh/internal/blob"
	"github.com/superinstance/mesh/internal/lora"
	"github.com/superinstance/mesh/workers"
	"github.com/superinstance/mesh/workflows"
)

// Upload is what UploadLoRA did.
type Upload struct {
	// Input is what LoRAPushWorkflow needs to register the adapter.
	Input activities.LoRAPushInput
	// AlreadyStored is true when the same bytes were in the store; nothing was sent.
	AlreadyStored bool
	Result        blob.UploadResult
}

// UploadLoRA stores a validated adapter's weights under the key derived from
// owner and their SHA-256, resuming an interrupted upload of the same bytes.
func UploadLoRA(ctx context.Context, bs *blob.Store, a *lora.Adapter, owner, project string, o blob.UploadOptions) (Upload, error) {
	sum, err := FileSHA256(a.WeightsPath)
	if err != nil {
		return Upload{}, err
	}
	key, err := lora.ObjectKey(owner, sum)
	if err != nil {
		return Upload{}, err
	}
	up := Upload{Input: activities.LoRAPushInput{Owner: owner, Project: project, Name: a.Name, Size: a.Size, SHA256: sum,
		BaseModel: a.Config.BaseModel, Rank: a.Config.Rank, Alpha: a.Config.Alpha, TargetModules: a.Config.TargetModules,
		Config: a.ConfigJSON}}
	if size, err := bs.Stat(ctx, key); err == nil && size == a.Size {
		up.AlreadyStored = true
		return up, nil
	}
	f, err := os.Open(a.WeightsPath)
	if err != nil {
		return up, err
	}
	defer f.Close()
	up.Result, err = bs.Upload(ctx, key, f, a.Size, o)
	return up, err
}

// RegisterLoRA runs LoRAPushWorkflow for an upload and waits for it. A push
// of the same bytes by the same owner joins the one in flight.
func RegisterLoRA(ctx context.Context, c client.Client, in activities.LoRAPushInput) (workflows.LoRAPushResult, error) {
	run, err := c.ExecuteWorkflow(ctx, client.StartWorkflowOptions{
		ID: workflows.LoRAPushWorkflowID(in.Owner, in.SHA256), TaskQueue: workers.CloudQueue,
		WorkflowIDReusePolicy:    enumspb.WORKFLOW_ID_REUSE_POLICY_ALLOW_DUPLICATE,
		WorkflowIDConflictPolicy: enumspb.WORKFLOW_ID_CONFLICT_POLICY_USE_EXISTING,
		WorkflowExecutionTimeout: 30 * time.Minute,
	}, workflows.LoRAPushWorkflow, in)
	if err != nil {
		return workflows.LoRAPushResult{}, err
	}
	var res workflows.LoRAPushResult
	if err := run.Get(ctx, &res); err != nil {
		return res, Cause(err)
	}
	return res, nil
}

// RemoveLoRA runs LoRARemoveWorkflow for caller and waits for it.
func RemoveLoRA(ctx context.Context, c client.Client, caller, id string) error {
	run, err := c.ExecuteWorkflow(ctx, client.StartWorkflowOptions{
		ID: workflows.LoRARemoveWorkflowID(id) + "/" + caller, TaskQueue: workers.CloudQueue,
		WorkflowIDConflictPolicy: enumspb.WORKFLOW_ID_CONFLICT_POLICY_USE_EXISTING,
		WorkflowExecutionTimeout: 10 * time.Minute,
	}, workflows.LoRARemoveWorkflow, activities.RemoveLoRAInput{Caller: caller, ID: id})
	if err != nil {
		return err
	}
	return Cause(run.Get(ctx, nil))
}

// FileSHA256 returns the hex SHA-256 of a file.
func FileSHA256(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
