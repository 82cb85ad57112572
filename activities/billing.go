package activities

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/temporal"

	"github.com/superinstance/mesh/internal/billing"
	"github.com/superinstance/mesh/internal/store"
	"github.com/superinstance/mesh/internal/telemetry"
)

// Error types of billing activities.
const (
	ErrNothingToFlush   = "NothingToFlush"
	ErrFlushInFlight    = "FlushInFlight"
	ErrNoStripeCustomer = "NoStripeCustomer"
	ErrStripeRejected   = "StripeRejected"
	ErrUnknownFlush     = "UnknownFlush"
	ErrFlushInDoubt     = "FlushInDoubt"
	// ErrNotBillable: the account's customer has no subscription to the
	// metered price (store.ErrNoUsageSubscription).
	ErrNotBillable = "NotBillable"
)

// Billing moves unbilled balances to Stripe.
type Billing struct {
	Store  *store.Store
	Stripe *billing.Stripe
	// Metrics counts flush attempts and outcomes; nil counts nothing.
	Metrics *telemetry.Metrics
}

// FlushStart asks to reserve an account's whole cents under FlushID.
type FlushStart struct {
	Account string
	FlushID string
}

// StartedFlush is a reserved flush and who Stripe bills.
type StartedFlush struct {
	Flush    store.Flush
	Customer string
}

// StartFlush reserves the account's whole unbilled cents for the flush.
func (b *Billing) StartFlush(ctx context.Context, in FlushStart) (StartedFlush, error) {
	a, err := b.Store.AccountByID(ctx, in.Account)
	if err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return StartedFlush{}, temporal.NewNonRetryableApplicationError("unknown account "+in.Account, ErrUnknownAccount, err)
		}
		return StartedFlush{}, err
	}
	if a.StripeCustomerID == "" {
		return StartedFlush{}, temporal.NewNonRetryableApplicationError("account "+in.Account+" has no Stripe customer", ErrNoStripeCustomer, nil)
	}
	f, err := b.Store.StartFlush(ctx, in.Account, in.FlushID)
	switch {
	case errors.Is(err, store.ErrNothingToFlush):
		return StartedFlush{}, temporal.NewNonRetryableApplicationError(err.Error(), ErrNothingToFlush, err)
	case errors.Is(err, store.ErrFlushInFlight):
		return StartedFlush{}, temporal.NewNonRetryableApplicationError(err.Error(), ErrFlushInFlight, err)
	case errors.Is(err, store.ErrNoUsageSubscription):
		return StartedFlush{}, temporal.NewNonRetryableApplicationError(err.Error(), ErrNotBillable, err)
	case err != nil:
		return StartedFlush{}, err
	}
	return StartedFlush{Flush: f, Customer: a.StripeCustomerID}, nil
}

// OpenFlush loads a reserved flush (store.ReserveFlush) and who Stripe bills.
func (b *Billing) OpenFlush(ctx context.Context, in FlushStart) (StartedFlush, error) {
	f, err := b.Store.FlushByID(ctx, in.FlushID)
	if errors.Is(err, store.ErrNotFound) || (err == nil && f.Account != in.Account) {
		return StartedFlush{}, temporal.NewNonRetryableApplicationError("no flush "+in.FlushID+" reserved for account "+in.Account, ErrUnknownFlush, err)
	}
	if err != nil {
		return StartedFlush{}, err
	}
	a, err := b.Store.AccountByID(ctx, f.Account)
	if err != nil {
		return StartedFlush{}, err
	}
	if a.StripeCustomerID == "" {
		return StartedFlush{}, temporal.NewNonRetryableApplicationError("account "+f.Account+" has no Stripe customer", ErrNoStripeCustomer, nil)
	}
	return StartedFlush{Flush: f, Customer: a.StripeCustomerID}, nil
}

// SendFlush reports the flush to Stripe as one meter event. Every attempt
// is the same request (its idempotency key and identifier come from the
// flush id) and is counted on the flush with its error. Stripe saying it
// already holds the identifier means an earlier attempt was committed: that
// is success. An attempt whose outcome is unknown (network error, timeout,
// 5xx, 409) leaves the flush in doubt; only a definite refusal (another 4xx)
// is the non-retryable StripeRejected.
func (b *Billing) SendFlush(ctx context.Context, f StartedFlush) error {
	cur, err := b.Store.FlushSending(ctx, f.Flush.ID)
	if err != nil {
		if cur.State == store.FlushSent {
			return nil // sent by another run of this flush
		}
		if cur.ID != "" {
			return temporal.NewNonRetryableApplicationError(err.Error(), ErrStripeRejected, err)
		}
		return err
	}
	at := cur.MeterAt
	if at.IsZero() {
		at = time.Now()
	}
	err = b.Stripe.SendMeterEvent(ctx, f.Flush.ID, f.Customer, f.Flush.AmountCents, at)
	msg, inDoubt := "", false
	switch {
	case err == nil:
		b.Metrics.FlushAttempt("ok")
	case errors.Is(err, billing.ErrDuplicateEvent):
		// Committed by an earlier attempt whose answer was lost.
		b.Metrics.FlushAttempt("duplicate")
		msg, err = err.Error(), nil
	case errors.Is(err, billing.ErrRejected):
		b.Metrics.FlushAttempt("rejected")
		msg = err.Error()
	case errors.Is(err, billing.ErrNotProcessed):
		b.Metrics.FlushAttempt("retry")
		msg = err.Error()
	default:
		b.Metrics.FlushAttempt("in_doubt")
		msg, inDoubt = err.Error(), true
	}
	if rerr := b.Store.FlushAttempt(ctx, f.Flush.ID, msg, inDoubt); rerr != nil {
		activity.GetLogger(ctx).Warn("counting a flush attempt", "error", rerr)
	}
	if errors.Is(err, billing.ErrRejected) {
		// Stripe answered this request (same key, same identifier) with a
		// definite refusal: no attempt of it was committed. The flush is
		// closed here, so that no caller can mistake the refusal for an
		// attempt whose outcome is unknown, or the other way round.
		if _, rerr := b.Store.RefuseFlush(ctx, f.Flush.ID, msg); rerr != nil {
			return rerr // retried: Stripe answers the same key the same way
		}
		return temporal.NewNonRetryableApplicationError(err.Error(), ErrStripeRejected, err)
	}
	return err
}

// CompleteFlush subtracts what the flush sent from the unbilled balance.
func (b *Billing) CompleteFlush(ctx context.Context, flushID string) (store.Flush, error) {
	f, err := b.Store.CompleteFlush(ctx, flushID)
	if err == nil {
		b.Metrics.Flush("sent")
	}
	return f, err
}

// FailFlush marks a pending flush failed with the reason. A flush in doubt,
// or one a request of which may have reached Stripe without its answer
// being recorded (an attempt killed by its timeout), is not failed (the
// non-retryable FlushInDoubt): the workflows that call this (recorded
// before flushes could be in doubt) then end, and the sweep starts the
// flush again under the same identifier. A flush Stripe refused was closed
// failed by SendFlush already, and is returned as it is.
func (b *Billing) FailFlush(ctx context.Context, flushID, reason string) (store.Flush, error) {
	f, err := b.Store.FailFlush(ctx, flushID, reason)
	if errors.Is(err, store.ErrFlushInDoubt) {
		return f, temporal.NewNonRetryableApplicationError(err.Error(), ErrFlushInDoubt, err)
	}
	if err == nil {
		b.Metrics.Flush("failed")
	}
	return f, err
}

// RefuseFlush marks an open flush failed on Stripe's definite refusal of
// its own request.
func (b *Billing) RefuseFlush(ctx context.Context, flushID, reason string) (store.Flush, error) {
	f, err := b.Store.RefuseFlush(ctx, flushID, reason)
	if err == nil {
		b.Metrics.Flush("failed")
	}
	return f, err
}

// MarkInDoubt marks the flush in doubt with why (its quick retries ran out
// without an answer) and returns it.
func (b *Billing) MarkInDoubt(ctx context.Context, flushID, reason string) (store.Flush, error) {
	f, err := b.Store.MarkInDoubt(ctx, flushID, reason)
	if err == nil && f.State == store.FlushInDoubt {
		b.Metrics.Flush("in_doubt")
	}
	return f, err
}

// Reconcile outcomes.
const (
	ReconcileCommitted = "committed" // Stripe holds the flush (once, after any duplicate was cancelled)
	ReconcileAbsent    = "absent"    // Stripe holds none of it: it may be sent again
	ReconcileMismatch  = "mismatch"  // Stripe's figure is none of those: send nothing, look again later
	// ReconcileOverbilled: a mismatch that stays one. Stripe holds the flush
	// more than once and refused to cancel the extra copies (older than its
	// 24-hour adjustment window). The flush is committed (complete it, so
	// the account's later flushes go on); Overbilled is recorded on it for
	// an operator to credit the customer back.
	ReconcileOverbilled = "overbilled"
)

// Reconciled is what Stripe's meter event summaries say about a flush.
type Reconciled struct {
	Outcome string
	// Held is Stripe's total for the customer in the flush's minute, Others
	// what our other sent flushes account for there (cents).
	Held, Others int64
	// Cancelled counts duplicate copies of the flush cancelled by adjustments.
	Cancelled int
	// Overbilled is what Stripe holds beyond the flush and refused to
	// cancel (cents), with Stripe's answer in Refused.
	Overbilled int64  `json:",omitempty"`
	Refused    string `json:",omitempty"`
}

// ReconcileFlush compares what Stripe holds for the flush's customer in the
// minute of its meter timestamp with what our sent flushes account for. A
// flush held more than once has its extra copies cancelled by meter event
// adjustments (cancel by identifier); copies Stripe refuses to cancel make
// it ReconcileOverbilled, recorded on the flush. It never sends the flush
// itself.
func (b *Billing) ReconcileFlush(ctx context.Context, f StartedFlush) (Reconciled, error) {
	cur, err := b.Store.FlushByID(ctx, f.Flush.ID)
	if err != nil {
		return Reconciled{}, err
	}
	from, to := billing.MeterWindow(cur.MeterAt)
	held, err := b.Stripe.MeterTotal(ctx, f.Customer, from, to)
	if err != nil {
		return Reconciled{}, err
	}
	others, err := b.Store.SentCents(ctx, cur.Account, cur.ID, from, to)
	if err != nil {
		return Reconciled{}, err
	}
	r := Reconciled{Held: held, Others: others}
	extra := held - others - cur.AmountCents
	switch {
	case extra == 0:
		r.Outcome = ReconcileCommitted
	case held == others:
		r.Outcome = ReconcileAbsent
	case extra > 0 && extra%cur.AmountCents == 0:
		// The key names the total seen, so a retry after a lost answer
		// repeats the same cancellation instead of cancelling another copy.
		for i := range extra / cur.AmountCents {
			key := fmt.Sprintf("%s-%d-%d", billing.MeterEventKey(cur.ID), held, i)
			err := b.Stripe.CancelMeterEvent(ctx, billing.MeterEventKey(cur.ID), key)
			if errors.Is(err, billing.ErrCancelRefused) {
				// Asking again gets the same answer: record it, visibly.
				r.Outcome, r.Refused = ReconcileOverbilled, err.Error()
				r.Overbilled = extra - int64(r.Cancelled)*cur.AmountCents
				b.Metrics.FlushAttempt("cancel_refused")
				note := fmt.Sprintf("overbilled: Stripe holds %d cents of this flush beyond it and refused to cancel them (%s); credit the customer back",
					r.Overbilled, err)
				if nerr := b.Store.NoteOverbilled(ctx, cur.ID, r.Overbilled, note); nerr != nil {
					return r, nerr
				}
				activity.GetLogger(ctx).Error("flush overbilled", "flush", cur.ID, "cents", r.Overbilled, "error", err)
				return r, nil
			}
			if err != nil {
				return r, err
			}
			r.Cancelled++
		}
		b.Metrics.FlushAttempt("cancelled_duplicate")
		r.Outcome = ReconcileCommitted
	default:
		r.Outcome = ReconcileMismatch
	}
	return r, nil
}
