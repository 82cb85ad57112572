package activities

import (
	"context"
	"errors"
	"time"

	"go.temporal.io/sdk/temporal"

	"github.com/superinstance/mesh/internal/store"
)

// ErrInviteClosed is the error type of accepting an invite that is used,
// revoked or expired.
const ErrInviteClosed = "InviteClosed"

// Invites changes invites and opens guest sessions.
type Invites struct {
	Store *store.Store
}

// AcceptInviteInput names the invite and the guest session to open: its
// handle and the SHA-256 of its secret.
type AcceptInviteInput struct {
	InviteID   string
	SessionID  string
	SecretHash []byte `json:",omitempty"`
	At         time.Time
}

// AcceptInvite opens the guest session; a retry with the same session id
// returns the same session.
func (a *Invites) AcceptInvite(ctx context.Context, in AcceptInviteInput) (store.GuestSession, error) {
	if len(in.SecretHash) != 32 {
		return store.GuestSession{}, temporal.NewNonRetryableApplicationError("a guest session needs the SHA-256 of its secret", ErrInviteClosed, nil)
	}
	g, err := a.Store.AcceptInvite(ctx, in.InviteID, in.SessionID, in.SecretHash, in.At)
	var ie *store.InviteError
	if errors.As(err, &ie) {
		return g, temporal.NewNonRetryableApplicationError(ie.Reason, ErrInviteClosed, err)
	}
	return g, err
}

// CloseInvite marks a pending invite revoked or expired.
func (a *Invites) CloseInvite(ctx context.Context, id, state string) (bool, error) {
	return a.Store.CloseInvite(ctx, id, state)
}
