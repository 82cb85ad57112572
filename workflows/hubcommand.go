package workflows

import (
	"errors"
	"time"

	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"github.com/superinstance/mesh/activities"
	"github.com/superinstance/mesh/hub"
	"github.com/superinstance/mesh/hub/hubcmd"
)

// Defaults of HubCommandInput.
const (
	DefaultHubCommandTimeout = time.Minute
	DefaultHubPickup         = time.Minute
)

// HubCommandInput asks one hub to run one command of its allow-list.
type HubCommandInput struct {
	Device string
	// Account is the account that asks (a consensus's, a customer's).
	// Only the device's own account may.
	Account string
	// Operator asks instead of an account (si hub exec), for the device's
	// own account; an input with neither is refused.
	Operator bool
	// AskedBy says who asked, for both audit logs.
	AskedBy string
	Command string
	Args    []string
	// Timeout bounds the run, under the hub's own bound for the command.
	// Default 1m, at most 1h.
	Timeout time.Duration
	// Pickup is how long the hub has to take the request (it is offline,
	// say). Default 1m.
	Pickup time.Duration
}

// HubCommandResult is what came of a request. Refused is set (and
// RefusedBy says by whom, "cloud" or "hub") when nothing ran; Error when
// the hub gave no answer, and the command may or may not have run.
type HubCommandResult struct {
	ID        string `json:"id"`
	Device    string `json:"device"`
	Account   string `json:"account,omitempty"`
	Refused   string `json:"refused,omitempty"`
	RefusedBy string `json:"refused_by,omitempty"`
	Error     string `json:"error,omitempty"`
	hubcmd.Outcome
}

// HubCommandWorkflow records a request in the cloud's audit, checks that
// the asker may ask this device, runs Hub.RunCommand once on the hub's own
// queue (the hub checks its allow-list and audits on its side), and
// records the outcome. A command never runs twice: the hub's activity has
// one attempt. Cancelled (si hub exec interrupted, temporal workflow
// cancel), the workflow has the hub stop the command, records what came of
// it and ends cancelled, with the HubCommandResult as the cancellation's
// details.
func HubCommandWorkflow(ctx workflow.Context, in HubCommandInput) (HubCommandResult, error) {
	id := workflow.GetInfo(ctx).WorkflowExecution.ID
	res := HubCommandResult{ID: id, Device: in.Device}
	if in.Timeout <= 0 {
		in.Timeout = DefaultHubCommandTimeout
	}
	in.Timeout = min(in.Timeout, hubcmd.MaxTimeout)
	if in.Pickup <= 0 {
		in.Pickup = DefaultHubPickup
	}
	// The cloud's own steps (recording the request, then its outcome) run
	// to their end even once the request is cancelled, so that its audit
	// row is never left half done.
	cloud, done := workflow.NewDisconnectedContext(workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
		StartToCloseTimeout: 10 * time.Second,
		RetryPolicy:         &temporal.RetryPolicy{InitialInterval: time.Second, MaximumInterval: 10 * time.Second, MaximumAttempts: 30},
	}))
	defer done()
	var a *activities.HubCommands
	var admit activities.HubCommandAdmit
	if err := workflow.ExecuteActivity(cloud, a.AskHubCommand, activities.HubCommandAsk{ID: id, Device: in.Device, Account: in.Account,
		Operator: in.Operator, AskedBy: in.AskedBy, Command: in.Command, Args: in.Args}).Get(cloud, &admit); err != nil {
		return res, err
	}
	res.Account = admit.Account
	if admit.Refused != "" {
		res.Refused, res.RefusedBy, res.ExitCode = admit.Refused, "cloud", -1
		return res, nil
	}
	if ctx.Err() != nil {
		res.Cancelled, res.ExitCode, res.Error = true, -1, "cancelled before it was sent to the hub: nothing ran"
		return res, finish(cloud, a, activities.HubCommandOutcome{ID: id, Error: res.Error, Cancelled: true}, res, true)
	}
	hubCtx := workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
		TaskQueue:              hub.Queue(in.Device),
		ScheduleToStartTimeout: in.Pickup,
		// The hub kills the command at in.Timeout; the rest is the trip back.
		StartToCloseTimeout: in.Timeout + 30*time.Second,
		RetryPolicy:         &temporal.RetryPolicy{MaximumAttempts: 1},
		// A cancellation reaches a running command in the answer to the
		// hub's next heartbeat; the hub kills it and answers with what it
		// did, which is awaited and recorded. A hub that does not
		// heartbeat answers when its command ends (at in.Timeout at most).
		WaitForCancellation: true,
	})
	var run hubcmd.RunResult
	err := workflow.ExecuteActivity(hubCtx, hubcmd.ActivityRunCommand, hubcmd.RunInput{Account: admit.Account, AskedBy: in.AskedBy,
		Command: in.Command, Args: in.Args, Timeout: in.Timeout}).Get(ctx, &run)
	// Cancelled is the cloud's word, not the hub's: the request was
	// cancelled (the hub says whether it killed the command, in ExitCode
	// and its output).
	asked := ctx.Err() != nil
	out := activities.HubCommandOutcome{ID: id, Cancelled: asked}
	switch {
	case err != nil && asked && temporal.IsCanceledError(err):
		// Cancelled before the hub took it, or the hub gave up on it
		// before it started.
		res.ExitCode, res.Error = -1, "cancelled before the hub ran it: nothing ran"
		out.Error = res.Error
	case err != nil:
		res.Error, res.ExitCode = hubError(err, in), -1
		out.Error = res.Error
	case run.Refused != "":
		res.Refused, res.RefusedBy, res.Outcome = run.Refused, "hub", run.Outcome
		out.Refused = run.Refused
	default:
		res.Outcome = run.Outcome
		out.ExitCode, out.BytesOut, out.Truncated, out.TimedOut = run.ExitCode, run.BytesOut, run.Truncated, run.TimedOut
	}
	res.Cancelled = asked
	return res, finish(cloud, a, out, res, asked)
}

// finish records the request's outcome (ctx is not cancelled with the
// workflow) and says how the workflow ends: for a cancelled request, a
// cancellation whose details are res.
func finish(ctx workflow.Context, a *activities.HubCommands, out activities.HubCommandOutcome, res HubCommandResult, cancelled bool) error {
	if err := workflow.ExecuteActivity(ctx, a.FinishHubCommand, out).Get(ctx, nil); err != nil {
		return err
	}
	if cancelled {
		return temporal.NewCanceledError(res)
	}
	return nil
}

// hubError says why the hub gave no answer.
func hubError(err error, in HubCommandInput) string {
	var te *temporal.TimeoutError
	if errors.As(err, &te) {
		switch te.TimeoutType() {
		case enumspb.TIMEOUT_TYPE_SCHEDULE_TO_START:
			return "hub " + in.Device + " did not take the request within " + in.Pickup.String() + ": is it online (si hubs) and running a worker? Nothing ran."
		default:
			return "hub " + in.Device + " did not answer within " + (in.Timeout + 30*time.Second).String() + "; the command may have run (see the hub's audit log: si hub commands)"
		}
	}
	return "hub " + in.Device + ": " + err.Error()
}
