package workflows

import (
	"bytes"
	"crypto/sha256"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/mock"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/testsuite"

	"github.com/superinstance/mesh/activities"
	"github.com/superinstance/mesh/internal/store"
)

type updateResult struct {
	accepted, rejected bool
	err                error
}

func (u *updateResult) Accept()                   { u.accepted = true }
func (u *updateResult) Reject(err error)          { u.rejected, u.err = true, err }
func (u *updateResult) Complete(_ any, err error) { u.err = err }

func inviteEnv(t *testing.T) (*testsuite.TestWorkflowEnvironment, *activities.Invites) {
	var s testsuite.WorkflowTestSuite
	env := s.NewTestWorkflowEnvironment()
	a := &activities.Invites{}
	env.RegisterActivity(a)
	return env, a
}

func TestInviteExpiresOnItsTimer(t *testing.T) {
	env, a := inviteEnv(t)
	env.OnActivity(a.CloseInvite, mock.Anything, "inv", store.InviteExpired).Return(true, nil).Once()
	start := env.Now()
	env.ExecuteWorkflow(InviteWorkflow, InviteInput{InviteID: "inv", ExpiresAt: start.Add(24 * time.Hour)})
	var state string
	if err := env.GetWorkflowResult(&state); err != nil || state != store.InviteExpired {
		t.Fatalf("state %q, %v", state, err)
	}
	if d := env.Now().Sub(start); d < 24*time.Hour || d > 24*time.Hour+time.Minute {
		t.Fatalf("expired after %s, want 24h", d)
	}
	env.AssertExpectations(t)
}

func TestInviteRevoked(t *testing.T) {
	env, a := inviteEnv(t)
	env.OnActivity(a.CloseInvite, mock.Anything, "inv", store.InviteRevoked).Return(true, nil).Once()
	env.RegisterDelayedCallback(func() { env.SignalWorkflow(InviteRevokeSignal, nil) }, time.Hour)
	env.ExecuteWorkflow(InviteWorkflow, InviteInput{InviteID: "inv", ExpiresAt: env.Now().Add(24 * time.Hour)})
	var state string
	if err := env.GetWorkflowResult(&state); err != nil || state != store.InviteRevoked {
		t.Fatalf("state %q, %v", state, err)
	}
	env.AssertExpectations(t)
}

func TestInviteAcceptedOnceThenClosed(t *testing.T) {
	env, a := inviteEnv(t)
	hash := sha256.Sum256([]byte("si_gs_secret"))
	env.OnActivity(a.AcceptInvite, mock.Anything, mock.MatchedBy(func(in activities.AcceptInviteInput) bool {
		return in.InviteID == "inv" && in.SessionID == "gs1" && bytes.Equal(in.SecretHash, hash[:])
	})).Return(store.GuestSession{ID: "gs1", Host: "host"}, nil).Once()
	// A second accept racing the first passes the validator; the database
	// refuses it (the invite is used), and the workflow reports that.
	env.OnActivity(a.AcceptInvite, mock.Anything, mock.MatchedBy(func(in activities.AcceptInviteInput) bool {
		return in.SessionID == "gs2"
	})).Return(store.GuestSession{}, temporal.NewNonRetryableApplicationError("this invite has already been used", activities.ErrInviteClosed, nil)).Once()
	first, second, late, unproven := &updateResult{}, &updateResult{}, &updateResult{}, &updateResult{}
	env.RegisterDelayedCallback(func() {
		// A session without the hash of a secret is refused before any
		// activity: nothing could prove it.
		env.UpdateWorkflow(InviteAcceptUpdate, "u0", unproven, AcceptRequest{SessionID: "gs0"})
		env.UpdateWorkflow(InviteAcceptUpdate, "u1", first, AcceptRequest{SessionID: "gs1", SecretHash: hash[:]})
		env.UpdateWorkflow(InviteAcceptUpdate, "u2", second, AcceptRequest{SessionID: "gs2", SecretHash: hash[:]})
	}, 6*time.Hour)
	env.RegisterDelayedCallback(func() {
		env.UpdateWorkflow(InviteAcceptUpdate, "u3", late, AcceptRequest{SessionID: "gs3", SecretHash: hash[:]})
	}, 6*time.Hour+time.Second)
	env.ExecuteWorkflow(InviteWorkflow, InviteInput{InviteID: "inv", ExpiresAt: env.Now().Add(24 * time.Hour)})
	var state string
	err := env.GetWorkflowResult(&state)
	if err != nil || state != store.InviteAccepted {
		t.Fatalf("state %q, %v", state, err)
	}
	if !first.accepted || first.err != nil || state != store.InviteAccepted {
		t.Fatalf("first accept: %+v", first)
	}
	if second.err == nil || !strings.Contains(second.err.Error(), "already been used") {
		t.Fatalf("a second accept of the same invite: %+v", second)
	}
	if unproven.accepted || unproven.err == nil || !strings.Contains(unproven.err.Error(), "SHA-256") {
		t.Fatalf("an accept without a secret hash: %+v", unproven)
	}
	if late.accepted && late.err == nil {
		t.Fatal("an accept after the invite closed succeeded")
	}
	env.AssertExpectations(t)
}
