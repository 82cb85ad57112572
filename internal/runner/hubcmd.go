package runner

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/temporal"

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

// CancelWait bounds how long HubCommand waits, once its ctx ended, for the
// hub to say what it did of the cancelled request.
const CancelWait = 15 * time.Second

// HubCommand asks the device's hub to run a command of its allow-list and
// waits for the answer (a refusal is an answer: HubCommandResult.Refused).
// Should ctx end first (the caller interrupted), the request is cancelled:
// the hub kills the command, and the answer (Cancelled, with what the
// command wrote until then) is awaited for up to CancelWait.
func HubCommand(ctx context.Context, c client.Client, in workflows.HubCommandInput) (workflows.HubCommandResult, error) {
	run, err := c.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: HubCommandWorkflowID(in.Device), TaskQueue: workers.CloudQueue,
		// The cloud's own steps retry; past this the request is abandoned.
		WorkflowExecutionTimeout: in.Timeout + in.Pickup + 5*time.Minute}, workflows.HubCommandWorkflow, in)
	if err != nil {
		return workflows.HubCommandResult{}, err
	}
	// The answer is awaited apart from ctx, so that ctx ending (whenever
	// the client notices) is the one sign to cancel.
	var res workflows.HubCommandResult
	answer, stop := context.WithCancel(context.WithoutCancel(ctx))
	defer stop()
	got := make(chan error, 1)
	go func() { got <- run.Get(answer, &res) }()
	select {
	case err := <-got:
		return res, err
	case <-ctx.Done():
	}
	cancelCtx, cancel := context.WithTimeout(answer, CancelWait)
	defer cancel()
	// A failure to cancel is most often a request that ended meanwhile:
	// its answer is still awaited.
	cancelErr := c.CancelWorkflow(cancelCtx, run.GetID(), run.GetRunID())
	select {
	case err = <-got:
	case <-cancelCtx.Done():
		stop()
		<-got
		if cancelErr != nil {
			return workflows.HubCommandResult{}, fmt.Errorf("cancel hub command %s: %w", run.GetID(), cancelErr)
		}
		return workflows.HubCommandResult{}, fmt.Errorf("hub command %s cancelled; the hub has not said within %s what it did (si hub audit --device %s shows it once it does)",
			run.GetID(), CancelWait, in.Device)
	}
	var ce *temporal.CanceledError
	switch {
	case errors.As(err, &ce) && ce.HasDetails():
		if err := ce.Details(&res); err != nil {
			return workflows.HubCommandResult{}, fmt.Errorf("hub command %s cancelled: %w", run.GetID(), err)
		}
		return res, nil
	case err == nil: // it ended before the cancellation reached it
		return res, nil
	}
	return workflows.HubCommandResult{}, fmt.Errorf("hub command %s cancelled without an outcome (si hub audit --device %s): %w", run.GetID(), in.Device, err)
}
