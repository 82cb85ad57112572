package activities

import (
	"context"
	"errors"
	"time"

	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/temporal"

	"github.com/superinstance/mesh/internal/money"
	"github.com/superinstance/mesh/internal/store"
	"github.com/superinstance/mesh/internal/telemetry"
)

// Ledger bills usage. It runs on the cloud worker, wherever the inference ran.
type Ledger struct {
	Store *store.Store
	// Flushes starts a flush when a balance reaches its threshold; nil never does.
	Flushes *FlushStarter
	// Metrics counts logged events and charges; nil counts nothing.
	Metrics *telemetry.Metrics
}

// LogUsage logs the events in one transaction per account (consecutive
// events of one account form one batch, store.LogUsageBatch); an event
// logged before changes nothing. An account at its ceiling refuses further
// events with a non-retryable CreditCeiling error, except events under the
// run's hold, which are billed (they ran).
func (l *Ledger) LogUsage(ctx context.Context, events []store.Usage) ([]store.Charge, error) {
	out := make([]store.Charge, 0, len(events))
	for len(events) > 0 {
		n := 1
		for n < len(events) && events[n].Account == events[0].Account {
			n++
		}
		batch, account := events[:n], events[0].Account
		events = events[n:]
		cs, err := l.Store.LogUsageBatch(ctx, batch)
		flush := false
		for _, c := range cs {
			l.Metrics.Usage(int64(c.Charged), c.Duplicate)
			flush = flush || c.FlushDue
		}
		out = append(out, cs...)
		if flush && l.Flushes != nil {
			if _, err := l.Flushes.Start(ctx, account); err != nil && !errors.Is(err, store.ErrNothingToFlush) && !errors.Is(err, store.ErrNoStripeCustomer) &&
				!errors.Is(err, store.ErrNoUsageSubscription) {
				// The schedule's sweep flushes it later; the usage is logged.
				activity.GetLogger(ctx).Warn("starting a flush", "account", account, "error", err)
			}
		}
		var se *store.SuspendedError
		var qe *store.GuestQuotaError
		switch {
		case errors.As(err, &qe):
			return out, temporal.NewNonRetryableApplicationError(qe.Error(), ErrGuestQuota, err)
		case errors.As(err, &se):
			return out, temporal.NewNonRetryableApplicationError(se.Error(), ErrCreditCeiling, err)
		case errors.Is(err, store.ErrNotFound):
			return out, temporal.NewNonRetryableApplicationError("unknown account "+account+": create it with si account create", ErrUnknownAccount, err)
		case err != nil:
			return out, err
		}
	}
	return out, nil
}

// ReserveInput asks for a consensus's hold (see store.ReserveHold).
type ReserveInput struct {
	// Hold is the hold's id: the workflow id, so a retry reserves once.
	Hold         string
	Account      string
	GuestSession string
	// Bounds are the token bounds of the steps the run may take; they are
	// priced at the most expensive model and the account's multiplier.
	Bounds []store.TokenBound
	// Target raises the hold to at least this much (a top-up before a step).
	Target money.Micros
	// TTL is how long the hold lasts unless raised again or released.
	TTL time.Duration
}

// Reserve takes or raises a run's hold before inference. An account or a
// session that cannot cover it is refused with a non-retryable
// InsufficientHeadroom error (CreditCeiling when the account is suspended).
func (l *Ledger) Reserve(ctx context.Context, in ReserveInput) (store.Hold, error) {
	h, err := l.Store.ReserveHold(ctx, store.HoldRequest{ID: in.Hold, Account: in.Account, GuestSession: in.GuestSession,
		Bounds: in.Bounds, Target: in.Target, TTL: in.TTL})
	var he *store.HeadroomError
	var se *store.SuspendedError
	switch {
	case errors.As(err, &he):
		return h, temporal.NewNonRetryableApplicationError(he.Error(), ErrInsufficientHeadroom, err)
	case errors.As(err, &se):
		return h, temporal.NewNonRetryableApplicationError(se.Error(), ErrCreditCeiling, err)
	case errors.Is(err, store.ErrNotFound):
		return h, temporal.NewNonRetryableApplicationError("unknown account "+in.Account+" or guest session: create the account with si account create",
			ErrUnknownAccount, err)
	}
	return h, err
}

// Release frees what a run's hold did not settle; releasing twice is harmless.
func (l *Ledger) Release(ctx context.Context, hold string) error {
	_, err := l.Store.ReleaseHold(ctx, hold)
	return err
}
