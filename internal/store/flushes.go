package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/superinstance/mesh/internal/money"
)

// Flush errors.
var (
	// ErrNoStripeCustomer: the account has no Stripe customer to bill, so no
	// flush is reserved.
	ErrNoStripeCustomer = errors.New("the account has no Stripe customer: create one with si account create (a Stripe key or si dev's stripe-mock)")
	// ErrFlushInDoubt: the flush may have reached Stripe, so it cannot be
	// marked failed on a retry budget running out; only Stripe's definite
	// refusal (RefuseFlush) or acceptance (CompleteFlush) closes it.
	ErrFlushInDoubt = errors.New("the flush is in doubt: Stripe may hold it")
	// ErrNoUsageSubscription: si stripe setup has run and the account's
	// customer is not subscribed to the metered price. Stripe invoices a
	// meter event only within a subscription's period, so cents sent now
	// would count as flushed and never be invoiced; they stay unbilled and no
	// flush is reserved until it is.
	ErrNoUsageSubscription = errors.New("the account's Stripe customer has no subscription to the metered price, so no invoice would charge a flush: run si stripe setup, which subscribes existing customers")
)

// Flush states. A flush is open while pending or in doubt; its cents stay in
// the account's unbilled balance (the credit ceiling counts them) until it is
// sent, and are released for a later flush when it fails.
const (
	FlushPending = "pending"  // reserved; no answer from Stripe yet
	FlushInDoubt = "in_doubt" // a request may have reached Stripe and its answer was lost
	FlushSent    = "sent"     // Stripe holds it; subtracted from the unbilled balance
	FlushFailed  = "failed"   // Stripe refused it for good; the cents are unbilled again
)

// Flush is one transfer of unbilled balance to Stripe.
type Flush struct {
	ID               string
	Account          string
	AmountCents      int64
	State            string
	StripeIdentifier string
	Attempts         int
	Error            string
	CreatedAt        time.Time
	UpdatedAt        time.Time
	// MeterAt is the meter event's timestamp, the same on every retry.
	MeterAt time.Time
	// FirstAttemptAt is when a request first may have reached Stripe; zero
	// before the first. Stripe keeps the identifier unique for 24 hours from
	// (at least) then.
	FirstAttemptAt time.Time
	// OverbilledCents is what Stripe holds beyond the flush and refused to
	// cancel (Error says why): charged to the customer once too often.
	OverbilledCents int64
}

// Open reports whether the flush is pending or in doubt.
func (f Flush) Open() bool { return f.State == FlushPending || f.State == FlushInDoubt }

const flushColumns = `id, account_id, amount_cents, state, stripe_identifier, attempts, error, created_at, updated_at, meter_at, first_attempt_at, overbilled_cents`

func scanFlush(row pgx.Row) (Flush, error) {
	var f Flush
	var first *time.Time
	err := row.Scan(&f.ID, &f.Account, &f.AmountCents, &f.State, &f.StripeIdentifier, &f.Attempts, &f.Error, &f.CreatedAt, &f.UpdatedAt,
		&f.MeterAt, &first, &f.OverbilledCents)
	if errors.Is(err, pgx.ErrNoRows) {
		return f, ErrNotFound
	}
	if first != nil {
		f.FirstAttemptAt = *first
	}
	return f, err
}

// ReserveFlush reserves the whole cents of an account's unbilled balance as
// a new flush, named from the account's flush sequence in the same
// transaction: flush-<account>-<n>. No two flushes ever share an id, and
// nothing to flush (under a cent, no Stripe customer, no subscription to
// the metered price once si stripe setup has run) consumes none. When
// the account already has an open flush, that one is returned with created
// false: its cents may be at Stripe already, so no second one is reserved.
func (s *Store) ReserveFlush(ctx context.Context, account string) (f Flush, created bool, err error) {
	err = pgx.BeginFunc(ctx, s.Pool, func(tx pgx.Tx) error {
		var unbilled money.Micros
		var seq int64
		var customer string
		var subscribed bool
		var start *time.Time
		err := tx.QueryRow(ctx, `SELECT unbilled, flush_seq, coalesce(stripe_customer_id, ''), `+subscribedSQL+`, stripe_usage_subscription_start
			FROM accounts a WHERE id = $1 FOR UPDATE`, account).
			Scan(&unbilled, &seq, &customer, &subscribed, &start)
		if errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("account %s: %w", account, ErrNotFound)
		}
		if err != nil {
			return err
		}
		f, err = scanFlush(tx.QueryRow(ctx, `SELECT `+flushColumns+` FROM flushes WHERE account_id = $1 AND state IN ('pending', 'in_doubt')`, account))
		if err == nil {
			return nil
		}
		if !errors.Is(err, ErrNotFound) {
			return err
		}
		if customer == "" {
			return fmt.Errorf("account %s: %w", account, ErrNoStripeCustomer)
		}
		if !subscribed {
			return fmt.Errorf("account %s: %w", account, ErrNoUsageSubscription)
		}
		cents, _ := money.Cents(unbilled)
		if cents == 0 {
			return fmt.Errorf("account %s has %s unbilled: %w", account, unbilled, ErrNothingToFlush)
		}
		// Ids from before the sequence (flush-<account>-<count+1>, or any a
		// caller chose) are stepped over.
		for range 1000 {
			seq++
			id := fmt.Sprintf("flush-%s-%d", account, seq)
			// Never before the subscription started by Stripe's clock, which
			// may run ahead of ours: Stripe would invoice none of it.
			f, err = scanFlush(tx.QueryRow(ctx, `INSERT INTO flushes (id, account_id, amount_cents, state, stripe_identifier, meter_at)
				VALUES ($1, $2, $3, 'pending', $1, greatest(date_trunc('second', now()), date_trunc('second', $4::timestamptz + interval '999999 microseconds')))
				ON CONFLICT (id) DO NOTHING RETURNING `+flushColumns, id, account, cents, start))
			if errors.Is(err, ErrNotFound) {
				continue
			}
			if err != nil {
				return err
			}
			created = true
			_, err = tx.Exec(ctx, `UPDATE accounts SET flush_seq = $2 WHERE id = $1`, account, seq)
			return err
		}
		return fmt.Errorf("account %s: no free flush id after flush-%s-%d", account, account, seq)
	})
	return f, created, err
}

// StartFlush reserves the whole cents of an account's unbilled balance for
// flush id, a name the caller chose (flush workflows started before
// ReserveFlush existed do this). Starting the same id again returns the
// same flush; another open flush is ErrFlushInFlight, and an account
// without its usage subscription (once si stripe setup has run)
// ErrNoUsageSubscription.
func (s *Store) StartFlush(ctx context.Context, account, id string) (Flush, error) {
	var f Flush
	err := pgx.BeginFunc(ctx, s.Pool, func(tx pgx.Tx) error {
		var unbilled money.Micros
		var subscribed bool
		if err := tx.QueryRow(ctx, `SELECT unbilled, `+subscribedSQL+` FROM accounts a WHERE id = $1 FOR UPDATE`, account).Scan(&unbilled, &subscribed); err != nil {
			if errors.Is(err, pgx.ErrNoRows) {
				return ErrNotFound
			}
			return err
		}
		existing, err := scanFlush(tx.QueryRow(ctx, `SELECT `+flushColumns+` FROM flushes WHERE id = $1`, id))
		if err == nil {
			f = existing
			return nil
		}
		if !errors.Is(err, ErrNotFound) {
			return err
		}
		var open int
		if err := tx.QueryRow(ctx, `SELECT count(*) FROM flushes WHERE account_id = $1 AND state IN ('pending', 'in_doubt')`, account).Scan(&open); err != nil {
			return err
		}
		if open > 0 {
			return ErrFlushInFlight
		}
		if !subscribed {
			return fmt.Errorf("account %s: %w", account, ErrNoUsageSubscription)
		}
		cents, _ := money.Cents(unbilled)
		if cents == 0 {
			return ErrNothingToFlush
		}
		f, err = scanFlush(tx.QueryRow(ctx, `INSERT INTO flushes (id, account_id, amount_cents, state, stripe_identifier)
			VALUES ($1, $2, $3, 'pending', $1) RETURNING `+flushColumns, id, account, cents))
		return err
	})
	return f, err
}

// subscribedSQL is true for an account row a whose meter events an invoice
// charges: subscribed to the metered price, or no si stripe setup recorded
// (prices made by hand in Stripe, or none at all: a customer is enough).
const subscribedSQL = `(a.stripe_usage_subscription IS NOT NULL OR NOT EXISTS (SELECT 1 FROM stripe_setup))`

// FlushByID returns one flush.
func (s *Store) FlushByID(ctx context.Context, id string) (Flush, error) {
	return scanFlush(s.Pool.QueryRow(ctx, `SELECT `+flushColumns+` FROM flushes WHERE id = $1`, id))
}

// FlushSending records, before a request to Stripe, that one may reach it:
// the first such time starts the identifier's 24-hour window.
func (s *Store) FlushSending(ctx context.Context, id string) (Flush, error) {
	f, err := scanFlush(s.Pool.QueryRow(ctx, `UPDATE flushes SET first_attempt_at = coalesce(first_attempt_at, now())
		WHERE id = $1 AND state IN ('pending', 'in_doubt') RETURNING `+flushColumns, id))
	if errors.Is(err, ErrNotFound) {
		if f, gerr := s.FlushByID(ctx, id); gerr == nil {
			return f, fmt.Errorf("flush %s is %s, not open", id, f.State)
		}
	}
	return f, err
}

// FlushAttempt counts one attempt to send a flush to Stripe. inDoubt says
// the attempt's outcome is unknown (a timeout, a lost answer, a 5xx): the
// flush is then in doubt until Stripe accepts or refuses it.
func (s *Store) FlushAttempt(ctx context.Context, id, lastError string, inDoubt bool) error {
	_, err := s.Pool.Exec(ctx, `UPDATE flushes SET attempts = attempts + 1, error = $2, updated_at = now(),
		state = CASE WHEN $3 THEN 'in_doubt' ELSE state END
		WHERE id = $1 AND state IN ('pending', 'in_doubt')`, id, lastError, inDoubt)
	return err
}

// MarkInDoubt marks an open flush in doubt with the reason (its retry budget
// ran out without an answer) and returns it.
func (s *Store) MarkInDoubt(ctx context.Context, id, reason string) (Flush, error) {
	f, err := scanFlush(s.Pool.QueryRow(ctx, `UPDATE flushes SET state = 'in_doubt', error = $2, updated_at = now()
		WHERE id = $1 AND state IN ('pending', 'in_doubt') RETURNING `+flushColumns, id, reason))
	if errors.Is(err, ErrNotFound) {
		if f, gerr := s.FlushByID(ctx, id); gerr == nil {
			return f, nil // closed meanwhile: the caller reads its state
		}
	}
	return f, err
}

// CompleteFlush marks an open flush sent and subtracts exactly what it sent
// from the unbilled balance (never zeroing it: usage logged during the flush
// stays). An account suspended at the ceiling is reinstated when the balance
// is back under it. Completing a sent flush again changes nothing.
func (s *Store) CompleteFlush(ctx context.Context, id string) (Flush, error) {
	var f Flush
	err := pgx.BeginFunc(ctx, s.Pool, func(tx pgx.Tx) error {
		var err error
		f, err = scanFlush(tx.QueryRow(ctx, `SELECT `+flushColumns+` FROM flushes WHERE id = $1 FOR UPDATE`, id))
		if err != nil {
			return err
		}
		if f.State == FlushSent {
			return nil
		}
		if !f.Open() {
			return fmt.Errorf("flush %s is %s, not pending", id, f.State)
		}
		sent := money.Micros(f.AmountCents) * money.Cent
		if _, err := tx.Exec(ctx, `UPDATE accounts SET unbilled = unbilled - $2,
			status = CASE WHEN suspended_reason = 'credit_ceiling' AND unbilled - $2 < credit_ceiling THEN 'active' ELSE status END,
			suspended_reason = CASE WHEN suspended_reason = 'credit_ceiling' AND unbilled - $2 < credit_ceiling THEN '' ELSE suspended_reason END
			WHERE id = $1`, f.Account, sent); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `INSERT INTO journal (account_id, kind, ref, unbilled_delta) VALUES ($1, 'flush', $2, $3)`, f.Account, id, -sent); err != nil {
			return err
		}
		f, err = scanFlush(tx.QueryRow(ctx, `UPDATE flushes SET state = 'sent', updated_at = now(),
			error = CASE WHEN overbilled_cents > 0 THEN error ELSE '' END WHERE id = $1 RETURNING `+flushColumns, id))
		return err
	})
	return f, err
}

// FailFlush marks a pending flush failed when no request of it can have
// reached Stripe; the balance is untouched and a later flush may send it.
// Failing a failed flush again changes nothing. A flush in doubt is not
// failed (ErrFlushInDoubt): Stripe may hold it. Nor is a pending one with a
// request that may have reached Stripe (its attempt was killed before its
// answer was recorded): it is marked in doubt with the reason, and stays
// open for the sweep. Stripe's definite refusal is RefuseFlush, which the
// send itself records.
func (s *Store) FailFlush(ctx context.Context, id, reason string) (Flush, error) {
	f, err := s.closeFailed(ctx, id, reason, `state = 'pending' AND first_attempt_at IS NULL`)
	if err == nil || f.State != FlushPending {
		return f, err
	}
	f, err = scanFlush(s.Pool.QueryRow(ctx, `UPDATE flushes SET state = 'in_doubt', error = $2, updated_at = now()
		WHERE id = $1 AND state = 'pending' AND first_attempt_at IS NOT NULL RETURNING `+flushColumns,
		id, "a request may have reached Stripe and its answer is unknown: "+reason))
	if errors.Is(err, ErrNotFound) {
		return s.FailFlush(ctx, id, reason) // changed meanwhile
	}
	if err != nil {
		return f, err
	}
	return f, fmt.Errorf("flush %s: %w", id, ErrFlushInDoubt)
}

// RefuseFlush marks an open flush, in doubt or not, failed: Stripe answered
// this very request (same idempotency key, same identifier) with a definite
// refusal, so none of its earlier attempts was committed.
func (s *Store) RefuseFlush(ctx context.Context, id, reason string) (Flush, error) {
	return s.closeFailed(ctx, id, reason, `state IN ('pending', 'in_doubt')`)
}

func (s *Store) closeFailed(ctx context.Context, id, reason, open string) (Flush, error) {
	f, err := scanFlush(s.Pool.QueryRow(ctx, `UPDATE flushes SET state = 'failed', error = $2, updated_at = now()
		WHERE id = $1 AND `+open+` RETURNING `+flushColumns, id, reason))
	if errors.Is(err, ErrNotFound) {
		existing, gerr := s.FlushByID(ctx, id)
		if gerr != nil {
			return existing, gerr
		}
		switch existing.State {
		case FlushInDoubt:
			return existing, fmt.Errorf("flush %s: %w", id, ErrFlushInDoubt)
		case FlushFailed:
			return existing, nil // a retry of a call that committed
		}
		return existing, fmt.Errorf("flush %s is %s, not pending", id, existing.State)
	}
	return f, err
}

// NoteOverbilled records on a flush that Stripe holds cents more of it than
// the flush and refused to cancel them, with why; CompleteFlush keeps it.
func (s *Store) NoteOverbilled(ctx context.Context, id string, cents int64, reason string) error {
	if cents <= 0 {
		return fmt.Errorf("flush %s: an overbilling of %d cents is not one", id, cents)
	}
	tag, err := s.Pool.Exec(ctx, `UPDATE flushes SET overbilled_cents = $2, error = $3, updated_at = now() WHERE id = $1`, id, cents, reason)
	if err == nil && tag.RowsAffected() == 0 {
		return fmt.Errorf("flush %s: %w", id, ErrNotFound)
	}
	return err
}

// OpenFlushes lists every open flush (pending or in doubt), oldest first.
func (s *Store) OpenFlushes(ctx context.Context) ([]Flush, error) {
	return queryAll(ctx, s, scanFlush, `SELECT `+flushColumns+` FROM flushes WHERE state IN ('pending', 'in_doubt') ORDER BY created_at, id`)
}

// SentCents sums an account's sent flushes whose meter timestamp is in
// [from, to), leaving out flush except: what Stripe should hold for the
// account in that window besides that flush.
func (s *Store) SentCents(ctx context.Context, account, except string, from, to time.Time) (int64, error) {
	var n int64
	err := s.Pool.QueryRow(ctx, `SELECT coalesce(sum(amount_cents), 0) FROM flushes WHERE account_id = $1 AND id <> $2
		AND state = 'sent' AND meter_at >= $3 AND meter_at < $4`, account, except, from, to).Scan(&n)
	return n, err
}

// Books are an account's totals, recomputed from the events, the flushes and
// the journal. Where the cents of a flush live: until it is sent they stay
// in accounts.unbilled (Owed), so the credit ceiling counts them; InDoubt is
// the part of Owed that open flushes (pending or in doubt) hold, Unbilled
// the rest, free for the next flush.
type Books struct {
	Charged       money.Micros // sum of usage_events.charged
	Flushed       money.Micros // sum of sent flushes
	InDoubt       money.Micros // sum of open flushes: reserved, and maybe at Stripe
	Unbilled      money.Micros // owed and in no flush
	Owed          money.Micros // accounts.unbilled = InDoubt + Unbilled
	Credits       money.Micros // accounts.credits
	JournalUnbill money.Micros // sum of the journal's unbilled deltas
	JournalCredit money.Micros // sum of the journal's credit deltas
}

// Balanced reports whether charged = flushed + in doubt + unbilled, the open
// flushes hold no more than is owed, and the journal recomputes both balances.
func (b Books) Balanced() bool {
	return b.Charged == b.Flushed+b.InDoubt+b.Unbilled && b.Unbilled >= 0 && b.InDoubt >= 0 &&
		b.Owed == b.InDoubt+b.Unbilled && b.JournalUnbill == b.Owed && b.JournalCredit == b.Credits
}

// Books recomputes an account's totals.
func (s *Store) Books(ctx context.Context, account string) (Books, error) {
	var b Books
	err := s.Pool.QueryRow(ctx, `SELECT
		(SELECT coalesce(sum(charged), 0) FROM usage_events WHERE account_id = $1),
		(SELECT coalesce(sum(amount_cents), 0) * 10000 FROM flushes WHERE account_id = $1 AND state = 'sent'),
		(SELECT coalesce(sum(amount_cents), 0) * 10000 FROM flushes WHERE account_id = $1 AND state IN ('pending', 'in_doubt')),
		a.unbilled, a.credits,
		(SELECT coalesce(sum(unbilled_delta), 0) FROM journal WHERE account_id = $1),
		(SELECT coalesce(sum(credits_delta), 0) FROM journal WHERE account_id = $1)
		FROM accounts a WHERE a.id = $1`, account).
		Scan(&b.Charged, &b.Flushed, &b.InDoubt, &b.Owed, &b.Credits, &b.JournalUnbill, &b.JournalCredit)
	if errors.Is(err, pgx.ErrNoRows) {
		return b, ErrNotFound
	}
	b.Unbilled = b.Owed - b.InDoubt
	return b, err
}

// Flushes lists an account's flushes, newest first; an empty account lists all.
func (s *Store) Flushes(ctx context.Context, account string) ([]Flush, error) {
	return queryAll(ctx, s, scanFlush, `SELECT `+flushColumns+` FROM flushes WHERE $1 = '' OR account_id = $1 ORDER BY created_at DESC, id`, account)
}

// FlushableAccounts lists accounts with at least a cent unbilled, a Stripe
// customer, its usage subscription once si stripe setup has run, and no
// open flush.
func (s *Store) FlushableAccounts(ctx context.Context) ([]string, error) {
	return s.accountIDs(ctx, `SELECT a.id FROM accounts a WHERE a.unbilled >= 10000 AND a.stripe_customer_id IS NOT NULL AND `+subscribedSQL+`
		AND NOT EXISTS (SELECT 1 FROM flushes f WHERE f.account_id = a.id AND f.state IN ('pending', 'in_doubt')) ORDER BY a.id`)
}

// UnbillableAccounts lists accounts with at least a cent unbilled and a
// Stripe customer that no flush may bill: si stripe setup has run and the
// customer has no subscription to the metered price.
func (s *Store) UnbillableAccounts(ctx context.Context) ([]string, error) {
	return s.accountIDs(ctx, `SELECT a.id FROM accounts a WHERE a.unbilled >= 10000 AND a.stripe_customer_id IS NOT NULL AND NOT `+subscribedSQL+`
		ORDER BY a.id`)
}

func (s *Store) accountIDs(ctx context.Context, query string) ([]string, error) {
	rows, err := s.Pool.Query(ctx, query)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var ids []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, err
		}
		ids = append(ids, id)
	}
	return ids, rows.Err()
}

// FlushStats counts open flushes for /metrics.
type FlushStats struct {
	Pending, InDoubt           int64
	PendingCents, InDoubtCents int64
}

// FlushStats counts the open flushes of every account.
func (s *Store) FlushStats(ctx context.Context) (FlushStats, error) {
	var st FlushStats
	err := s.Pool.QueryRow(ctx, `SELECT
		count(*) FILTER (WHERE state = 'pending'), count(*) FILTER (WHERE state = 'in_doubt'),
		coalesce(sum(amount_cents) FILTER (WHERE state = 'pending'), 0), coalesce(sum(amount_cents) FILTER (WHERE state = 'in_doubt'), 0)
		FROM flushes WHERE state IN ('pending', 'in_doubt')`).Scan(&st.Pending, &st.InDoubt, &st.PendingCents, &st.InDoubtCents)
	return st, err
}
