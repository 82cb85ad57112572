package activities

import (
	"context"
	"errors"
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
	case err != nil:
		return StartedFlush{}, err
	}
	return StartedFlush{Flush: f, Customer: a.StripeCustomerID}, nil
}

// SendFlush reports the flush to Stripe as one meter event. Every attempt
// is the same request (its idempotency key and identifier come from the
// flush id) and is counted on the flush with its error.
func (b *Billing) SendFlush(ctx context.Context, f StartedFlush) error {
	at := f.Flush.CreatedAt
	if at.IsZero() {
		at = time.Now()
	}
	err := b.Stripe.SendMeterEvent(ctx, f.Flush.ID, f.Customer, f.Flush.AmountCents, at)
	msg := ""
	if err != nil {
		msg = err.Error()
	}
	if rerr := b.Store.FlushAttempt(ctx, f.Flush.ID, msg); rerr != nil {
		activity.GetLogger(ctx).Warn("counting a flush attempt", "error", rerr)
	}
	switch {
	case errors.Is(err, billing.ErrRejected):
		b.Metrics.FlushAttempt("rejected")
		return temporal.NewNonRetryableApplicationError(err.Error(), ErrStripeRejected, err)
	case err != nil:
		b.Metrics.FlushAttempt("retry")
	default:
		b.Metrics.FlushAttempt("ok")
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

// FailFlush marks the flush failed with the reason.
func (b *Billing) FailFlush(ctx context.Context, flushID, reason string) (store.Flush, error) {
	f, err := b.Store.FailFlush(ctx, flushID, reason)
	if err == nil {
		b.Metrics.Flush("failed")
	}
	return f, err
}
