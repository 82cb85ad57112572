package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// HandoverAwaitingPayment: the project is the new owner's, and the handover
// waits for Stripe to say the new owner saved a payment method before their
// plan subscription starts. Until then the host pays what they paid before.
const HandoverAwaitingPayment = "awaiting_payment"

// CheckoutSessionCompleted is the Stripe event of a Checkout Session whose
// customer finished it; in setup mode, a payment method was saved.
const CheckoutSessionCompleted = "checkout.session.completed"

// PaymentSession is a Stripe-hosted page made for a handover's new owner.
type PaymentSession struct {
	ID        string    `json:"id"`
	Customer  string    `json:"customer"`
	URL       string    `json:"url"`
	ExpiresAt time.Time `json:"expires_at"`
}

// AwaitPayment moves an accepted handover to awaiting_payment, unless the
// new owner's account already has a payment method saved through one of
// our pages; it reports whether one is saved (and the handover need not
// wait).
func (s *Store) AwaitPayment(ctx context.Context, id string) (saved bool, err error) {
	err = pgx.BeginFunc(ctx, s.Pool, func(tx pgx.Tx) error {
		var state string
		var at *time.Time
		err := tx.QueryRow(ctx, `SELECT h.state, a.payment_method_at FROM handovers h JOIN accounts a ON a.id = h.new_owner_id
			WHERE h.id = $1 FOR UPDATE OF h`, id).Scan(&state, &at)
		if errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("handover %s has no new owner: %w", id, ErrNotFound)
		}
		if err != nil {
			return err
		}
		switch {
		case state == HandoverAwaitingPayment:
			var paid *time.Time
			if err := tx.QueryRow(ctx, `SELECT payment_saved_at FROM handovers WHERE id = $1`, id).Scan(&paid); err != nil {
				return err
			}
			saved = paid != nil || at != nil
			return nil
		case state != HandoverAccepted:
			return &HandoverError{Reason: "handover " + id + " is " + state + ", not accepted"}
		case at != nil:
			saved = true
			_, err := tx.Exec(ctx, `UPDATE handovers SET payment_saved_at = $2 WHERE id = $1 AND payment_saved_at IS NULL`, id, *at)
			return err
		}
		_, err = tx.Exec(ctx, `UPDATE handovers SET state = 'awaiting_payment' WHERE id = $1`, id)
		return err
	})
	return saved, err
}

// PaymentSaved reports whether the handover's new owner has saved a
// payment method (for this handover, or for their account before it).
func (s *Store) PaymentSaved(ctx context.Context, id string) (bool, error) {
	var saved bool
	err := s.Pool.QueryRow(ctx, `SELECT h.payment_saved_at IS NOT NULL OR a.payment_method_at IS NOT NULL
		FROM handovers h JOIN accounts a ON a.id = h.new_owner_id WHERE h.id = $1`, id).Scan(&saved)
	if errors.Is(err, pgx.ErrNoRows) {
		return false, ErrNotFound
	}
	return saved, err
}

// AddPaymentSession records a Checkout Session made for the handover.
func (s *Store) AddPaymentSession(ctx context.Context, handover string, ps PaymentSession) error {
	if ps.ID == "" || ps.Customer == "" || ps.URL == "" {
		return errors.New("a payment session needs an id, a customer and a URL")
	}
	_, err := s.Pool.Exec(ctx, `INSERT INTO handover_payment_sessions (session_id, handover_id, customer, url, expires_at)
		VALUES ($1, $2, $3, $4, $5) ON CONFLICT (session_id) DO NOTHING`, ps.ID, handover, ps.Customer, ps.URL, ps.ExpiresAt)
	return err
}

// PaymentSessionList returns the Checkout Sessions made for the handover,
// newest first (at most 20: one a reminder).
func (s *Store) PaymentSessionList(ctx context.Context, handover string) ([]PaymentSession, error) {
	rows, err := s.Pool.Query(ctx, `SELECT session_id, customer, url, expires_at FROM handover_payment_sessions
		WHERE handover_id = $1 ORDER BY created_at DESC, session_id DESC LIMIT 20`, handover)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (PaymentSession, error) {
		var ps PaymentSession
		return ps, r.Scan(&ps.ID, &ps.Customer, &ps.URL, &ps.ExpiresAt)
	})
}

// PaymentSessions counts the handover's Checkout Sessions, and returns the
// newest that is open until after `until` (ok false when none is).
func (s *Store) PaymentSessions(ctx context.Context, handover string, until time.Time) (n int, open PaymentSession, ok bool, err error) {
	if err = s.Pool.QueryRow(ctx, `SELECT count(*) FROM handover_payment_sessions WHERE handover_id = $1`, handover).Scan(&n); err != nil {
		return 0, open, false, err
	}
	err = s.Pool.QueryRow(ctx, `SELECT session_id, customer, url, expires_at FROM handover_payment_sessions
		WHERE handover_id = $1 AND expires_at > $2 ORDER BY created_at DESC, session_id DESC LIMIT 1`, handover, until).
		Scan(&open.ID, &open.Customer, &open.URL, &open.ExpiresAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return n, open, false, nil
	}
	return n, open, err == nil, err
}

// PaymentEvent is a Stripe event saying a customer finished a Checkout
// Session; only a setup-mode session that is complete counts.
type PaymentEvent struct {
	ID       string
	Session  string
	Customer string
	Mode     string
	Status   string
	Created  time.Time
}

// PaymentOutcome says what a payment event did: "applied" (Handovers lists
// those that stopped waiting), "no_match" (not a session of ours for that
// customer, or not a saved payment method), "unknown_customer" or
// "duplicate" (the event id was seen before: nothing is done twice).
type PaymentOutcome struct {
	Outcome   string
	Account   string
	Handovers []string
}

// ApplyPaymentEvent records a completed Checkout Session, once per event
// id. The session must be one made for a handover and for the event's
// customer, and that customer must be the handover's new owner's: then the
// account has a payment method, and every handover of theirs that waits
// for one stops waiting.
func (s *Store) ApplyPaymentEvent(ctx context.Context, ev PaymentEvent) (PaymentOutcome, error) {
	if ev.ID == "" || ev.Session == "" || ev.Customer == "" {
		return PaymentOutcome{}, errors.New("a payment event needs an event id, a session and a customer")
	}
	var out PaymentOutcome
	err := pgx.BeginFunc(ctx, s.Pool, func(tx pgx.Tx) error {
		out = PaymentOutcome{}
		err := tx.QueryRow(ctx, `SELECT id FROM accounts WHERE stripe_customer_id = $1 ORDER BY id LIMIT 1 FOR UPDATE`, ev.Customer).Scan(&out.Account)
		known := err == nil
		if err != nil && !errors.Is(err, pgx.ErrNoRows) {
			return err
		}
		outcome := "unknown_customer"
		var handover string
		if known {
			outcome = "no_match"
			err := tx.QueryRow(ctx, `SELECT p.handover_id FROM handover_payment_sessions p JOIN handovers h ON h.id = p.handover_id
				WHERE p.session_id = $1 AND p.customer = $2 AND h.new_owner_id = $3`, ev.Session, ev.Customer, out.Account).Scan(&handover)
			switch {
			case errors.Is(err, pgx.ErrNoRows):
			case err != nil:
				return err
			case ev.Mode == "setup" && ev.Status == "complete":
				outcome = "applied"
			}
		}
		first, err := logStripeEvent(ctx, tx, ev.ID, CheckoutSessionCompleted, ev.Customer, ev.Session, ev.Created, outcome)
		if err != nil {
			return err
		}
		if !first {
			out.Outcome = "duplicate"
			return nil
		}
		out.Outcome = outcome
		if outcome != "applied" {
			return nil
		}
		if _, err := tx.Exec(ctx, `UPDATE accounts SET payment_method_at = coalesce(payment_method_at, $2) WHERE id = $1`, out.Account, ev.Created); err != nil {
			return err
		}
		rows, err := tx.Query(ctx, `UPDATE handovers SET payment_saved_at = coalesce(payment_saved_at, $2)
			WHERE new_owner_id = $1 AND state = 'awaiting_payment' RETURNING id`, out.Account, ev.Created)
		if err != nil {
			return err
		}
		out.Handovers, err = pgx.CollectRows(rows, pgx.RowTo[string])
		return err
	})
	return out, err
}
