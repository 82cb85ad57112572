package activities

import (
	"context"
	"errors"

	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/temporal"

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

// LogUsage logs each event in its own transaction; an event logged before
// changes nothing. An account at its ceiling refuses further events with a
// non-retryable CreditCeiling error.
func (l *Ledger) LogUsage(ctx context.Context, events []store.Usage) ([]store.Charge, error) {
	out := make([]store.Charge, 0, len(events))
	for _, u := range events {
		c, err := l.Store.LogUsage(ctx, u)
		var se *store.SuspendedError
		var qe *store.GuestQuotaError
		switch {
		case errors.As(err, &qe):
			return out, temporal.NewNonRetryableApplicationError(qe.Error(), ErrGuestQuota, err)
		case errors.As(err, &se):
			return out, temporal.NewNonRetryableApplicationError(se.Error(), ErrCreditCeiling, err)
		case errors.Is(err, store.ErrNotFound):
			return out, temporal.NewNonRetryableApplicationError("unknown account "+u.Account+": create it with si account create", ErrUnknownAccount, err)
		case err != nil:
			return out, err
		}
		l.Metrics.Usage(int64(c.Charged), c.Duplicate)
		out = append(out, c)
		if c.FlushDue && l.Flushes != nil {
			if _, err := l.Flushes.Start(ctx, u.Account); err != nil && !errors.Is(err, store.ErrNothingToFlush) && !errors.Is(err, store.ErrNoStripeCustomer) {
				// The schedule's sweep flushes it later; the usage is logged.
				activity.GetLogger(ctx).Warn("starting a flush", "account", u.Account, "error", err)
			}
		}
	}
	return out, nil
}
