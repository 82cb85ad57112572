package activities

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"

	"github.com/superinstance/mesh/hub/hubcmd"
	"github.com/superinstance/mesh/internal/store"
)

// HubCommands keeps the cloud's side of commands asked of hubs: who may
// ask which hub, and the audit table hub_commands.
type HubCommands struct {
	Store *store.Store
}

// HubCommandAsk is one request to record and decide.
type HubCommandAsk struct {
	// ID is the HubCommandWorkflow's id: the audit row's.
	ID     string
	Device string
	// Account is the account that asks.
	Account string
	// Operator asks instead of an account, for the device's own account.
	// With neither the request is refused: an empty account is never the
	// operator's by accident.
	Operator bool
	AskedBy  string
	Command  string
	Args     []string
}

// HubCommandAdmit is the cloud's decision: the device's account, or why not.
type HubCommandAdmit struct {
	Account string
	Refused string
}

var deviceIDRE = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,62}$`)

// AskHubCommand decides whether in may go to the device's hub, and records
// the request either way. Only the device's own account, or the operator,
// may ask; to any other account the device answers as if it did not exist.
func (a *HubCommands) AskHubCommand(ctx context.Context, in HubCommandAsk) (HubCommandAdmit, error) {
	row := store.HubCommand{ID: in.ID, Device: clip(in.Device, 100), Account: clip(in.Account, 100),
		AskedBy: clip(in.AskedBy, 200), Command: clip(in.Command, 100), Args: clipArgs(in.Args)}
	refuse := func(why string) (HubCommandAdmit, error) {
		row.Refused, row.RefusedBy = clip(why, 1000), store.RefusedByCloud
		if err := a.Store.AskHubCommand(ctx, row); err != nil {
			return HubCommandAdmit{}, err
		}
		return HubCommandAdmit{Refused: row.Refused}, nil
	}
	if !deviceIDRE.MatchString(in.Device) {
		return refuse(fmt.Sprintf("device %q: want a device id such as gpu-1 (si hubs lists them)", clip(in.Device, 64)))
	}
	if err := hubcmd.ValidRequest(in.Command, in.Args); err != nil {
		return refuse(err.Error())
	}
	if in.Account == "" && !in.Operator {
		return refuse("no account asks: a request names the asking account, or comes from the operator")
	}
	if in.Account != "" && in.Operator {
		return refuse("a request comes from an account or from the operator, not both")
	}
	owner, revoked, err := a.Store.DeviceOwner(ctx, in.Device)
	switch {
	case errors.Is(err, store.ErrNotFound) || (err == nil && in.Account != "" && owner != in.Account):
		if in.Account != "" {
			return refuse(fmt.Sprintf("no device %s in account %s", in.Device, in.Account))
		}
		return refuse(fmt.Sprintf("no device %s is enrolled (si hubs lists them)", in.Device))
	case err != nil:
		return HubCommandAdmit{}, err
	case revoked:
		return refuse(fmt.Sprintf("device %s is revoked", in.Device))
	}
	row.Account = owner
	if err := a.Store.AskHubCommand(ctx, row); err != nil {
		return HubCommandAdmit{}, err
	}
	return HubCommandAdmit{Account: owner}, nil
}

// HubCommandOutcome is what came of an admitted request.
type HubCommandOutcome struct {
	ID string
	// Refused is the hub's refusal; Error says why the hub gave no answer.
	Refused, Error string
	ExitCode       int
	BytesOut       int64
	Truncated      bool
	TimedOut       bool
	// Cancelled: the request was cancelled (and the command, if it ran,
	// killed).
	Cancelled bool
}

// FinishHubCommand records the outcome in the request's audit row.
func (a *HubCommands) FinishHubCommand(ctx context.Context, in HubCommandOutcome) error {
	row := store.HubCommand{ID: in.ID, BytesOut: max(in.BytesOut, 0), Truncated: in.Truncated, TimedOut: in.TimedOut, Cancelled: in.Cancelled,
		Refused: clip(in.Refused, 1000), Error: clip(in.Error, 1000)}
	if in.Refused != "" {
		row.RefusedBy = store.RefusedByHub
	}
	if in.Refused == "" && in.Error == "" {
		code := in.ExitCode
		row.ExitCode = &code
	}
	return a.Store.FinishHubCommand(ctx, row)
}

func clip(s string, n int) string {
	if len(s) > n {
		s = s[:n]
	}
	return strings.ToValidUTF8(s, "?")
}

func clipArgs(args []string) []string {
	out := make([]string, 0, min(len(args), hubcmd.MaxArgs))
	for i, a := range args {
		if i == hubcmd.MaxArgs {
			break
		}
		out = append(out, strings.ReplaceAll(clip(a, hubcmd.MaxArgBytes), "\x00", "?"))
	}
	return out
}
