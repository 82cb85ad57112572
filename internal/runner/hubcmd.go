package runner

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"time"

	"go.temporal.io/sdk/client"

	"github.com/superinstance/mesh/workers"
	"github.com/superinstance/mesh/workflows"
)

// HubCommandWorkflowID names a request to device: a fresh id each time,
// so a command is asked again only by asking again.
func HubCommandWorkflowID(device string) string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return "hubcmd/" + device + "/" + time.Now().UTC().Format("20060102T150405") + "-" + hex.EncodeToString(b[:])
}

// HubCommand asks the device's hub to run a command of its allow-list and
// waits for the answer (a refusal is an answer: HubCommandResult.Refused).
func HubCommand(ctx context.Context, c client.Client, in workflows.HubCommandInput) (workflows.HubCommandResult, error) {
	run, err := c.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: HubCommandWorkflowID(in.Device), TaskQueue: workers.CloudQueue,
		// The cloud's own steps retry; past this the request is abandoned.
		WorkflowExecutionTimeout: in.Timeout + in.Pickup + 5*time.Minute}, workflows.HubCommandWorkflow, in)
	if err != nil {
		return workflows.HubCommandResult{}, err
	}
	var res workflows.HubCommandResult
	err = run.Get(ctx, &res)
	return res, err
}
