package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/superinstance/mesh/internal/money"
)

// Holds reserve headroom before inference runs, and settle against it as
// usage is logged.
//
// The invariants holds keep at every commit, per account and per guest
// session, where open is the sum of greatest(amount - settled, 0) over the
// active, unexpired holds:
//
//	unbilled - credits + open(account's holds) <= credit_ceiling
//	open(session's holds) <= session's remaining quota
// ReserveHold checks it under the account's (then the session's) row lock;
// LogUsage with a hold moves a charge from the hold's open part to the
// balance, which leaves the sum unchanged while the charge is within the
// hold. So the ceiling and the quota are passed only by charges beyond their
// hold's bound (see the package workflows' admission notes), and by calls
// logged outside any hold (a hub's own usage, Usage.Served): the first of
// those that leaves the left side at the ceiling suspends the account, so
// no hold is taken or raised after it.

// TokenBound is the most tokens one usage event may count.
type TokenBound struct {
	PromptTokens     int64 `json:"prompt_tokens"`
	CompletionTokens int64 `json:"completion_tokens"`
}

// HoldRequest asks for a hold that covers at least Target and the priced
// Bounds, whichever is more. Asking again with the same id raises the hold
// to the new target (never lowers it), so a retried request reserves once.
type HoldRequest struct {
	ID           string
	Account      string
	GuestSession string // empty for none
	Bounds       []TokenBound
	Target       money.Micros
	// TTL is how long the hold lasts from this request; a hold whose run
	// died without releasing it frees its headroom when it expires.
	TTL time.Duration
}

// Hold is a reservation of headroom.
type Hold struct {
	ID           string       `json:"id"`
	Account      string       `json:"account"`
	GuestSession string       `json:"guest_session,omitempty"`
	Amount       money.Micros `json:"amount"`
	Settled      money.Micros `json:"settled"`
	// The prices Amount was worked out with: the most expensive model's per
	// million tokens, and the account's multiplier when the hold was taken.
	PromptPrice     money.Micros `json:"prompt_per_mtok"`
	CompletionPrice money.Micros `json:"completion_per_mtok"`
	Multiplier      money.PPM    `json:"multiplier_ppm"`
	State           string       `json:"state"`
	ExpiresAt       time.Time    `json:"expires_at"`
}

// Price is the most one event within b can be charged under this hold's prices.
func (h Hold) Price(b TokenBound) (money.Micros, error) {
	return PriceBound(h.PromptPrice, h.CompletionPrice, h.Multiplier, b)
}

// PriceBound prices a token bound with the same rounding LogUsage uses;
// rounding is monotone, so no event within the bound is charged more.
func PriceBound(promptPrice, completionPrice money.Micros, mult money.PPM, b TokenBound) (money.Micros, error) {
	if b.PromptTokens < 0 || b.CompletionTokens < 0 {
		return 0, errors.New("token bounds cannot be negative")
	}
	c, err := CostBasis(promptPrice, completionPrice, b.PromptTokens, b.CompletionTokens)
	if err != nil {
		return 0, err
	}
	return money.Apply(c, mult)
}

// HeadroomError: the account or the guest session cannot cover a run's
// worst case; nothing was reserved.
type HeadroomError struct {
	Account      string
	GuestSession string // set when the session's quota is what is short
	Need         money.Micros
	Available    money.Micros
}

func (e *HeadroomError) Error() string {
	if e.GuestSession != "" {
		return fmt.Sprintf("guest quota too low for this run: it may cost up to %s and session %s has %s left; ask for fewer rounds (--max-rounds) or ask the host for another invite",
			e.Need, e.GuestSession, max(e.Available, 0))
	}
	return fmt.Sprintf("not enough headroom under the credit ceiling: this run may cost up to %s and account %s has %s left; raise the ceiling (si ceiling set), flush the balance (si billing flush) or ask for fewer rounds (--max-rounds)",
		e.Need, e.Account, max(e.Available, 0))
}

const holdColumns = `id, account_id, coalesce(guest_session, ''), amount, settled, prompt_per_mtok, completion_per_mtok, multiplier_ppm, state, expires_at`

func scanHold(row pgx.Row) (Hold, error) {
	var h Hold
	err := row.Scan(&h.ID, &h.Account, &h.GuestSession, &h.Amount, &h.Settled, &h.PromptPrice, &h.CompletionPrice, &h.Multiplier, &h.State, &h.ExpiresAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return h, ErrNotFound
	}
	return h, err
}

// openHolds is the open part of the active, unexpired holds of an account
// (or of a guest session when guest is set), other than hold id.
func openHolds(ctx context.Context, tx pgx.Tx, account, guest, id string) (money.Micros, error) {
	var open money.Micros
	q := `SELECT coalesce(sum(greatest(amount - settled, 0)), 0) FROM holds
		WHERE account_id = $1 AND state = 'active' AND expires_at > now() AND id <> $2`
	args := []any{account, id}
	if guest != "" {
		q = `SELECT coalesce(sum(greatest(amount - settled, 0)), 0) FROM holds
			WHERE guest_session = $1 AND state = 'active' AND expires_at > now() AND id <> $2`
		args = []any{guest, id}
	}
	err := tx.QueryRow(ctx, q, args...).Scan(&open)
	return open, err
}

// ReserveHold takes or raises a hold in one transaction, under the
// account's row lock and then the guest session's (the order LogUsage
// takes them in). It refuses with a *SuspendedError for a suspended account,
// a *HeadroomError when the account or the session cannot cover it, and
// ErrNotFound for an unknown account or a session of another host.
func (s *Store) ReserveHold(ctx context.Context, r HoldRequest) (Hold, error) {
	if r.ID == "" || r.Account == "" {
		return Hold{}, errors.New("a hold needs an id and an account")
	}
	if r.Target < 0 {
		return Hold{}, errors.New("a hold's target cannot be negative")
	}
	if r.TTL <= 0 {
		return Hold{}, errors.New("a hold needs a positive time to live")
	}
	var h Hold
	err := pgx.BeginFunc(ctx, s.Pool, func(tx pgx.Tx) error {
		var a Account
		var mult money.PPM
		err := tx.QueryRow(ctx, `SELECT a.credits, a.unbilled, a.credit_ceiling, a.status, a.suspended_reason, p.multiplier_ppm
			FROM accounts a JOIN pricing_tiers p ON p.tier = a.tier WHERE a.id = $1 FOR UPDATE OF a`, r.Account).
			Scan(&a.Credits, &a.Unbilled, &a.CreditCeiling, &a.Status, &a.SuspendedReason, &mult)
		if errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("account %s: %w", r.Account, ErrNotFound)
		}
		if err != nil {
			return err
		}
		var guestRemaining money.Micros
		if r.GuestSession != "" {
			var host string
			err := tx.QueryRow(ctx, `SELECT remaining, host_id FROM guest_sessions WHERE id = $1 FOR UPDATE`, r.GuestSession).Scan(&guestRemaining, &host)
			if errors.Is(err, pgx.ErrNoRows) || (err == nil && host != r.Account) {
				return fmt.Errorf("guest session %s of account %s: %w", r.GuestSession, r.Account, ErrNotFound)
			}
			if err != nil {
				return err
			}
		}
		h, err = scanHold(tx.QueryRow(ctx, `SELECT `+holdColumns+` FROM holds WHERE id = $1 FOR UPDATE`, r.ID))
		switch {
		case errors.Is(err, ErrNotFound):
			h = Hold{ID: r.ID, Account: r.Account, GuestSession: r.GuestSession, Multiplier: mult, State: "active"}
			if err := tx.QueryRow(ctx, `SELECT coalesce(max(prompt_per_mtok), 0), coalesce(max(completion_per_mtok), 0) FROM model_prices`).
				Scan(&h.PromptPrice, &h.CompletionPrice); err != nil {
				return err
			}
		case err != nil:
			return err
		case h.Account != r.Account || h.GuestSession != r.GuestSession:
			return fmt.Errorf("hold %s belongs to another account or session", r.ID)
		case h.State != "active":
			return fmt.Errorf("hold %s was released; a run takes one hold", r.ID)
		}
		target := r.Target
		for _, b := range r.Bounds {
			p, err := h.Price(b)
			if err != nil {
				return err
			}
			if target, err = money.Add(target, p); err != nil {
				return err
			}
		}
		fresh := h.Amount == 0 && h.Settled == 0
		// An expired hold freed its headroom, which another run may have
		// taken since: renewing it is a new reservation, checked as one.
		expired := false
		if !h.ExpiresAt.IsZero() {
			if err := tx.QueryRow(ctx, `SELECT $1::timestamptz <= now()`, h.ExpiresAt).Scan(&expired); err != nil {
				return err
			}
		}
		if target > h.Amount || fresh || expired {
			if a.Status == "suspended" {
				return &SuspendedError{Account: r.Account, Reason: a.SuspendedReason, Unbilled: a.Unbilled, Ceiling: a.CreditCeiling}
			}
			newOpen := max(max(target, h.Amount)-h.Settled, 0)
			others, err := openHolds(ctx, tx, r.Account, "", r.ID)
			if err != nil {
				return err
			}
			if avail := a.CreditCeiling + a.Credits - a.Unbilled - others; newOpen > avail {
				return &HeadroomError{Account: r.Account, Need: newOpen, Available: avail}
			}
			if r.GuestSession != "" {
				others, err := openHolds(ctx, tx, r.Account, r.GuestSession, r.ID)
				if err != nil {
					return err
				}
				if avail := guestRemaining - others; newOpen > avail {
					return &HeadroomError{Account: r.Account, GuestSession: r.GuestSession, Need: newOpen, Available: avail}
				}
			}
			h.Amount = max(target, h.Amount)
		}
		h, err = scanHold(tx.QueryRow(ctx, `INSERT INTO holds (id, account_id, guest_session, amount, prompt_per_mtok, completion_per_mtok,
			multiplier_ppm, expires_at) VALUES ($1, $2, nullif($3, ''), $4, $5, $6, $7, now() + $8::interval)
			ON CONFLICT (id) DO UPDATE SET amount = excluded.amount, expires_at = excluded.expires_at, updated_at = now()
			RETURNING `+holdColumns, h.ID, h.Account, h.GuestSession, h.Amount, h.PromptPrice, h.CompletionPrice, h.Multiplier,
			fmt.Sprintf("%d microseconds", r.TTL.Microseconds())))
		return err
	})
	return h, err
}

// ReleaseHold frees what a hold has not settled; releasing twice, or a hold
// never taken, changes nothing. Usage logged against a released hold is
// still billed.
func (s *Store) ReleaseHold(ctx context.Context, id string) (Hold, error) {
	h, err := scanHold(s.Pool.QueryRow(ctx, `UPDATE holds SET state = 'released', updated_at = now() WHERE id = $1 RETURNING `+holdColumns, id))
	if errors.Is(err, ErrNotFound) {
		return Hold{ID: id, State: "released"}, nil
	}
	return h, err
}

// HoldByID returns a hold.
func (s *Store) HoldByID(ctx context.Context, id string) (Hold, error) {
	return scanHold(s.Pool.QueryRow(ctx, `SELECT `+holdColumns+` FROM holds WHERE id = $1`, id))
}

// settleHold adds a charge to the hold it was reserved under; a hold of
// another account or session settles nothing.
func settleHold(ctx context.Context, tx pgx.Tx, u Usage, gross money.Micros) error {
	_, err := tx.Exec(ctx, `UPDATE holds SET settled = settled + $2, updated_at = now()
		WHERE id = $1 AND account_id = $3 AND coalesce(guest_session, '') = $4`, u.Hold, gross, u.Account, u.GuestSession)
	return err
}

// ActiveHold is the id of a run in progress and when its hold was taken.
type ActiveHold struct {
	ID      string
	Created time.Time
}

// ActiveHolds is ActiveHoldIDs with when each hold was taken.
func (s *Store) ActiveHolds(ctx context.Context, account string, limit int) ([]ActiveHold, error) {
	return queryAll(ctx, s, func(row pgx.Row) (ActiveHold, error) {
		var h ActiveHold
		return h, row.Scan(&h.ID, &h.Created)
	}, `SELECT id, created_at FROM holds WHERE account_id = $1 AND state = 'active' AND expires_at > now()
		ORDER BY created_at DESC, id LIMIT $2`, account, limit)
}

// ActiveHoldIDs lists the ids of an account's active, unexpired holds (its
// runs in progress, its guests' included), newest first, at most limit.
func (s *Store) ActiveHoldIDs(ctx context.Context, account string, limit int) ([]string, error) {
	return queryAll(ctx, s, func(row pgx.Row) (string, error) {
		var id string
		return id, row.Scan(&id)
	}, `SELECT id FROM holds WHERE account_id = $1 AND state = 'active' AND expires_at > now()
		ORDER BY created_at DESC, id LIMIT $2`, account, limit)
}
