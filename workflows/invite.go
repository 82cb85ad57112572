package workflows

import (
	"errors"
	"time"

	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"github.com/superinstance/mesh/activities"
	"github.com/superinstance/mesh/internal/store"
)

// Names of the invite workflow's handlers.
const (
	InviteAcceptUpdate = "accept"
	InviteRevokeSignal = "revoke"
)

// InviteWorkflowID is the id of the workflow that holds an invite.
func InviteWorkflowID(inviteID string) string { return "invite/" + inviteID }

// InviteInput names the invite and when it expires.
type InviteInput struct {
	InviteID  string
	ExpiresAt time.Time
}

// AcceptRequest is the accept update's argument: the new guest session's
// handle and the SHA-256 of its secret (the secret itself never enters a
// workflow).
type AcceptRequest struct {
	SessionID  string
	SecretHash []byte `json:",omitempty"`
}

// InviteWorkflow holds an invite until it is accepted (the accept update,
// which answers with the guest session), revoked (the revoke signal) or
// expired (a timer). It returns the invite's final state.
func InviteWorkflow(ctx workflow.Context, in InviteInput) (string, error) {
	opts := workflow.ActivityOptions{
		StartToCloseTimeout: 10 * time.Second,
		RetryPolicy: &temporal.RetryPolicy{InitialInterval: 500 * time.Millisecond, MaximumInterval: 30 * time.Second,
			NonRetryableErrorTypes: []string{activities.ErrInviteClosed}},
	}
	ctx = workflow.WithActivityOptions(ctx, opts)
	var a *activities.Invites
	state := store.InvitePending
	if err := workflow.SetUpdateHandlerWithOptions(ctx, InviteAcceptUpdate,
		func(ctx workflow.Context, req AcceptRequest) (store.GuestSession, error) {
			var g store.GuestSession
			ctx = workflow.WithActivityOptions(ctx, opts)
			err := workflow.ExecuteActivity(ctx, a.AcceptInvite, activities.AcceptInviteInput{
				InviteID: in.InviteID, SessionID: req.SessionID, SecretHash: req.SecretHash, At: workflow.Now(ctx)}).Get(ctx, &g)
			if err != nil {
				var ae *temporal.ApplicationError
				if errors.As(err, &ae) {
					return g, temporal.NewNonRetryableApplicationError(ae.Message(), ae.Type(), nil)
				}
				return g, err
			}
			state = store.InviteAccepted
			return g, nil
		},
		workflow.UpdateHandlerOptions{Validator: func(ctx workflow.Context, req AcceptRequest) error {
			switch {
			case state != store.InvitePending:
				return errors.New("this invite is " + state)
			case req.SessionID == "":
				return errors.New("a session id is required")
			case len(req.SecretHash) != 32:
				return errors.New("the SHA-256 of the session's secret is required")
			}
			return nil
		}}); err != nil {
		return "", err
	}
	closing := ""
	workflow.Go(ctx, func(gctx workflow.Context) {
		workflow.GetSignalChannel(gctx, InviteRevokeSignal).Receive(gctx, nil)
		if closing == "" {
			closing = store.InviteRevoked
		}
	})
	tctx, cancelTimer := workflow.WithCancel(ctx)
	workflow.Go(ctx, func(gctx workflow.Context) {
		if workflow.NewTimer(tctx, max(in.ExpiresAt.Sub(workflow.Now(ctx)), 0)).Get(gctx, nil) == nil && closing == "" {
			closing = store.InviteExpired
		}
	})
	if err := workflow.Await(ctx, func() bool { return state != store.InvitePending || closing != "" }); err != nil {
		return "", err
	}
	cancelTimer()
	if state == store.InviteAccepted {
		return state, workflow.Await(ctx, func() bool { return workflow.AllHandlersFinished(ctx) })
	}
	dctx, _ := workflow.NewDisconnectedContext(ctx)
	dctx = workflow.WithActivityOptions(dctx, opts)
	var changed bool
	if err := workflow.ExecuteActivity(dctx, a.CloseInvite, in.InviteID, closing).Get(dctx, &changed); err != nil {
		return "", err
	}
	// An accept may have landed in the database first; it stands.
	if !changed {
		return store.InviteAccepted, nil
	}
	return closing, nil
}
