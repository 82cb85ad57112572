package runner

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	commonpb "go.temporal.io/api/common/v1"
	"go.temporal.io/api/serviceerror"
	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/converter"
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
		if strings.Contains(err.Error(), "search attribute") {
			return h, fmt.Errorf("starting the handover workflow: %w (si server and si dev register the mesh's search attributes when they start)", err)
		}
		return h, fmt.Errorf("starting the handover workflow: %w", err)
	}
	return h, nil
}

// AcceptHandover sends the accept update and returns once the workflow has
// recorded it (cloning then goes on in the workflow). The account must be
// the recipient's (see workflows.HandoverAccept); an empty Request gets a
// fresh one, so this call alone can succeed.
func AcceptHandover(ctx context.Context, c client.Client, id string, req workflows.HandoverAccept) error {
	if req.Request == "" {
		req.Request = token.New("har_", 16)
	}
	u, err := c.UpdateWorkflow(ctx, client.UpdateWorkflowOptions{
		WorkflowID: workflows.HandoverWorkflowID(id), UpdateName: workflows.HandoverAcceptUpdate,
		Args: []any{req}, WaitForStage: client.WorkflowUpdateStageCompleted,
	})
	if err == nil {
		err = u.Get(ctx, nil)
	}
	if err != nil {
		return fmt.Errorf("handover %s: %w", id, Cause(err))
	}
	return nil
}

// StartInvite stores an invite (only its token's hash) and starts the
// workflow that holds it until it is accepted, revoked or expires. It
// returns the token, which is shown once and never stored.
func StartInvite(ctx context.Context, st *store.Store, c client.Client, in store.Invite) (string, store.Invite, error) {
	secret := token.New(store.InviteTokenPrefix, 20)
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

// HandoverRow is one handover as `si handover ls` shows it.
type HandoverRow struct {
	ID        string    `json:"id"`
	Workflow  string    `json:"workflow_id"`
	Project   string    `json:"project"`
	Recipient string    `json:"recipient"`
	Status    string    `json:"status"`
	Started   time.Time `json:"started"`
	Open      bool      `json:"open"`
	// Problem says why a handover is stuck.
	Problem string `json:"problem,omitempty"`
}

// ListHandovers reads handover workflows matching query from visibility.
func ListHandovers(ctx context.Context, c client.Client, namespace, query string) ([]HandoverRow, error) {
	var rows []HandoverRow
	var next []byte
	dc := converter.GetDefaultDataConverter()
	str := func(fields map[string]*commonpb.Payload, name string) string {
		var s string
		if p := fields[name]; p != nil {
			_ = dc.FromPayload(p, &s)
		}
		return s
	}
	for {
		resp, err := c.ListWorkflow(ctx, &workflowservice.ListWorkflowExecutionsRequest{
			Namespace: namespace, Query: query, PageSize: 500, NextPageToken: next})
		if err != nil {
			return nil, fmt.Errorf("listing handovers (%s): %w", query, err)
		}
		for _, e := range resp.Executions {
			f := e.GetSearchAttributes().GetIndexedFields()
			r := HandoverRow{Workflow: e.GetExecution().GetWorkflowId(), Project: str(f, workflows.HandoverProjectAttr.GetName()),
				Recipient: str(f, workflows.HandoverRecipientAttr.GetName()), Status: str(f, workflows.HandoverStatusAttr.GetName()),
				Open: e.GetCloseTime() == nil}
			r.ID = strings.TrimPrefix(r.Workflow, "handover/")
			if p := f[workflows.HandoverStartedAttr.GetName()]; p != nil {
				_ = dc.FromPayload(p, &r.Started)
			}
			if r.Started.IsZero() && e.GetStartTime() != nil {
				r.Started = e.GetStartTime().AsTime()
			}
			rows = append(rows, r)
		}
		if next = resp.NextPageToken; len(next) == 0 {
			break
		}
	}
	sort.SliceStable(rows, func(i, j int) bool { return rows[i].Started.After(rows[j].Started) })
	return rows, nil
}

// StuckReason says why an open handover is stuck, or "" when it is not.
func StuckReason(ctx context.Context, c client.Client, r HandoverRow, older time.Duration, failing int) (string, error) {
	if !r.Open {
		return "", nil
	}
	d, err := c.DescribeWorkflowExecution(ctx, r.Workflow, "")
	if err != nil {
		return "", err
	}
	for _, pa := range d.PendingActivities {
		if int(pa.GetAttempt()) >= failing {
			msg := pa.GetLastFailure().GetMessage()
			return fmt.Sprintf("%s failed %d attempts: %s", pa.GetActivityType().GetName(), pa.GetAttempt()-1, msg), nil
		}
	}
	if age := time.Since(r.Started); age > older {
		return fmt.Sprintf("%s for %s", r.Status, age.Round(time.Minute)), nil
	}
	return "", nil
}

// ErrNotPending: the invite was used, revoked or expired before the revoke.
var ErrNotPending = errors.New("the invite is no longer pending")

// RevokeInvite signals the invite's workflow and waits for its final state.
func RevokeInvite(ctx context.Context, c client.Client, id string) (string, error) {
	wid := workflows.InviteWorkflowID(id)
	if err := c.SignalWorkflow(ctx, wid, "", workflows.InviteRevokeSignal, nil); err != nil {
		return "", ErrNotPending
	}
	var state string
	if err := c.GetWorkflow(ctx, wid, "").Get(ctx, &state); err != nil {
		return "", Cause(err)
	}
	return state, nil
}

// JoinInvite accepts the invite through its workflow, opening a new guest
// session. It returns the session and its secret, which is shown to the
// guest alone: the workflow sees only the session's handle and the
// secret's SHA-256. A closed invite's error says why.
func JoinInvite(ctx context.Context, st *store.Store, c client.Client, inviteID string) (store.GuestSession, string, error) {
	var g store.GuestSession
	secret, hash := store.NewSecret(store.GuestSecretPrefix)
	u, err := c.UpdateWorkflow(ctx, client.UpdateWorkflowOptions{
		WorkflowID: workflows.InviteWorkflowID(inviteID), UpdateName: workflows.InviteAcceptUpdate,
		Args:         []any{workflows.AcceptRequest{SessionID: token.New("gs_", 16), SecretHash: hash}},
		WaitForStage: client.WorkflowUpdateStageCompleted,
	})
	if err == nil {
		err = u.Get(ctx, &g)
	}
	if err != nil {
		if reason := st.InviteClosedReason(ctx, inviteID); reason != "" {
			return g, "", &store.InviteError{Reason: reason}
		}
		return g, "", fmt.Errorf("accepting the invite: %w", Cause(err))
	}
	return g, secret, nil
}

// PaymentSaved returns what the Stripe webhook calls when handovers'
// new owners saved a payment method: a signal to each handover's workflow,
// which then checks the record and subscribes them. A workflow that has
// ended already is no error.
func PaymentSaved(c client.Client) func(ctx context.Context, handovers []string) error {
	return func(ctx context.Context, handovers []string) error {
		var errs []error
		for _, id := range handovers {
			err := c.SignalWorkflow(ctx, workflows.HandoverWorkflowID(id), "", workflows.HandoverPaymentSignal, nil)
			var nf *serviceerror.NotFound
			if err != nil && !errors.As(err, &nf) {
				errs = append(errs, fmt.Errorf("handover %s: %w", id, err))
			}
		}
		return errors.Join(errs...)
	}
}
