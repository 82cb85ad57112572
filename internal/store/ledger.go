package store

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/superinstance/mesh/internal/money"
)

// Ledger errors.
var (
	// ErrSuspended: the account is suspended; nothing was written.
	ErrSuspended = errors.New("account suspended")
	// ErrNothingToFlush: the unbilled balance holds less than a cent.
	ErrNothingToFlush = errors.New("nothing to flush: the unbilled balance is under one cent")
	// ErrFlushInFlight: the account already has a pending flush.
	ErrFlushInFlight = errors.New("a flush is already in flight for this account")
	// ErrExists: a row with that key exists already.
	ErrExists = errors.New("already exists")
)

// GuestQuotaError: the guest session's quota is spent; nothing was written.
type GuestQuotaError struct{ Session string }

func (e *GuestQuotaError) Error() string {
	return "guest quota exhausted: session " + e.Session + " has spent its quota; ask the host for another invite"
}

// SuspendedError says why an account refuses new usage.
type SuspendedError struct {
	Account           string
	Reason            string // credit_ceiling or payment_failed
	Unbilled, Ceiling money.Micros
}

func (e *SuspendedError) Error() string {
	if e.Reason == "credit_ceiling" {
		return fmt.Sprintf("credit ceiling reached: account %s owes %s of a %s ceiling; raise it (si ceiling set) or flush the balance to Stripe (si billing flush)",
			e.Account, e.Unbilled, e.Ceiling)
	}
	return fmt.Sprintf("account %s is suspended (%s): settle the open Stripe invoice to reinstate it", e.Account, strings.ReplaceAll(e.Reason, "_", " "))
}

func (e *SuspendedError) Unwrap() error { return ErrSuspended }

// Account is one billing account.
type Account struct {
	ID               string
	Email            string
	Tier             string
	Credits          money.Micros
	Unbilled         money.Micros
	CreditCeiling    money.Micros
	FlushThreshold   money.Micros
	Status           string
	SuspendedReason  string
	StripeCustomerID string
	CreatedAt        time.Time
}

const accountColumns = `id, coalesce(email, ''), tier, credits, unbilled, credit_ceiling, flush_threshold, status, suspended_reason,
	coalesce(stripe_customer_id, ''), created_at`

func scanAccount(row pgx.Row) (Account, error) {
	var a Account
	err := row.Scan(&a.ID, &a.Email, &a.Tier, &a.Credits, &a.Unbilled, &a.CreditCeiling, &a.FlushThreshold, &a.Status,
		&a.SuspendedReason, &a.StripeCustomerID, &a.CreatedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return a, ErrNotFound
	}
	return a, err
}

// CreateAccount creates an account. An email or id already taken is ErrExists.
func (s *Store) CreateAccount(ctx context.Context, id, email string) (Account, error) {
	a, err := scanAccount(s.Pool.QueryRow(ctx, `INSERT INTO accounts (id, email) VALUES ($1, nullif($2, '')) RETURNING `+accountColumns, id, email))
	var pe *pgconn.PgError
	if errors.As(err, &pe) && pe.Code == "23505" {
		return a, fmt.Errorf("account %s or email %s: %w", id, email, ErrExists)
	}
	return a, err
}

// AccountByID returns one account.
func (s *Store) AccountByID(ctx context.Context, id string) (Account, error) {
	return scanAccount(s.Pool.QueryRow(ctx, `SELECT `+accountColumns+` FROM accounts WHERE id = $1`, id))
}

// SetTier moves an account to a pricing tier.
func (s *Store) SetTier(ctx context.Context, id, tier string) error {
	tag, err := s.Pool.Exec(ctx, `UPDATE accounts SET tier = $2 WHERE id = $1`, id, tier)
	var pe *pgconn.PgError
	if errors.As(err, &pe) && pe.Code == "23503" {
		return fmt.Errorf("unknown tier %q: use managed or byok", tier)
	}
	if err == nil && tag.RowsAffected() == 0 {
		return ErrNotFound
	}
	return err
}

// SetCeiling sets an account's credit ceiling; an account suspended at the
// ceiling is reinstated when its balance is now under the new one.
func (s *Store) SetCeiling(ctx context.Context, id string, ceiling money.Micros) error {
	if ceiling <= 0 {
		return errors.New("the credit ceiling must be positive")
	}
	tag, err := s.Pool.Exec(ctx, `UPDATE accounts SET credit_ceiling = $2,
		status = CASE WHEN suspended_reason = 'credit_ceiling' AND unbilled < $2 THEN 'active' ELSE status END,
		suspended_reason = CASE WHEN suspended_reason = 'credit_ceiling' AND unbilled < $2 THEN '' ELSE suspended_reason END
		WHERE id = $1`, id, ceiling)
	if err == nil && tag.RowsAffected() == 0 {
		return ErrNotFound
	}
	return err
}

// AddCredits adds knowledge credits (spent before anything is billed).
func (s *Store) AddCredits(ctx context.Context, id string, amount money.Micros, ref string) (Account, error) {
	if amount <= 0 {
		return Account{}, errors.New("credits to add must be positive")
	}
	var a Account
	err := pgx.BeginFunc(ctx, s.Pool, func(tx pgx.Tx) error {
		var err error
		a, err = scanAccount(tx.QueryRow(ctx, `UPDATE accounts SET credits = credits + $2 WHERE id = $1 RETURNING `+accountColumns, id, amount))
		if err != nil {
			return err
		}
		_, err = tx.Exec(ctx, `INSERT INTO journal (account_id, kind, ref, credits_delta) VALUES ($1, 'credit', $2, $3)`, id, ref, amount)
		return err
	})
	return a, err
}

// Usage is one inference call to bill.
type Usage struct {
	// EventID is derived from where the call came from (workflow id and
	// activity id, or a hub's own event id); a second copy changes nothing.
	EventID          string
	Account          string
	Project          string
	GuestSession     string
	Model            string
	PromptTokens     int64
	CompletionTokens int64
	// Hold, when set, is the hold (see ReserveHold) the call ran under: the
	// charge settles against it, and a call that ran is billed even when the
	// account reached its ceiling or the session its quota meanwhile.
	Hold string
	// Served is true for a call that already ran without a hold: a hub's
	// own record of inference it served locally. It is billed even on a
	// suspended account (it ran; it is never dropped), and like any call
	// outside a hold it counts against the ceiling together with the open
	// holds, so the record that spends the headroom runs reserved suspends
	// the account at once.
	Served bool
}

// Charge is what LogUsage recorded for an event.
type Charge struct {
	EventID        string
	CostBasis      money.Micros
	Multiplier     money.PPM
	Gross          money.Micros
	CreditsApplied money.Micros
	Charged        money.Micros
	// Duplicate is true when the event had been logged before; the other
	// fields are then the first logging's.
	Duplicate bool
	// Suspended is true when this event brought the balance to the ceiling,
	// or, outside a hold, the balance less credits plus the account's open
	// holds to it.
	Suspended bool
	// Unbilled is the account's unbilled balance after the event.
	Unbilled money.Micros
	// FlushDue is true when the unbilled balance reached the flush threshold.
	FlushDue bool
	// GuestRemaining is the guest session's quota left after the event;
	// GuestCapped is true when the event was charged only what was left.
	GuestRemaining money.Micros
	GuestCapped    bool
}

// LogUsage bills one inference call in one transaction: cost basis from the
// model's prices, times the tier's multiplier (the one rounding rule in
// package money), knowledge credits spent first, the rest added to the
// unbilled balance. At the ceiling the account is suspended, and so it is
// when a call outside a hold leaves the balance less credits plus the open
// holds at the ceiling (it spent headroom runs reserved). A suspended
// account's usage is refused with a *SuspendedError and nothing is written,
// unless it ran under a hold of the same account and session, or was served
// already (Served): that call ran, and is billed. LogUsageBatch is the same
// rules, many events in one round trip.
func (s *Store) LogUsage(ctx context.Context, u Usage) (Charge, error) {
	if u.EventID == "" || u.Account == "" || u.Model == "" {
		return Charge{}, errors.New("usage needs an event id, an account and a model")
	}
	if u.PromptTokens < 0 || u.CompletionTokens < 0 {
		return Charge{}, errors.New("token counts cannot be negative")
	}
	var c Charge
	err := pgx.BeginFunc(ctx, s.Pool, func(tx pgx.Tx) error {
		c = Charge{EventID: u.EventID}
		// The account row lock serialises this account's usage.
		var a Account
		var mult money.PPM
		err := tx.QueryRow(ctx, `SELECT a.credits, a.unbilled, a.credit_ceiling, a.flush_threshold, a.status, a.suspended_reason, p.multiplier_ppm
			FROM accounts a JOIN pricing_tiers p ON p.tier = a.tier WHERE a.id = $1 FOR UPDATE OF a`, u.Account).
			Scan(&a.Credits, &a.Unbilled, &a.CreditCeiling, &a.FlushThreshold, &a.Status, &a.SuspendedReason, &mult)
		if errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("account %s: %w", u.Account, ErrNotFound)
		}
		if err != nil {
			return err
		}
		// A copy already logged returns the first result, suspended or not.
		err = tx.QueryRow(ctx, `SELECT cost_basis, multiplier_ppm, gross, credits_applied, charged FROM usage_events WHERE event_id = $1`, u.EventID).
			Scan(&c.CostBasis, &c.Multiplier, &c.Gross, &c.CreditsApplied, &c.Charged)
		if err == nil {
			c.Duplicate, c.Unbilled = true, a.Unbilled
			return nil
		}
		if !errors.Is(err, pgx.ErrNoRows) {
			return err
		}
		held := false
		if u.Hold != "" {
			// The hold row is locked last: account, session, hold.
			err := tx.QueryRow(ctx, `SELECT true FROM holds WHERE id = $1 AND account_id = $2 AND coalesce(guest_session, '') = $3`,
				u.Hold, u.Account, u.GuestSession).Scan(&held)
			if err != nil && !errors.Is(err, pgx.ErrNoRows) {
				return err
			}
		}
		if a.Status == "suspended" && !held && !u.Served {
			return &SuspendedError{Account: u.Account, Reason: a.SuspendedReason, Unbilled: a.Unbilled, Ceiling: a.CreditCeiling}
		}
		var promptPrice, completionPrice money.Micros
		err = tx.QueryRow(ctx, `SELECT prompt_per_mtok, completion_per_mtok FROM model_prices WHERE model = $1 OR model = '*'
			ORDER BY model = '*' LIMIT 1`, u.Model).Scan(&promptPrice, &completionPrice)
		if err != nil {
			return fmt.Errorf("price of model %s: %w", u.Model, err)
		}
		if c.CostBasis, err = CostBasis(promptPrice, completionPrice, u.PromptTokens, u.CompletionTokens); err != nil {
			return err
		}
		c.Multiplier = mult
		if c.Gross, err = money.Apply(c.CostBasis, mult); err != nil {
			return err
		}
		if u.GuestSession != "" {
			// The session row lock (taken after the host's account lock, in
			// that order everywhere) serialises the guest's spending.
			var remaining money.Micros
			var host string
			err := tx.QueryRow(ctx, `SELECT remaining, host_id FROM guest_sessions WHERE id = $1 FOR UPDATE`, u.GuestSession).Scan(&remaining, &host)
			if errors.Is(err, pgx.ErrNoRows) || (err == nil && host != u.Account) {
				return fmt.Errorf("guest session %s of account %s: %w", u.GuestSession, u.Account, ErrNotFound)
			}
			if err != nil {
				return err
			}
			if remaining <= 0 && !held && !u.Served {
				return &GuestQuotaError{Session: u.GuestSession}
			}
			// The host never pays beyond the quota: the call that crosses it
			// is charged what was left.
			if c.Gross > remaining {
				c.Gross, c.GuestCapped = remaining, true
			}
			c.GuestRemaining = remaining - c.Gross
			if _, err := tx.Exec(ctx, `UPDATE guest_sessions SET remaining = $2 WHERE id = $1`, u.GuestSession, c.GuestRemaining); err != nil {
				return err
			}
		}
		c.CreditsApplied = min(a.Credits, c.Gross)
		c.Charged = c.Gross - c.CreditsApplied
		if c.Unbilled, err = money.Add(a.Unbilled, c.Charged); err != nil {
			return err
		}
		c.Suspended = c.Unbilled >= a.CreditCeiling
		if !c.Suspended && !held && c.Gross > 0 {
			// Outside a hold, the call may have spent headroom that open
			// holds reserved: then no run may start until it is back.
			open, err := openHolds(ctx, tx, u.Account, "", "")
			if err != nil {
				return err
			}
			c.Suspended = c.Unbilled-(a.Credits-c.CreditsApplied)+open >= a.CreditCeiling
		}
		c.FlushDue = c.Unbilled >= a.FlushThreshold
		hold := ""
		if held {
			hold = u.Hold
			if err := settleHold(ctx, tx, u, c.Gross); err != nil {
				return err
			}
		}
		if _, err := tx.Exec(ctx, `INSERT INTO usage_events (event_id, account_id, project_id, guest_session, model, prompt_tokens,
			completion_tokens, cost_basis, multiplier_ppm, gross, credits_applied, charged, hold_id)
			VALUES ($1, $2, $3, nullif($4, ''), $5, $6, $7, $8, $9, $10, $11, $12, nullif($13, ''))`,
			u.EventID, u.Account, u.Project, u.GuestSession, u.Model, u.PromptTokens, u.CompletionTokens,
			c.CostBasis, c.Multiplier, c.Gross, c.CreditsApplied, c.Charged, hold); err != nil {
			return err
		}
		// A held call on an account suspended for another reason (a failed
		// payment) keeps that reason, so a flush cannot lift it.
		if _, err := tx.Exec(ctx, `UPDATE accounts SET credits = credits - $2, unbilled = $3,
			status = CASE WHEN $4 AND status = 'active' THEN 'suspended' ELSE status END,
			suspended_reason = CASE WHEN $4 AND status = 'active' THEN 'credit_ceiling' ELSE suspended_reason END
			WHERE id = $1`, u.Account, c.CreditsApplied, c.Unbilled, c.Suspended); err != nil {
			return err
		}
		_, err = tx.Exec(ctx, `INSERT INTO journal (account_id, kind, ref, credits_delta, unbilled_delta) VALUES ($1, 'usage', $2, $3, $4)`,
			u.Account, u.EventID, -c.CreditsApplied, c.Charged)
		return err
	})
	return c, err
}

// CostBasis prices tokens at per-million-token prices, with the one rounding rule.
func CostBasis(promptPerMTok, completionPerMTok money.Micros, promptTokens, completionTokens int64) (money.Micros, error) {
	p, err := money.Apply(promptPerMTok, money.PPM(promptTokens))
	if err != nil {
		return 0, err
	}
	c, err := money.Apply(completionPerMTok, money.PPM(completionTokens))
	if err != nil {
		return 0, err
	}
	return money.Add(p, c)
}

// UsageRow is one logged usage event.
type UsageRow struct {
	Usage
	Charge
	CreatedAt time.Time
}

// UsageSince lists an account's usage events since t, newest first.
func (s *Store) UsageSince(ctx context.Context, account string, since time.Time, limit int) ([]UsageRow, error) {
	rows, err := s.Pool.Query(ctx, `SELECT event_id, project_id, coalesce(guest_session, ''), model, prompt_tokens, completion_tokens,
		cost_basis, multiplier_ppm, gross, credits_applied, charged, created_at
		FROM usage_events WHERE account_id = $1 AND created_at >= $2 ORDER BY created_at DESC, event_id LIMIT $3`, account, since, limit)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []UsageRow
	for rows.Next() {
		var r UsageRow
		r.Account = account
		if err := rows.Scan(&r.Usage.EventID, &r.Project, &r.GuestSession, &r.Model, &r.PromptTokens, &r.CompletionTokens,
			&r.CostBasis, &r.Multiplier, &r.Gross, &r.CreditsApplied, &r.Charged, &r.CreatedAt); err != nil {
			return nil, err
		}
		r.Charge.EventID = r.Usage.EventID
		out = append(out, r)
	}
	return out, rows.Err()
}

// SetStripeCustomer records an account's Stripe customer id.
func (s *Store) SetStripeCustomer(ctx context.Context, account, customer string) error {
	tag, err := s.Pool.Exec(ctx, `UPDATE accounts SET stripe_customer_id = $2 WHERE id = $1`, account, customer)
	if err == nil && tag.RowsAffected() == 0 {
		return ErrNotFound
	}
	return err
}

// SetMultiplier sets a pricing tier's multiplier, creating the tier if new.
// It applies to usage logged from now on.
func (s *Store) SetMultiplier(ctx context.Context, tier string, m money.PPM) error {
	if m <= 0 {
		return errors.New("a multiplier must be positive")
	}
	if !projectID.MatchString(tier) {
		return fmt.Errorf("invalid tier name %q", tier)
	}
	_, err := s.Pool.Exec(ctx, `INSERT INTO pricing_tiers (tier, multiplier_ppm) VALUES ($1, $2)
		ON CONFLICT (tier) DO UPDATE SET multiplier_ppm = excluded.multiplier_ppm`, tier, m)
	return err
}

// Multipliers lists the pricing tiers.
func (s *Store) Multipliers(ctx context.Context) (map[string]money.PPM, error) {
	rows, err := s.Pool.Query(ctx, `SELECT tier, multiplier_ppm FROM pricing_tiers`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[string]money.PPM{}
	for rows.Next() {
		var t string
		var m money.PPM
		if err := rows.Scan(&t, &m); err != nil {
			return nil, err
		}
		out[t] = m
	}
	return out, rows.Err()
}

// UsageBucket is what an account was charged in one period for one model
// in one project.
type UsageBucket struct {
	Start            time.Time    `json:"start"`
	Model            string       `json:"model"`
	Project          string       `json:"project"`
	Calls            int64        `json:"calls"`
	PromptTokens     int64        `json:"prompt_tokens"`
	CompletionTokens int64        `json:"completion_tokens"`
	Gross            money.Micros `json:"gross_micros"`
	Charged          money.Micros `json:"charged_micros"`
}

// UsageSeries sums an account's usage since t by period (a day or an hour,
// in UTC), model and project, oldest first. It returns at most 5,000 rows.
func (s *Store) UsageSeries(ctx context.Context, account string, since time.Time, period string) ([]UsageBucket, error) {
	if period != "day" && period != "hour" {
		return nil, fmt.Errorf("usage period %q: use day or hour", period)
	}
	return queryAll(ctx, s, func(row pgx.Row) (UsageBucket, error) {
		var b UsageBucket
		err := row.Scan(&b.Start, &b.Model, &b.Project, &b.Calls, &b.PromptTokens, &b.CompletionTokens, &b.Gross, &b.Charged)
		b.Start = b.Start.UTC()
		return b, err
	}, `SELECT date_trunc($3, created_at AT TIME ZONE 'UTC'), model, project_id, count(*), sum(prompt_tokens)::bigint,
			sum(completion_tokens)::bigint, sum(gross)::bigint, sum(charged)::bigint
		FROM usage_events WHERE account_id = $1 AND created_at >= $2
		GROUP BY 1, 2, 3 ORDER BY 1, 2, 3 LIMIT 5000`, account, since, period)
}
