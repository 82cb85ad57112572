package workflows

import (
	"testing"
	"time"

	"github.com/stretchr/testify/mock"
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
	env.OnActivity(a.AcceptInvite, mock.Anything, mock.MatchedBy(func(in activities.AcceptInviteInput) bool {
		return in.InviteID == "inv" && in.SessionID == "gs1"
	})).Return(store.GuestSession{ID: "gs1", Host: "host"}, nil).Once()
	first, second := &updateResult{}, &updateResult{}
	env.RegisterDelayedCallback(func() {
		env.UpdateWorkflow(InviteAcceptUpdate, "u1", first, AcceptRequest{SessionID: "gs1"})
	}, 6*time.Hour)
	env.RegisterDelayedCallback(func() {
		env.UpdateWorkflow(InviteAcceptUpdate, "u2", second, AcceptRequest{SessionID: "gs2"})
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
	if second.accepted && second.err == nil {
		t.Fatal("a second accept of the same invite succeeded")
	}
	env.AssertExpectations(t)
}
