package runner

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"time"

	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/temporal"

	"github.com/superinstance/mesh/internal/store"
	"github.com/superinstance/mesh/internal/token"
	"github.com/superinstance/mesh/workers"
	"github.com/superinstance/mesh/workflows"
)

// StartHandover records a handover of host's project to recipient and
// starts its workflow, with the search attributes set from the start. If the
// workflow cannot start, the handover is cancelled again.
func StartHandover(ctx context.Context, st *store.Store, c client.Client, host, project, recipient string) (store.Handover, error) {
	now := time.Now().UTC()
	h, err := st.CreateHandover(ctx, store.Handover{ID: token.New("ho_", 10), Project: project, Host: host,
		Recipient: recipient, ExpiresAt: now.Add(workflows.DefaultHandoverExpiry)})
	if errors.Is(err, store.ErrNotFound) {
		return h, fmt.Errorf("project %s: no such project of %s's", project, host)
	}
	if err != nil {
		return h, err
	}
	_, err = c.ExecuteWorkflow(ctx, client.StartWorkflowOptions{
		ID: workflows.HandoverWorkflowID(h.ID), TaskQueue: workers.CloudQueue,
		TypedSearchAttributes: temporal.NewSearchAttributes(
			workflows.HandoverStatusAttr.ValueSet(store.HandoverPending), workflows.HandoverRecipientAttr.ValueSet(recipient),
			workflows.HandoverProjectAttr.ValueSet(project), workflows.HandoverStartedAttr.ValueSet(now)),
	}, workflows.HandoverWorkflow, workflows.HandoverInput{HandoverID: h.ID, Project: project, Recipient: recipient})
	if err != nil {
		_, _ = st.CloseHandover(ctx, h.ID, store.HandoverCancelled, "")
		return h, fmt.Errorf("starting the handover workflow: %w", err)
	}
	return h, nil
}

// AcceptHandover sends the accept update for account and returns once the
// workflow has recorded it (cloning then goes on in the workflow).
func AcceptHandover(ctx context.Context, c client.Client, id, account string) error {
	u, err := c.UpdateWorkflow(ctx, client.UpdateWorkflowOptions{
		WorkflowID: workflows.HandoverWorkflowID(id), UpdateName: workflows.HandoverAcceptUpdate,
		Args: []any{workflows.HandoverAccept{Account: account}}, WaitForStage: client.WorkflowUpdateStageCompleted,
	})
	if err == nil {
		err = u.Get(ctx, nil)
	}
	if err != nil {
		return fmt.Errorf("handover %s: %w", id, Cause(err))
	}
	return nil
}

// InviteTokenPrefix starts every invite token.
const InviteTokenPrefix = "si_inv_"

// StartInvite stores an invite (only its token's hash) and starts the
// workflow that holds it until it is accepted, revoked or expires. It
// returns the token, which is shown once and never stored.
func StartInvite(ctx context.Context, st *store.Store, c client.Client, in store.Invite) (string, store.Invite, error) {
	secret := token.New(InviteTokenPrefix, 20)
	h := sha256.Sum256([]byte(secret))
	in.ID, in.TokenHash = token.New("inv_", 10), h[:]
	inv, err := st.CreateInvite(ctx, in)
	if err != nil {
		return "", inv, err
	}
	if _, err := c.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: workflows.InviteWorkflowID(inv.ID), TaskQueue: workers.CloudQueue},
		workflows.InviteWorkflow, workflows.InviteInput{InviteID: inv.ID, ExpiresAt: inv.ExpiresAt}); err != nil {
		_, _ = st.CloseInvite(ctx, inv.ID, store.InviteRevoked)
		return "", inv, fmt.Errorf("starting the invite workflow: %w", err)
	}
	return secret, inv, nil
}
