package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// StripeSetup is what `si stripe setup` made at Stripe: the billing meter
// flushes report to, the product and metered price customers subscribe to,
// and the webhook endpoint with its signing secret.
type StripeSetup struct {
	MeterID           string `json:"meter_id"`
	MeterEvent        string `json:"meter_event"`
	ProductID         string `json:"product_id"`
	PriceID           string `json:"price_id"`
	WebhookEndpointID string `json:"webhook_endpoint_id"`
	WebhookURL        string `json:"webhook_url"`
	WebhookSecret     string `json:"webhook_secret"`
}

// StripeSetup returns the recorded setup; ErrNotFound before the first
// `si stripe setup`.
func (s *Store) StripeSetup(ctx context.Context) (StripeSetup, error) {
	var v StripeSetup
	err := s.Pool.QueryRow(ctx, `SELECT meter_id, meter_event, product_id, price_id, webhook_endpoint_id, webhook_url, webhook_secret
		FROM stripe_setup`).Scan(&v.MeterID, &v.MeterEvent, &v.ProductID, &v.PriceID, &v.WebhookEndpointID, &v.WebhookURL, &v.WebhookSecret)
	if errors.Is(err, pgx.ErrNoRows) {
		return v, ErrNotFound
	}
	return v, err
}

// SaveStripeSetup records the setup, replacing the one before.
func (s *Store) SaveStripeSetup(ctx context.Context, v StripeSetup) error {
	if v.MeterID == "" || v.PriceID == "" || v.WebhookEndpointID == "" {
		return errors.New("a Stripe setup needs a meter, a price and a webhook endpoint")
	}
	_, err := s.Pool.Exec(ctx, `INSERT INTO stripe_setup (meter_id, meter_event, product_id, price_id, webhook_endpoint_id, webhook_url, webhook_secret)
		VALUES ($1, $2, $3, $4, $5, $6, $7)
		ON CONFLICT (singleton) DO UPDATE SET meter_id = excluded.meter_id, meter_event = excluded.meter_event,
			product_id = excluded.product_id, price_id = excluded.price_id, webhook_endpoint_id = excluded.webhook_endpoint_id,
			webhook_url = excluded.webhook_url, webhook_secret = excluded.webhook_secret, updated_at = now()`,
		v.MeterID, v.MeterEvent, v.ProductID, v.PriceID, v.WebhookEndpointID, v.WebhookURL, v.WebhookSecret)
	return err
}

// UsageSubscription returns the account's subscription to the metered
// price, "" when it has none yet.
func (s *Store) UsageSubscription(ctx context.Context, account string) (string, error) {
	var sub string
	err := s.Pool.QueryRow(ctx, `SELECT coalesce(stripe_usage_subscription, '') FROM accounts WHERE id = $1`, account).Scan(&sub)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", ErrNotFound
	}
	return sub, err
}

// SetUsageSubscription records the account's subscription to the metered price.
func (s *Store) SetUsageSubscription(ctx context.Context, account, subscription string) error {
	tag, err := s.Pool.Exec(ctx, `UPDATE accounts SET stripe_usage_subscription = $2 WHERE id = $1`, account, subscription)
	if err == nil && tag.RowsAffected() == 0 {
		return ErrNotFound
	}
	return err
}

// SetUsageSubscriptionStart records when the account's subscription to
// the metered price started, by Stripe's clock: no flush's meter event is
// timestamped before it.
func (s *Store) SetUsageSubscriptionStart(ctx context.Context, account string, start time.Time) error {
	tag, err := s.Pool.Exec(ctx, `UPDATE accounts SET stripe_usage_subscription_start = $2 WHERE id = $1`, account, start)
	if err == nil && tag.RowsAffected() == 0 {
		return ErrNotFound
	}
	return err
}

// PlanSchedule returns the account's plan subscription schedule (the one a
// handover's new owner gets), "" when it has none yet.
func (s *Store) PlanSchedule(ctx context.Context, account string) (string, error) {
	var sch string
	err := s.Pool.QueryRow(ctx, `SELECT coalesce(stripe_plan_schedule, '') FROM accounts WHERE id = $1`, account).Scan(&sch)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", ErrNotFound
	}
	return sch, err
}

// SetPlanSchedule records the account's plan subscription schedule; one
// already recorded is kept (the first is the account's only one).
func (s *Store) SetPlanSchedule(ctx context.Context, account, schedule string) (string, error) {
	var kept string
	err := s.Pool.QueryRow(ctx, `UPDATE accounts SET stripe_plan_schedule = coalesce(stripe_plan_schedule, $2) WHERE id = $1
		RETURNING stripe_plan_schedule`, account, schedule).Scan(&kept)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", ErrNotFound
	}
	return kept, err
}

// Invoice event types the ledger acts on.
const (
	InvoicePaymentFailed = "invoice.payment_failed"
	InvoicePaid          = "invoice.paid"
	InvoiceVoided        = "invoice.voided"
)

// InvoiceEvent is one Stripe webhook event about an invoice.
type InvoiceEvent struct {
	ID       string    // evt_...
	Type     string    // one of the Invoice* constants
	Customer string    // cus_...
	Invoice  string    // in_...
	Created  time.Time // the event's creation time at Stripe
}

// InvoiceOutcome is what an event did.
type InvoiceOutcome struct {
	Account string `json:"account,omitempty"`
	// Outcome is applied, stale (older than what the invoice already
	// records, or after the invoice was paid or voided), duplicate (the
	// event id was seen before) or unknown_customer.
	Outcome string `json:"outcome"`
	// PaymentSuspended is the account's payment suspension after the event.
	PaymentSuspended bool `json:"payment_suspended"`
}

func invoiceState(typ string) (string, error) {
	switch typ {
	case InvoicePaymentFailed:
		return "failed", nil
	case InvoicePaid:
		return "paid", nil
	case InvoiceVoided:
		return "voided", nil
	}
	return "", fmt.Errorf("invoice event type %q is not one the ledger acts on", typ)
}

// ApplyInvoiceEvent records a webhook event once and applies it in Stripe's
// order: each invoice keeps the state of its latest event by created time,
// paid and voided are final, and the account is payment-suspended while any
// of its invoices is failed. A redelivered event id changes nothing. The
// payment suspension is its own flag: a paid invoice never lifts a
// credit-ceiling suspension, and lifting the ceiling never lifts it.
func (s *Store) ApplyInvoiceEvent(ctx context.Context, ev InvoiceEvent) (InvoiceOutcome, error) {
	state, err := invoiceState(ev.Type)
	if err != nil {
		return InvoiceOutcome{}, err
	}
	if ev.ID == "" || ev.Customer == "" || ev.Invoice == "" {
		return InvoiceOutcome{}, errors.New("an invoice event needs an event id, a customer and an invoice")
	}
	var out InvoiceOutcome
	err = pgx.BeginFunc(ctx, s.Pool, func(tx pgx.Tx) error {
		out = InvoiceOutcome{}
		// The account row lock orders this customer's events.
		err := tx.QueryRow(ctx, `SELECT id, payment_suspended FROM accounts WHERE stripe_customer_id = $1 ORDER BY id LIMIT 1 FOR UPDATE`,
			ev.Customer).Scan(&out.Account, &out.PaymentSuspended)
		known := err == nil
		if err != nil && !errors.Is(err, pgx.ErrNoRows) {
			return err
		}
		outcome := "unknown_customer"
		if known {
			outcome = "applied"
			var cur string
			var curAt time.Time
			err := tx.QueryRow(ctx, `SELECT state, event_created FROM stripe_invoices WHERE invoice = $1 FOR UPDATE`, ev.Invoice).Scan(&cur, &curAt)
			switch {
			case errors.Is(err, pgx.ErrNoRows):
			case err != nil:
				return err
			case cur == "paid" || cur == "voided" || (state == "failed" && ev.Created.Before(curAt)):
				outcome = "stale"
			}
		}
		first, err := logStripeEvent(ctx, tx, ev.ID, ev.Type, ev.Customer, ev.Invoice, ev.Created, outcome)
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
		if _, err := tx.Exec(ctx, `INSERT INTO stripe_invoices (invoice, customer, state, event_id, event_created) VALUES ($1, $2, $3, $4, $5)
			ON CONFLICT (invoice) DO UPDATE SET state = excluded.state, event_id = excluded.event_id,
				event_created = greatest(stripe_invoices.event_created, excluded.event_created), updated_at = now()`,
			ev.Invoice, ev.Customer, state, ev.ID, ev.Created); err != nil {
			return err
		}
		// Lifting a payment suspension leaves an account at its ceiling (held
		// calls billed meanwhile may have carried it there) suspended for that.
		return tx.QueryRow(ctx, `UPDATE accounts a SET payment_suspended = f.failed,
			status = CASE WHEN f.failed THEN 'suspended'
				WHEN a.suspended_reason = 'payment_failed' AND a.unbilled >= a.credit_ceiling THEN 'suspended'
				WHEN a.suspended_reason = 'payment_failed' THEN 'active' ELSE a.status END,
			suspended_reason = CASE WHEN f.failed AND a.suspended_reason = '' THEN 'payment_failed'
				WHEN NOT f.failed AND a.suspended_reason = 'payment_failed' AND a.unbilled >= a.credit_ceiling THEN 'credit_ceiling'
				WHEN NOT f.failed AND a.suspended_reason = 'payment_failed' THEN '' ELSE a.suspended_reason END
			FROM (SELECT EXISTS (SELECT 1 FROM stripe_invoices WHERE customer = $2 AND state = 'failed') AS failed) f
			WHERE a.id = $1 RETURNING a.payment_suspended`, out.Account, ev.Customer).Scan(&out.PaymentSuspended)
	})
	return out, err
}

// PaymentSuspended reports whether an account is suspended for an unpaid invoice.
func (s *Store) PaymentSuspended(ctx context.Context, account string) (bool, error) {
	var v bool
	err := s.Pool.QueryRow(ctx, `SELECT payment_suspended FROM accounts WHERE id = $1`, account).Scan(&v)
	if errors.Is(err, pgx.ErrNoRows) {
		return false, ErrNotFound
	}
	return v, err
}

// UnsubscribedCustomers lists the accounts that have a Stripe customer but
// no subscription to the metered price (signed up before `si stripe setup`),
// as account id and customer id.
func (s *Store) UnsubscribedCustomers(ctx context.Context) ([][2]string, error) {
	rows, err := s.Pool.Query(ctx, `SELECT id, stripe_customer_id FROM accounts
		WHERE stripe_customer_id IS NOT NULL AND stripe_usage_subscription IS NULL ORDER BY id`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out [][2]string
	for rows.Next() {
		var r [2]string
		if err := rows.Scan(&r[0], &r[1]); err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

// logStripeEvent records a Stripe event and what it did, once per event id
// (ref is the invoice or session it names); first is false for an id seen
// before, which then changes nothing.
func logStripeEvent(ctx context.Context, tx pgx.Tx, id, typ, customer, ref string, created time.Time, outcome string) (first bool, err error) {
	tag, err := tx.Exec(ctx, `INSERT INTO stripe_events (event_id, type, customer, invoice, created, outcome)
		VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (event_id) DO NOTHING`, id, typ, customer, ref, created, outcome)
	return err == nil && tag.RowsAffected() == 1, err
}
