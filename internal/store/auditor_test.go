package store_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/superinstance/mesh/internal/money"
	"github.com/superinstance/mesh/internal/store"
	"github.com/superinstance/mesh/test/harness"
)

// TestPaidInvoiceKeepsTheCeilingSuspension: while an account is suspended
// for a failed payment, a run's held calls (billed: they ran) carry it past
// its credit ceiling, and the suspension keeps its payment reason. Paying
// the invoice then lifts the payment suspension only: the account is at its
// ceiling, so it must stay suspended (credit_ceiling), not become active
// with more owed than its ceiling allows.
func TestPaidInvoiceKeepsTheCeilingSuspension(t *testing.T) {
	s := harness.Store(t)
	ctx := context.Background()
	billable(t, s, "payer", 0)
	if _, err := s.ReserveHold(ctx, store.HoldRequest{ID: "run-payer", Account: "payer", Target: money.Dollar, TTL: time.Hour}); err != nil {
		t.Fatal(err)
	}
	t0 := time.Now().Add(-time.Hour).Truncate(time.Second)
	if out, err := s.ApplyInvoiceEvent(ctx, store.InvoiceEvent{ID: "evt_f1", Type: store.InvoicePaymentFailed, Customer: "cus_payer",
		Invoice: "in_1", Created: t0}); err != nil || !out.PaymentSuspended {
		t.Fatalf("failed payment: %+v %v", out, err)
	}
	if err := s.SetCeiling(ctx, "payer", 1); err != nil {
		t.Fatal(err)
	}
	if _, err := s.LogUsage(ctx, store.Usage{EventID: "run-payer/r1", Account: "payer", Project: "p", Model: "m", PromptTokens: 1000,
		Hold: "run-payer"}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.ApplyInvoiceEvent(ctx, store.InvoiceEvent{ID: "evt_p1", Type: store.InvoicePaid, Customer: "cus_payer",
		Invoice: "in_1", Created: t0.Add(time.Minute)}); err != nil {
		t.Fatal(err)
	}
	a, err := s.AccountByID(ctx, "payer")
	if err != nil {
		t.Fatal(err)
	}
	if a.Unbilled >= a.CreditCeiling && (a.Status != "suspended" || a.SuspendedReason != "credit_ceiling") {
		t.Fatalf("paid invoice left account %+v active at its ceiling", a)
	}
	// A call without a hold is refused, as for any account at its ceiling.
	if _, err := s.LogUsage(ctx, store.Usage{EventID: "unheld-payer", Account: "payer", Project: "p", Model: "m", PromptTokens: 1000}); !errors.Is(err, store.ErrSuspended) {
		t.Fatalf("usage past the ceiling after the payment: %v", err)
	}
	// Raising the ceiling above the balance reinstates it.
	if err := s.SetCeiling(ctx, "payer", 100*money.Dollar); err != nil {
		t.Fatal(err)
	}
	if a, _ := s.AccountByID(ctx, "payer"); a.Status != "active" {
		t.Fatalf("account %+v after raising the ceiling", a)
	}
}

// TestExpiredHoldIsNotRevivedWithoutHeadroom: a hold that expired freed its
// headroom, and another run took it. The first run's retried reserve (same
// target, so no raise) must not bring the expired hold back to life without
// checking the headroom again: both holds would then be open together past
// the ceiling.
func TestExpiredHoldIsNotRevivedWithoutHeadroom(t *testing.T) {
	s := harness.Store(t)
	ctx := context.Background()
	harness.EnsureAccount(t, s, "reviver")
	if err := s.SetCeiling(ctx, "reviver", money.Dollar); err != nil {
		t.Fatal(err)
	}
	if _, err := s.ReserveHold(ctx, store.HoldRequest{ID: "rv-1", Account: "reviver", Target: 80 * money.Cent, TTL: 50 * time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	if _, err := s.ReserveHold(ctx, store.HoldRequest{ID: "rv-2", Account: "reviver", Target: 80 * money.Cent, TTL: time.Hour}); err != nil {
		t.Fatalf("the expired hold's headroom: %v", err)
	}
	_, err := s.ReserveHold(ctx, store.HoldRequest{ID: "rv-1", Account: "reviver", Target: 80 * money.Cent, TTL: time.Hour})
	var he *store.HeadroomError
	if !errors.As(err, &he) {
		t.Fatalf("an expired hold was revived past the ceiling: %v", err)
	}
}

// TestFlushAndCeilingNeverLiftAPaymentSuspension: an account at its ceiling
// whose invoice then fails is suspended for both; completing a flush or
// raising the ceiling lifts only the ceiling's part.
func TestFlushAndCeilingNeverLiftAPaymentSuspension(t *testing.T) {
	s := harness.Store(t)
	ctx := context.Background()
	billable(t, s, "both", 0)
	if err := s.SetCeiling(ctx, "both", 2*money.Cent); err != nil {
		t.Fatal(err)
	}
	addUsage(t, s, "both", 1)
	if a, _ := s.AccountByID(ctx, "both"); a.Status != "suspended" || a.SuspendedReason != "credit_ceiling" {
		t.Fatalf("account %+v past its ceiling", a)
	}
	if _, err := s.ApplyInvoiceEvent(ctx, store.InvoiceEvent{ID: "evt_b1", Type: store.InvoicePaymentFailed, Customer: "cus_both",
		Invoice: "in_b1", Created: time.Now().Truncate(time.Second)}); err != nil {
		t.Fatal(err)
	}
	f, _, err := s.ReserveFlush(ctx, "both")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.CompleteFlush(ctx, f.ID); err != nil {
		t.Fatal(err)
	}
	if a, _ := s.AccountByID(ctx, "both"); a.Status != "suspended" || a.SuspendedReason != "payment_failed" {
		t.Fatalf("account %+v after a flush under a failed payment", a)
	}
	if err := s.SetCeiling(ctx, "both", money.Dollar); err != nil {
		t.Fatal(err)
	}
	if a, _ := s.AccountByID(ctx, "both"); a.Status != "suspended" || a.SuspendedReason != "payment_failed" {
		t.Fatalf("account %+v after raising the ceiling under a failed payment", a)
	}
	if _, err := s.ApplyInvoiceEvent(ctx, store.InvoiceEvent{ID: "evt_b2", Type: store.InvoicePaid, Customer: "cus_both",
		Invoice: "in_b1", Created: time.Now().Add(time.Second).Truncate(time.Second)}); err != nil {
		t.Fatal(err)
	}
	if a, _ := s.AccountByID(ctx, "both"); a.Status != "active" {
		t.Fatalf("account %+v after paying", a)
	}
	if b, err := s.Books(ctx, "both"); err != nil || !b.Balanced() {
		t.Fatalf("books %+v %v", b, err)
	}
}
