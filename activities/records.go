package activities

import (
	"context"
	"errors"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/temporal"

	"github.com/superinstance/mesh/internal/store"
)

// Records writes workflow outcomes to PostgreSQL.
type Records struct {
	Store *store.Store
}

// RecordConsensus stores a finished consensus run; a retry overwrites the same row.
func (r *Records) RecordConsensus(ctx context.Context, run store.ConsensusRun) error {
	return r.Store.RecordConsensus(ctx, run)
}

// checkTimeout bounds each check's database work, so that a run whose
// PostgreSQL does not answer learns it in seconds.
const checkTimeout = 3 * time.Second

// unreachable turns an error that did not come from PostgreSQL's answer (a
// refused or timed-out connection) into ErrLedgerUnreachable, retryable so a
// short retry rides out a blip. Its text names no address or credential:
// those go to the worker's log.
func unreachable(ctx context.Context, err error) error {
	var pe *pgconn.PgError
	if err == nil || errors.As(err, &pe) || errors.Is(err, store.ErrNotFound) {
		return err
	}
	if activity.IsActivity(ctx) {
		activity.GetLogger(ctx).Warn("PostgreSQL did not answer", "error", err)
	}
	return temporal.NewApplicationError("the ledger is unreachable: PostgreSQL did not answer; try again shortly", ErrLedgerUnreachable)
}

// CheckAccount refuses work for an account that is suspended or unknown,
// with a typed non-retryable error, before any inference is spent; one
// whose database does not answer fails with ErrLedgerUnreachable.
func (r *Records) CheckAccount(ctx context.Context, account string) error {
	ctx, cancel := context.WithTimeout(ctx, checkTimeout)
	defer cancel()
	a, err := r.Store.AccountByID(ctx, account)
	err = unreachable(ctx, err)
	if errors.Is(err, store.ErrNotFound) {
		return temporal.NewNonRetryableApplicationError("unknown account "+account+": create it with si account create", ErrUnknownAccount, err)
	}
	if err != nil {
		return err
	}
	if a.Status == "suspended" {
		se := &store.SuspendedError{Account: a.ID, Reason: a.SuspendedReason, Unbilled: a.Unbilled, Ceiling: a.CreditCeiling}
		return temporal.NewNonRetryableApplicationError(se.Error(), ErrCreditCeiling, se)
	}
	return nil
}

// CheckGuest returns a guest session that may still spend, refusing one
// that is unknown, belongs to another host (when host is given), is revoked
// or expired, or has spent its quota. session is the session's handle, never
// its secret.
func (r *Records) CheckGuest(ctx context.Context, session, host string) (store.GuestSession, error) {
	ctx, cancel := context.WithTimeout(ctx, checkTimeout)
	defer cancel()
	g, err := r.Store.GuestSessionByID(ctx, session)
	err = unreachable(ctx, err)
	if errors.Is(err, store.ErrNotFound) || (err == nil && host != "" && g.Host != host) {
		return g, temporal.NewNonRetryableApplicationError("unknown guest session "+session+": open one with si join and an invite link", ErrUnknownAccount, err)
	}
	if err != nil {
		return g, err
	}
	if reason := g.ClosedReason(time.Now()); reason != "" {
		return g, temporal.NewNonRetryableApplicationError(reason+": ask the host for a new invite", ErrUnknownAccount, nil)
	}
	if !store.CanWrite(g.Role) {
		return g, temporal.NewNonRetryableApplicationError("a "+g.Role+" of project "+g.Project+" can watch its runs but not start one",
			ErrProjectForbidden, store.ErrForbidden)
	}
	if g.Remaining <= 0 {
		qe := &store.GuestQuotaError{Session: session}
		return g, temporal.NewNonRetryableApplicationError(qe.Error(), ErrGuestQuota, qe)
	}
	return g, nil
}

// CheckProject refuses a consensus in a project the account may not write
// to: one it is not a member of (an ownerless one included), or one where it
// is a viewer. A project new to the mesh is created, owned by the account.
// The default project is every account's own scratch space (its runs are
// seen by their account alone) and is not checked.
func (r *Records) CheckProject(ctx context.Context, account, project string) error {
	if project == "" || project == DefaultProject {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, checkTimeout)
	defer cancel()
	role, err := r.Store.ClaimProject(ctx, project, account)
	err = unreachable(ctx, err)
	if errors.Is(err, store.ErrNotFound) {
		return temporal.NewNonRetryableApplicationError("project "+project+": no such project of yours", ErrProjectForbidden, err)
	}
	if err != nil {
		return err
	}
	if !store.CanWrite(role) {
		return temporal.NewNonRetryableApplicationError("a "+role+" of project "+project+" can watch its runs but not start one",
			ErrProjectForbidden, store.ErrForbidden)
	}
	return nil
}

// DefaultProject is the project of runs that name none.
const DefaultProject = store.DefaultProject
