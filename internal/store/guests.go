package store

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/superinstance/mesh/internal/money"
)

// Invite states.
const (
	InvitePending  = "pending"
	InviteAccepted = "accepted"
	InviteRevoked  = "revoked"
	InviteExpired  = "expired"
)

// Invite is an invitation to a project; only its token's hash is kept.
type Invite struct {
	ID        string       `json:"id"`
	TokenHash []byte       `json:"-"`
	Project   string       `json:"project"`
	Host      string       `json:"host"`
	Role      string       `json:"role"`
	Quota     money.Micros `json:"quota_micros"`
	State     string       `json:"state"`
	ExpiresAt time.Time    `json:"expires_at"`
	CreatedAt time.Time    `json:"created_at"`
}

// GuestSession is an accepted invite: the guest spends the host's money up
// to Quota. ID is a handle, not a secret: the host and the project's
// editors see it, workflows and usage rows carry it. The guest proves the
// session with a secret of which only the SHA-256 is kept.
type GuestSession struct {
	ID        string       `json:"id"`
	InviteID  string       `json:"invite_id"`
	Project   string       `json:"project"`
	Host      string       `json:"host"`
	Role      string       `json:"role"`
	Quota     money.Micros `json:"quota_micros"`
	Remaining money.Micros `json:"remaining_micros"`
	CreatedAt time.Time    `json:"created_at"`
	ExpiresAt time.Time    `json:"expires_at"`
	// RevokedAt is when the session was revoked; nil while it is not.
	RevokedAt *time.Time `json:"revoked_at,omitempty"`
}

// GuestSessionLifetime is how long a guest session lasts after its invite
// is accepted.
const GuestSessionLifetime = 30 * 24 * time.Hour

// GuestSecretPrefix starts every guest session secret.
const GuestSecretPrefix = "si_gs_"

// ClosedReason says why the session cannot be used at now, or "" when it can.
func (g GuestSession) ClosedReason(now time.Time) string {
	switch {
	case g.RevokedAt != nil:
		return "this guest session was revoked"
	case !now.Before(g.ExpiresAt):
		return "this guest session has expired"
	}
	return ""
}

// InviteError says why a token cannot be used.
type InviteError struct{ Reason string }

func (e *InviteError) Error() string { return e.Reason }

// ClosedReason says why the invite cannot be accepted at now, or "" when it can.
func (i Invite) ClosedReason(now time.Time) string {
	switch {
	case i.State == InviteAccepted:
		return "this invite has already been used"
	case i.State == InviteRevoked:
		return "this invite was revoked by its host"
	case i.State == InviteExpired || !now.Before(i.ExpiresAt):
		return "this invite has expired"
	}
	return ""
}

// CreateInvite stores an invite from a host who owns or edits the project
// (a new project is created, owned by the host).
func (s *Store) CreateInvite(ctx context.Context, in Invite) (Invite, error) {
	if len(in.TokenHash) != 32 {
		return in, errors.New("invite token hash must be 32 bytes")
	}
	if in.Role != RoleEditor && in.Role != RoleViewer {
		return in, fmt.Errorf("invite role %q: use editor or viewer", in.Role)
	}
	if in.Quota <= 0 {
		return in, errors.New("invite quota must be positive")
	}
	role, err := s.ClaimProject(ctx, in.Project, in.Host)
	if err != nil {
		return in, err
	}
	if !CanWrite(role) {
		return in, fmt.Errorf("project %s: a %s cannot invite: %w", in.Project, role, ErrForbidden)
	}
	err = s.Pool.QueryRow(ctx, `INSERT INTO invites (id, token_hash, project_id, host_id, role, quota, expires_at)
		VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING state, created_at`,
		in.ID, in.TokenHash, in.Project, in.Host, in.Role, in.Quota, in.ExpiresAt).Scan(&in.State, &in.CreatedAt)
	return in, err
}

const inviteColumns = `id, token_hash, project_id, host_id, role, quota, state, expires_at, created_at`

func scanInvite(row pgx.Row) (Invite, error) {
	var i Invite
	err := row.Scan(&i.ID, &i.TokenHash, &i.Project, &i.Host, &i.Role, &i.Quota, &i.State, &i.ExpiresAt, &i.CreatedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return i, ErrNotFound
	}
	return i, err
}

// InviteByID returns an invite.
func (s *Store) InviteByID(ctx context.Context, id string) (Invite, error) {
	return scanInvite(s.Pool.QueryRow(ctx, `SELECT `+inviteColumns+` FROM invites WHERE id = $1`, id))
}

// InviteByTokenHash finds the invite whose token hashes to h. The stored
// hash is compared in constant time as well as looked up by index.
func (s *Store) InviteByTokenHash(ctx context.Context, h []byte) (Invite, error) {
	i, err := scanInvite(s.Pool.QueryRow(ctx, `SELECT `+inviteColumns+` FROM invites WHERE token_hash = $1`, h))
	if err == nil && subtle.ConstantTimeCompare(i.TokenHash, h) != 1 {
		return Invite{}, ErrNotFound
	}
	return i, err
}

// Prefixes of the tokens in invite and handover links.
const (
	InviteTokenPrefix   = "si_inv_"
	HandoverTokenPrefix = "si_ho_"
)

// linkTokenHash returns the SHA-256 of tok if it looks like a link token
// with prefix (anything else names nothing).
func linkTokenHash(tok, prefix string) ([]byte, bool) {
	if !strings.HasPrefix(tok, prefix) || len(tok) > 64 {
		return nil, false
	}
	h := sha256.Sum256([]byte(tok))
	return h[:], true
}

// InviteByToken finds the invite a link's token names; a wrong or
// malformed token is ErrNotFound.
func (s *Store) InviteByToken(ctx context.Context, tok string) (Invite, error) {
	h, ok := linkTokenHash(tok, InviteTokenPrefix)
	if !ok {
		return Invite{}, ErrNotFound
	}
	return s.InviteByTokenHash(ctx, h)
}

// InviteClosedReason says why invite id cannot be accepted now, or "" when
// it can (or cannot be read).
func (s *Store) InviteClosedReason(ctx context.Context, id string) string {
	if i, err := s.InviteByID(ctx, id); err == nil {
		return i.ClosedReason(time.Now())
	}
	return ""
}

// RevocableInvite returns the invite if caller may revoke it (its host or
// the project's owner); otherwise, as when it does not exist, ErrNotFound.
func (s *Store) RevocableInvite(ctx context.Context, id, caller string) (Invite, error) {
	inv, err := s.InviteByID(ctx, id)
	if err != nil || inv.Host == caller {
		return inv, err
	}
	if role, err := s.ProjectRole(ctx, inv.Project, caller); err != nil || role != RoleOwner {
		return Invite{}, ErrNotFound
	}
	return inv, nil
}

// Invites lists a host's invites, newest first.
func (s *Store) Invites(ctx context.Context, host string) ([]Invite, error) {
	return queryAll(ctx, s, scanInvite, `SELECT `+inviteColumns+` FROM invites WHERE host_id = $1 ORDER BY created_at DESC`, host)
}

// AcceptInvite turns a pending, unexpired invite into a guest session with
// the given handle, proven by the secret whose SHA-256 is secretHash, that
// lasts GuestSessionLifetime from now. Accepting twice with the same session
// id returns the same session (a retried accept); any other use of a closed
// invite is an *InviteError.
func (s *Store) AcceptInvite(ctx context.Context, inviteID, sessionID string, secretHash []byte, now time.Time) (GuestSession, error) {
	var g GuestSession
	if len(secretHash) != sha256.Size {
		return g, errors.New("a guest session needs the 32-byte hash of its secret")
	}
	err := pgx.BeginFunc(ctx, s.Pool, func(tx pgx.Tx) error {
		i, err := scanInvite(tx.QueryRow(ctx, `SELECT `+inviteColumns+` FROM invites WHERE id = $1 FOR UPDATE`, inviteID))
		if err != nil {
			return err
		}
		if i.State == InviteAccepted {
			g, err = scanGuest(tx.QueryRow(ctx, `SELECT `+guestColumns+` FROM guest_sessions WHERE invite_id = $1`, inviteID))
			if err == nil && g.ID == sessionID {
				return nil
			}
		}
		if reason := i.ClosedReason(now); reason != "" {
			return &InviteError{Reason: reason}
		}
		if _, err := tx.Exec(ctx, `UPDATE invites SET state = 'accepted', closed_at = now() WHERE id = $1`, inviteID); err != nil {
			return err
		}
		g, err = scanGuest(tx.QueryRow(ctx, `INSERT INTO guest_sessions (id, invite_id, project_id, host_id, role, quota, remaining,
			secret_hash, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $6, $7, $8) RETURNING `+guestColumns,
			sessionID, i.ID, i.Project, i.Host, i.Role, i.Quota, secretHash, now.Add(GuestSessionLifetime)))
		return err
	})
	return g, err
}

// CloseInvite moves a pending invite to revoked or expired; it reports
// whether it was pending.
func (s *Store) CloseInvite(ctx context.Context, id, state string) (bool, error) {
	if state != InviteRevoked && state != InviteExpired {
		return false, fmt.Errorf("cannot close an invite as %q", state)
	}
	tag, err := s.Pool.Exec(ctx, `UPDATE invites SET state = $2, closed_at = now() WHERE id = $1 AND state = 'pending'`, id, state)
	return tag.RowsAffected() == 1, err
}

const guestColumns = `id, coalesce(invite_id, ''), project_id, host_id, role, quota, remaining, created_at, expires_at, revoked_at`

func scanGuest(row pgx.Row) (GuestSession, error) {
	var g GuestSession
	err := row.Scan(&g.ID, &g.InviteID, &g.Project, &g.Host, &g.Role, &g.Quota, &g.Remaining, &g.CreatedAt, &g.ExpiresAt, &g.RevokedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return g, ErrNotFound
	}
	return g, err
}

// GuestSessionByID returns a guest session by its handle, revoked and
// expired ones included (ClosedReason tells).
func (s *Store) GuestSessionByID(ctx context.Context, id string) (GuestSession, error) {
	return scanGuest(s.Pool.QueryRow(ctx, `SELECT `+guestColumns+` FROM guest_sessions WHERE id = $1`, id))
}

// GuestSessionBySecret returns the live guest session a secret proves. An
// unknown, malformed, revoked or expired secret is ErrNotFound.
func (s *Store) GuestSessionBySecret(ctx context.Context, secret string) (GuestSession, error) {
	h, ok := linkTokenHash(secret, GuestSecretPrefix)
	if !ok {
		return GuestSession{}, ErrNotFound
	}
	return scanGuest(s.Pool.QueryRow(ctx, `SELECT `+guestColumns+` FROM guest_sessions
		WHERE secret_hash = $1 AND revoked_at IS NULL AND expires_at > now()`, h))
}

// RevocableGuestSession returns the session if caller may revoke it (its
// host, or an owner or editor of its project); otherwise, as when it does
// not exist, ErrNotFound.
func (s *Store) RevocableGuestSession(ctx context.Context, id, caller string) (GuestSession, error) {
	g, err := s.GuestSessionByID(ctx, id)
	if err != nil || g.Host == caller {
		return g, err
	}
	if role, err := s.ProjectRole(ctx, g.Project, caller); err != nil || !CanWrite(role) {
		return GuestSession{}, ErrNotFound
	}
	return g, nil
}

// RevokeGuestSession revokes a guest session; it reports whether it was live.
func (s *Store) RevokeGuestSession(ctx context.Context, id string) (bool, error) {
	tag, err := s.Pool.Exec(ctx, `UPDATE guest_sessions SET revoked_at = now() WHERE id = $1 AND revoked_at IS NULL`, id)
	return tag.RowsAffected() == 1, err
}

// GuestSessions lists the guests of a host's projects.
func (s *Store) GuestSessions(ctx context.Context, host string) ([]GuestSession, error) {
	return queryAll(ctx, s, scanGuest, `SELECT `+guestColumns+` FROM guest_sessions WHERE host_id = $1 ORDER BY created_at DESC`, host)
}

// ProjectGuests lists a project's guest sessions, newest first.
func (s *Store) ProjectGuests(ctx context.Context, project string) ([]GuestSession, error) {
	return queryAll(ctx, s, scanGuest, `SELECT `+guestColumns+` FROM guest_sessions WHERE project_id = $1 ORDER BY created_at DESC`, project)
}
