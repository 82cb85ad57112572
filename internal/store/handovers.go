package store

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"net/mail"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/superinstance/mesh/internal/money"
)

// Handover states. Pending waits for the recipient; accepted is cloning;
// awaiting_payment (HandoverAwaitingPayment) waits for the new owner's
// payment method; completed, declined, cancelled, expired and failed are
// final.
const (
	HandoverPending   = "pending"
	HandoverAccepted  = "accepted"
	HandoverCompleted = "completed"
	HandoverDeclined  = "declined"
	HandoverCancelled = "cancelled"
	HandoverExpired   = "expired"
	HandoverFailed    = "failed"
)

// Handover gives a project to a new owner.
type Handover struct {
	ID         string    `json:"id"`
	Project    string    `json:"project"`
	Host       string    `json:"host"`
	Recipient  string    `json:"recipient"`
	State      string    `json:"state"`
	NewOwner   string    `json:"new_owner,omitempty"`
	NewProject string    `json:"new_project,omitempty"`
	Schedule   string    `json:"subscription_schedule,omitempty"`
	Reminders  int       `json:"reminders"`
	Failure    string    `json:"failure,omitempty"`
	CreatedAt  time.Time `json:"created_at"`
	ExpiresAt  time.Time `json:"expires_at"`
}

// Snapshot is what a handover gives: the project's adapters as they were
// when it began, each copied to an object of the handover's own.
type Snapshot struct {
	Project  string            `json:"project"`
	TakenAt  time.Time         `json:"taken_at"`
	Members  int               `json:"members"`
	Adapters []SnapshotAdapter `json:"adapters"`
	// Plan is the price offered with the project (absent from snapshots
	// taken before offers carried it).
	Plan *PlanPrice `json:"plan,omitempty"`
}

// PlanPrice is a plan's yearly price: Intro for the first year, then Standard.
type PlanPrice struct {
	Intro    money.Micros `json:"intro_micros"`
	Standard money.Micros `json:"standard_micros"`
}

// SnapshotAdapter is one adapter in a snapshot.
type SnapshotAdapter struct {
	LoRA
	Config      json.RawMessage `json:"config"`
	SnapshotKey string          `json:"snapshot_key"`
}

// ValidEmail checks a recipient address: one bare address, no display name.
func ValidEmail(s string) error {
	a, err := mail.ParseAddress(s)
	if err != nil || a.Address != s || len(s) > 254 || strings.ContainsAny(s, "\r\n") {
		return fmt.Errorf("invalid email address %q: give one bare address such as ada@example.com", s)
	}
	return nil
}

// CreateHandover stores a pending handover of a project its host owns. A
// project with an open handover is ErrExists.
func (s *Store) CreateHandover(ctx context.Context, h Handover) (Handover, error) {
	if err := ValidEmail(h.Recipient); err != nil {
		return h, err
	}
	role, err := s.ProjectRole(ctx, h.Project, h.Host)
	if err != nil {
		return h, fmt.Errorf("project %s: %w", h.Project, err)
	}
	if role != RoleOwner {
		return h, fmt.Errorf("project %s: only its owner can hand it over, and you are a %s: %w", h.Project, role, ErrForbidden)
	}
	err = s.Pool.QueryRow(ctx, `INSERT INTO handovers (id, project_id, host_id, recipient_email, expires_at)
		VALUES ($1, $2, $3, $4, $5) RETURNING state, created_at`,
		h.ID, h.Project, h.Host, h.Recipient, h.ExpiresAt).Scan(&h.State, &h.CreatedAt)
	var pe *pgconn.PgError
	if errors.As(err, &pe) && pe.Code == "23505" && pe.ConstraintName == "handovers_open" {
		return h, fmt.Errorf("project %s already has an open handover: %w", h.Project, ErrExists)
	}
	return h, err
}

const handoverColumns = `id, project_id, host_id, recipient_email, state, coalesce(new_owner_id, ''),
	coalesce(new_project_id, ''), coalesce(subscription_schedule_id, ''), reminders, coalesce(failure, ''), created_at, expires_at`

func scanHandover(row pgx.Row) (Handover, error) {
	var h Handover
	err := row.Scan(&h.ID, &h.Project, &h.Host, &h.Recipient, &h.State, &h.NewOwner, &h.NewProject,
		&h.Schedule, &h.Reminders, &h.Failure, &h.CreatedAt, &h.ExpiresAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return h, ErrNotFound
	}
	return h, err
}

// HandoverByID returns a handover.
func (s *Store) HandoverByID(ctx context.Context, id string) (Handover, error) {
	return scanHandover(s.Pool.QueryRow(ctx, `SELECT `+handoverColumns+` FROM handovers WHERE id = $1`, id))
}

// AddHandoverToken stores the hash of a new accept token for the handover.
func (s *Store) AddHandoverToken(ctx context.Context, id string, th []byte) error {
	if len(th) != 32 {
		return errors.New("handover token hash must be 32 bytes")
	}
	_, err := s.Pool.Exec(ctx, `INSERT INTO handover_tokens (token_hash, handover_id) VALUES ($1, $2)`, th, id)
	return err
}

// HandoverByTokenHash finds the handover one of whose tokens hashes to th,
// comparing the stored hash in constant time.
func (s *Store) HandoverByTokenHash(ctx context.Context, th []byte) (Handover, error) {
	var stored []byte
	var id string
	err := s.Pool.QueryRow(ctx, `SELECT token_hash, handover_id FROM handover_tokens WHERE token_hash = $1`, th).Scan(&stored, &id)
	if errors.Is(err, pgx.ErrNoRows) || err == nil && subtle.ConstantTimeCompare(stored, th) != 1 {
		return Handover{}, ErrNotFound
	}
	if err != nil {
		return Handover{}, err
	}
	return s.HandoverByID(ctx, id)
}

// HandoverByToken finds the handover a link's token names; a wrong or
// malformed token is ErrNotFound.
func (s *Store) HandoverByToken(ctx context.Context, tok string) (Handover, error) {
	h, ok := linkTokenHash(tok, HandoverTokenPrefix)
	if !ok {
		return Handover{}, ErrNotFound
	}
	return s.HandoverByTokenHash(ctx, h)
}

// Handovers lists the handovers a host started, newest first.
func (s *Store) Handovers(ctx context.Context, host string) ([]Handover, error) {
	return queryAll(ctx, s, scanHandover, `SELECT `+handoverColumns+` FROM handovers WHERE host_id = $1 ORDER BY created_at DESC`, host)
}

// ProjectAdapters lists the adapters of a project.
func (s *Store) ProjectAdapters(ctx context.Context, project string) ([]LoRA, error) {
	return queryAll(ctx, s, scanLoRA, `SELECT `+loraColumns+` FROM loras WHERE project_id = $1 AND state = 'available' ORDER BY created_at, id`, project)
}

// ProjectMemberCount counts a project's members.
func (s *Store) ProjectMemberCount(ctx context.Context, project string) (int, error) {
	var n int
	err := s.Pool.QueryRow(ctx, `SELECT count(*) FROM project_members WHERE project_id = $1`, project).Scan(&n)
	return n, err
}

// SaveSnapshot records a handover's snapshot; a snapshot already saved stays.
func (s *Store) SaveSnapshot(ctx context.Context, id string, snap Snapshot) (Snapshot, error) {
	b, err := json.Marshal(snap)
	if err != nil {
		return snap, err
	}
	var stored []byte
	err = s.Pool.QueryRow(ctx, `UPDATE handovers SET snapshot = coalesce(snapshot, $2) WHERE id = $1 RETURNING snapshot`, id, b).Scan(&stored)
	if errors.Is(err, pgx.ErrNoRows) {
		return snap, ErrNotFound
	}
	if err != nil {
		return snap, err
	}
	var out Snapshot
	return out, json.Unmarshal(stored, &out)
}

// HandoverSnapshot returns the snapshot saved for a handover.
func (s *Store) HandoverSnapshot(ctx context.Context, id string) (Snapshot, error) {
	var b []byte
	err := s.Pool.QueryRow(ctx, `SELECT snapshot FROM handovers WHERE id = $1`, id).Scan(&b)
	if errors.Is(err, pgx.ErrNoRows) || err == nil && b == nil {
		return Snapshot{}, fmt.Errorf("handover %s has no snapshot: %w", id, ErrNotFound)
	}
	if err != nil {
		return Snapshot{}, err
	}
	var snap Snapshot
	return snap, json.Unmarshal(b, &snap)
}

// HandoverError says why a handover cannot be accepted.
type HandoverError struct{ Reason string }

func (e *HandoverError) Error() string { return e.Reason }

// ClosedReason says why the handover cannot be accepted at now, or "".
func (h Handover) ClosedReason(now time.Time) string {
	switch h.State {
	case HandoverPending:
		if !now.Before(h.ExpiresAt) {
			return "this handover has expired"
		}
		return ""
	case HandoverAccepted, HandoverAwaitingPayment, HandoverCompleted:
		return "this handover has already been accepted"
	case HandoverFailed:
		return "this handover was accepted but could not be completed"
	}
	return "this handover was " + h.State
}

// HandoverAcceptance is one request to accept a handover.
type HandoverAcceptance struct {
	// Account takes the project.
	Account string
	// NewAccount: Account is to be created now, with the recipient's email;
	// otherwise it must exist and have the recipient's email.
	NewAccount bool
	// Request identifies the accept request: a retry of the same request
	// succeeds again, any other accept of an accepted handover is refused.
	Request string
}

// AcceptHandover records that a.Account takes the handover. The account is
// the recipient's: an existing account whose email is the one the handover
// was sent to, or (NewAccount) one created now with that email when no
// account has it. A retry of the same request succeeds again; anything else
// on a closed handover, or by an account that is not the recipient's, is a
// *HandoverError.
func (s *Store) AcceptHandover(ctx context.Context, id string, a HandoverAcceptance, now time.Time) (Handover, error) {
	if !projectID.MatchString(a.Account) {
		return Handover{}, fmt.Errorf("invalid account %q: use 1-63 lower-case letters, digits, '.', '_' or '-'", a.Account)
	}
	var h Handover
	err := pgx.BeginFunc(ctx, s.Pool, func(tx pgx.Tx) error {
		var err error
		h, err = scanHandover(tx.QueryRow(ctx, `SELECT `+handoverColumns+` FROM handovers WHERE id = $1 FOR UPDATE`, id))
		if err != nil {
			return err
		}
		var request string
		if err := tx.QueryRow(ctx, `SELECT coalesce(accept_request, '') FROM handovers WHERE id = $1`, id).Scan(&request); err != nil {
			return err
		}
		if h.State == HandoverAccepted && h.NewOwner == a.Account && request == a.Request {
			return nil
		}
		if reason := h.ClosedReason(now); reason != "" {
			return &HandoverError{Reason: reason}
		}
		if a.Account == h.Host {
			return &HandoverError{Reason: "the host cannot accept their own handover"}
		}
		var email *string
		err = tx.QueryRow(ctx, `SELECT email FROM accounts WHERE id = $1 FOR UPDATE`, a.Account).Scan(&email)
		exists := err == nil
		if err != nil && !errors.Is(err, pgx.ErrNoRows) {
			return err
		}
		switch {
		case a.NewAccount && exists:
			return &HandoverError{Reason: "the account " + a.Account + " already exists: sign in as it to accept, or choose another name"}
		case a.NewAccount:
			var taken bool
			if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM accounts WHERE lower(email) = lower($1))`, h.Recipient).Scan(&taken); err != nil {
				return err
			}
			if taken {
				return &HandoverError{Reason: "an account with the email " + h.Recipient + " already exists: sign in as it to accept"}
			}
			if _, err := tx.Exec(ctx, `INSERT INTO accounts (id, email) VALUES ($1, $2)`, a.Account, h.Recipient); err != nil {
				return err
			}
		case !exists:
			return &HandoverError{Reason: "no account " + a.Account + ": accept as a new account, or sign in as yours"}
		case email == nil || !strings.EqualFold(*email, h.Recipient):
			return &HandoverError{Reason: "this handover was sent to another email than account " + a.Account + "'s: sign in as the account with the address the link was sent to"}
		}
		if _, err := tx.Exec(ctx, `UPDATE handovers SET state = 'accepted', new_owner_id = $2, accepted_at = now(), accept_request = nullif($3, '')
			WHERE id = $1`, id, a.Account, a.Request); err != nil {
			return err
		}
		h.State, h.NewOwner = HandoverAccepted, a.Account
		return nil
	})
	return h, err
}

// CloseHandover moves an open handover to a final state (declined,
// cancelled, expired, failed or completed); it reports whether it changed.
// Declined, cancelled and expired close only a pending handover.
func (s *Store) CloseHandover(ctx context.Context, id, state, failure string) (bool, error) {
	from := []string{HandoverPending}
	switch state {
	case HandoverDeclined, HandoverCancelled, HandoverExpired:
	case HandoverFailed:
		from = append(from, HandoverAccepted, HandoverAwaitingPayment)
	case HandoverCompleted:
		from = []string{HandoverAccepted, HandoverAwaitingPayment}
	default:
		return false, fmt.Errorf("cannot close a handover as %q", state)
	}
	tag, err := s.Pool.Exec(ctx, `UPDATE handovers SET state = $2, failure = nullif($3, ''), closed_at = now()
		WHERE id = $1 AND state = ANY($4)`, id, state, failure, from)
	return tag.RowsAffected() == 1, err
}

// CountReminder records that reminder n (1, 2, ...) was sent.
func (s *Store) CountReminder(ctx context.Context, id string, n int) error {
	_, err := s.Pool.Exec(ctx, `UPDATE handovers SET reminders = greatest(reminders, $2) WHERE id = $1`, id, n)
	return err
}

// MailSent reports whether the handover's email of this kind went out.
func (s *Store) MailSent(ctx context.Context, id, kind string) (bool, error) {
	var one int
	err := s.Pool.QueryRow(ctx, `SELECT 1 FROM handover_mails WHERE handover_id = $1 AND kind = $2`, id, kind).Scan(&one)
	if errors.Is(err, pgx.ErrNoRows) {
		return false, nil
	}
	return err == nil, err
}

// RecordMail notes that the handover's email of this kind went out.
func (s *Store) RecordMail(ctx context.Context, id, kind, messageID string) error {
	_, err := s.Pool.Exec(ctx, `INSERT INTO handover_mails (handover_id, kind, message_id) VALUES ($1, $2, $3)
		ON CONFLICT DO NOTHING`, id, kind, messageID)
	return err
}

// RenameReason says why a copy of project is not named project: the name
// is heldBy's project (host is the handover's host, owner its new owner).
func RenameReason(project, heldBy, host, owner string) string {
	switch heldBy {
	case owner:
		return "you already have " + project
	case host:
		return project + " stays with " + host + " (project names are unique on the mesh)"
	}
	return "the name " + project + " is taken on the mesh"
}

// CloneNames are the names a copy of project may take, in order: its own
// name, then project-2, project-3 ... (trimmed to fit a project id).
func CloneNames(project string) []string {
	names := []string{project}
	for i := 2; i <= 99; i++ {
		suffix := fmt.Sprintf("-%d", i)
		base := project
		if len(base)+len(suffix) > 63 {
			base = strings.TrimRight(base[:63-len(suffix)], "-._")
		}
		names = append(names, base+suffix)
	}
	return names
}

// FreeCloneName is the name a copy of project would take now: the first of
// CloneNames that no project has, and the owner of the project that holds
// the name asked for ("" when the copy keeps it).
func (s *Store) FreeCloneName(ctx context.Context, project string) (name, heldBy string, err error) {
	names := CloneNames(project)
	rows, err := s.Pool.Query(ctx, `SELECT id, coalesce(owner_id, '') FROM projects WHERE id = ANY($1)`, names)
	if err != nil {
		return "", "", err
	}
	taken := map[string]string{}
	for rows.Next() {
		var id, owner string
		if err := rows.Scan(&id, &owner); err != nil {
			rows.Close()
			return "", "", err
		}
		taken[id] = owner
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return "", "", err
	}
	heldBy, held := taken[project]
	if !held {
		return project, "", nil
	}
	if heldBy == "" {
		heldBy = "someone"
	}
	for _, n := range names[1:] {
		if _, ok := taken[n]; !ok {
			return n, heldBy, nil
		}
	}
	return "", heldBy, fmt.Errorf("every name from %s to %s is taken: %w", names[1], names[len(names)-1], ErrExists)
}

// CloneProject creates a project owned by the handover's new owner, named
// after the snapshot's project (the first of CloneNames that is free),
// with a copy of each snapshot adapter (objects already copied to the keys
// in keys, by snapshot key), all in one transaction. A retry returns the
// project created the first time.
func (s *Store) CloneProject(ctx context.Context, id string, ids, keys map[string]string) (string, error) {
	var newProject string
	snap, err := s.HandoverSnapshot(ctx, id)
	if err != nil {
		return "", err
	}
	err = pgx.BeginFunc(ctx, s.Pool, func(tx pgx.Tx) error {
		h, err := scanHandover(tx.QueryRow(ctx, `SELECT `+handoverColumns+` FROM handovers WHERE id = $1 FOR UPDATE`, id))
		if err != nil {
			return err
		}
		if h.NewProject != "" {
			newProject = h.NewProject
			return nil
		}
		if h.State != HandoverAccepted || h.NewOwner == "" {
			return &HandoverError{Reason: "handover " + id + " is " + h.State + ", not accepted"}
		}
		for _, name := range CloneNames(snap.Project) {
			tag, err := tx.Exec(ctx, `INSERT INTO projects (id, owner_id) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING`, name, h.NewOwner)
			if err != nil {
				return err
			}
			if tag.RowsAffected() == 1 {
				newProject = name
				break
			}
		}
		if newProject == "" {
			return fmt.Errorf("project %s: every name for its copy is taken: %w", snap.Project, ErrExists)
		}
		if _, err := tx.Exec(ctx, `INSERT INTO project_members (project_id, account_id, role) VALUES ($1, $2, 'owner')`, newProject, h.NewOwner); err != nil {
			return err
		}
		for _, a := range snap.Adapters {
			key, lid := keys[a.SnapshotKey], ids[a.SnapshotKey]
			if key == "" || lid == "" {
				return fmt.Errorf("adapter %s of the snapshot was not copied", a.ID)
			}
			if _, err := tx.Exec(ctx, `INSERT INTO loras (id, owner_id, project_id, name, base_model, rank, alpha, target_modules,
				config, size_bytes, sha256, object_key, state, available_at)
				VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, 'available', now())
				ON CONFLICT (owner_id, sha256) DO UPDATE SET project_id = coalesce(loras.project_id, EXCLUDED.project_id)`,
				lid, h.NewOwner, newProject, a.Name, a.BaseModel, a.Rank, a.Alpha, a.TargetModules, []byte(a.Config),
				a.Size, a.SHA256, key); err != nil {
				return err
			}
		}
		_, err = tx.Exec(ctx, `UPDATE handovers SET new_project_id = $2 WHERE id = $1`, id, newProject)
		return err
	})
	return newProject, err
}

// UncloneProject removes what CloneProject created (the new project and
// the adapters registered in it for the new owner) and returns the object
// keys no registry row refers to any more, for the caller to delete.
func (s *Store) UncloneProject(ctx context.Context, id string) (orphans []string, err error) {
	err = pgx.BeginFunc(ctx, s.Pool, func(tx pgx.Tx) error {
		h, err := scanHandover(tx.QueryRow(ctx, `SELECT `+handoverColumns+` FROM handovers WHERE id = $1 FOR UPDATE`, id))
		if err != nil || h.NewProject == "" {
			return err
		}
		rows, err := tx.Query(ctx, `DELETE FROM loras WHERE project_id = $1 AND owner_id = $2 RETURNING object_key`, h.NewProject, h.NewOwner)
		if err != nil {
			return err
		}
		keys, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			return err
		}
		for _, k := range keys {
			var n int
			if err := tx.QueryRow(ctx, `SELECT count(*) FROM loras WHERE object_key = $1`, k).Scan(&n); err != nil {
				return err
			}
			if n == 0 {
				orphans = append(orphans, k)
			}
		}
		if _, err := tx.Exec(ctx, `UPDATE handovers SET new_project_id = NULL WHERE id = $1`, id); err != nil {
			return err
		}
		_, err = tx.Exec(ctx, `DELETE FROM projects WHERE id = $1`, h.NewProject)
		return err
	})
	return orphans, err
}

// SetHandoverSchedule records the new owner's subscription schedule.
func (s *Store) SetHandoverSchedule(ctx context.Context, id, schedule string) error {
	_, err := s.Pool.Exec(ctx, `UPDATE handovers SET subscription_schedule_id = $2 WHERE id = $1`, id, schedule)
	return err
}

// Conversion counts invites and handovers by outcome.
type Conversion struct {
	InvitesSent       int64 `json:"invites_sent"`
	InvitesAccepted   int64 `json:"invites_accepted"`
	InvitesRevoked    int64 `json:"invites_revoked"`
	InvitesExpired    int64 `json:"invites_expired"`
	HandoversStarted  int64 `json:"handovers_started"`
	HandoversAccepted int64 `json:"handovers_accepted"`
	HandoversDeclined int64 `json:"handovers_declined"`
	HandoversExpired  int64 `json:"handovers_expired"`
	HandoversCanceled int64 `json:"handovers_cancelled"`
	HandoversFailed   int64 `json:"handovers_failed"`
	HandoversPending  int64 `json:"handovers_pending"`
}

// InviteAcceptRate is accepted invites over invites sent (0 when none were sent).
func (c Conversion) InviteAcceptRate() float64 { return rate(c.InvitesAccepted, c.InvitesSent) }

// HandoverAcceptRate is accepted handovers over handovers that were decided
// (accepted, declined or expired; cancelled ones never reached a decision).
func (c Conversion) HandoverAcceptRate() float64 {
	return rate(c.HandoversAccepted, c.HandoversAccepted+c.HandoversDeclined+c.HandoversExpired+c.HandoversFailed)
}

func rate(n, d int64) float64 {
	if d == 0 {
		return 0
	}
	return float64(n) / float64(d)
}

// Conversion counts every invite and handover, or a host's alone when host is set.
func (s *Store) Conversion(ctx context.Context, host string) (Conversion, error) {
	var c Conversion
	err := s.Pool.QueryRow(ctx, `SELECT count(*), count(*) FILTER (WHERE state = 'accepted'),
		count(*) FILTER (WHERE state = 'revoked'), count(*) FILTER (WHERE state = 'expired')
		FROM invites WHERE $1 = '' OR host_id = $1`, host).Scan(&c.InvitesSent, &c.InvitesAccepted, &c.InvitesRevoked, &c.InvitesExpired)
	if err != nil {
		return c, err
	}
	err = s.Pool.QueryRow(ctx, `SELECT count(*), count(*) FILTER (WHERE state IN ('accepted', 'awaiting_payment', 'completed')),
		count(*) FILTER (WHERE state = 'declined'), count(*) FILTER (WHERE state = 'expired'),
		count(*) FILTER (WHERE state = 'cancelled'), count(*) FILTER (WHERE state = 'failed'),
		count(*) FILTER (WHERE state = 'pending')
		FROM handovers WHERE $1 = '' OR host_id = $1`, host).Scan(&c.HandoversStarted, &c.HandoversAccepted, &c.HandoversDeclined,
		&c.HandoversExpired, &c.HandoversCanceled, &c.HandoversFailed, &c.HandoversPending)
	return c, err
}

// HandoversInFlight lists, newest first and at most limit, the handovers
// an account hosts or is offered (sent to its email, or accepted by it)
// that are still under way: pending, accepted or awaiting the new owner's
// payment method.
func (s *Store) HandoversInFlight(ctx context.Context, account string, limit int) ([]Handover, error) {
	return queryAll(ctx, s, scanHandover, `SELECT `+handoverColumns+` FROM handovers
		WHERE state IN ($3, $4, $5) AND (host_id = $1 OR new_owner_id = $1
			OR lower(recipient_email) = (SELECT lower(email) FROM accounts WHERE id = $1 AND email <> ''))
		ORDER BY created_at DESC LIMIT $2`, account, limit, HandoverPending, HandoverAccepted, HandoverAwaitingPayment)
}

// HandoversOf lists the handovers an account hosts or is offered (sent to
// its email), newest first.
func (s *Store) HandoversOf(ctx context.Context, account string) ([]Handover, error) {
	return queryAll(ctx, s, scanHandover, `SELECT `+handoverColumns+` FROM handovers
		WHERE host_id = $1 OR lower(recipient_email) = (SELECT lower(email) FROM accounts WHERE id = $1 AND email <> '')
		ORDER BY created_at DESC`, account)
}
