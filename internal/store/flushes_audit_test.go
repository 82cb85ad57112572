package store_test

import (
	"context"
	"errors"
	"testing"

	"github.com/superinstance/mesh/internal/store"
	"github.com/superinstance/mesh/test/harness"
)

func stripeSetUp(t *testing.T, s *store.Store) {
	t.Helper()
	if err := s.SaveStripeSetup(context.Background(), store.StripeSetup{MeterID: "mtr_1", MeterEvent: "si_usage_cents",
		ProductID: "prod_1", PriceID: "price_1", WebhookEndpointID: "we_1"}); err != nil {
		t.Fatal(err)
	}
}

// TestNoFlushWithoutTheUsageSubscription: once si stripe setup has run, an
// account with a Stripe customer but no subscription to the metered price
// is not billable (no invoice would charge its meter events): no flush is
// reserved, no id is burnt, the sweep does not list it and it is listed as
// not billable; once subscribed it flushes under the first id.
func TestNoFlushWithoutTheUsageSubscription(t *testing.T) {
	s := harness.Store(t)
	ctx := context.Background()
	billable(t, s, "early", 2)
	// Before any setup a Stripe customer is enough (prices made by hand).
	if ids, err := s.FlushableAccounts(ctx); err != nil || len(ids) != 1 {
		t.Fatalf("flushable before setup: %v %v", ids, err)
	}
	stripeSetUp(t, s)
	if _, _, err := s.ReserveFlush(ctx, "early"); !errors.Is(err, store.ErrNoUsageSubscription) {
		t.Fatalf("a flush without the usage subscription: %v", err)
	}
	if ids, err := s.FlushableAccounts(ctx); err != nil || len(ids) != 0 {
		t.Fatalf("flushable: %v %v", ids, err)
	}
	nb, err := s.UnbillableAccounts(ctx)
	if err != nil || len(nb) != 1 || nb[0] != "early" {
		t.Fatalf("not billable: %v %v", nb, err)
	}
	if fs, _ := s.Flushes(ctx, "early"); len(fs) != 0 {
		t.Fatalf("flushes %+v", fs)
	}
	if err := s.SetUsageSubscription(ctx, "early", "sub_early"); err != nil {
		t.Fatal(err)
	}
	f, created, err := s.ReserveFlush(ctx, "early")
	if err != nil || !created || f.ID != "flush-early-1" {
		t.Fatalf("after subscribing: %+v %v %v", f, created, err)
	}
	if nb, err := s.UnbillableAccounts(ctx); err != nil || len(nb) != 0 {
		t.Fatalf("not billable after subscribing: %v %v", nb, err)
	}
}

// TestAFlushWhoseSendWasKilledIsNotFailed: the pre-reservation flush
// workflow fails a flush when SendFlush gives up; a SendFlush killed by its
// own timeout recorded only that a request may have reached Stripe. Failing
// it would let its cents be flushed again under a new id (billed twice), so
// FailFlush keeps it open, in doubt, for the sweep.
func TestAFlushWhoseSendWasKilledIsNotFailed(t *testing.T) {
	s := harness.Store(t)
	ctx := context.Background()
	billable(t, s, "killed", 2)
	f, err := s.StartFlush(ctx, "killed", "flush-killed-v0")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.FlushSending(ctx, f.ID); err != nil {
		t.Fatal(err)
	}
	// No FlushAttempt: the activity was killed mid-request.
	got, err := s.FailFlush(ctx, f.ID, "activity StartToClose timeout")
	if !errors.Is(err, store.ErrFlushInDoubt) || got.State != store.FlushInDoubt {
		t.Fatalf("FailFlush after a request that may have reached Stripe: %+v %v", got, err)
	}
	again, created, err := s.ReserveFlush(ctx, "killed")
	if err != nil || created || again.ID != f.ID {
		t.Fatalf("a second flush of the same cents: %+v %v %v", again, created, err)
	}
	// A flush no request of which can have reached Stripe still fails.
	billable(t, s, "never", 2)
	n, err := s.StartFlush(ctx, "never", "flush-never-v0")
	if err != nil {
		t.Fatal(err)
	}
	if got, err := s.FailFlush(ctx, n.ID, "no customer at Stripe"); err != nil || got.State != store.FlushFailed {
		t.Fatalf("failing a flush never sent: %+v %v", got, err)
	}
}

// TestAnOverbilledFlushIsSentAndVisible: a copy Stripe refuses to cancel is
// recorded on the flush; completing it keeps the record.
func TestAnOverbilledFlushIsSentAndVisible(t *testing.T) {
	s := harness.Store(t)
	ctx := context.Background()
	billable(t, s, "over", 2)
	f, _, err := s.ReserveFlush(ctx, "over")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.NoteOverbilled(ctx, f.ID, f.AmountCents, "stripe refused to cancel a copy"); err != nil {
		t.Fatal(err)
	}
	got, err := s.CompleteFlush(ctx, f.ID)
	if err != nil || got.State != store.FlushSent || got.OverbilledCents != f.AmountCents || got.Error != "stripe refused to cancel a copy" {
		t.Fatalf("completed: %+v %v", got, err)
	}
	if b, _ := s.Books(ctx, "over"); !b.Balanced() {
		t.Fatalf("books %+v", b)
	}
	if err := s.NoteOverbilled(ctx, f.ID, -1, "x"); err == nil {
		t.Fatal("a negative overbilling was recorded")
	}
}

// TestAnOldFlushWorkflowReservesNothingUnbillable: the pre-reservation flush
// workflow's StartFlush is held to the same rule as ReserveFlush.
func TestAnOldFlushWorkflowReservesNothingUnbillable(t *testing.T) {
	s := harness.Store(t)
	ctx := context.Background()
	billable(t, s, "early-v0", 2)
	stripeSetUp(t, s)
	if f, err := s.StartFlush(ctx, "early-v0", "flush-early-v0-x"); !errors.Is(err, store.ErrNoUsageSubscription) {
		t.Fatalf("an old workflow's flush without the usage subscription: %+v %v", f, err)
	}
}
