package billing_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/superinstance/mesh/internal/billing"
	"github.com/superinstance/mesh/internal/store"
	"github.com/superinstance/mesh/test/harness"
)

// invoiceEvent is a Stripe invoice event as Stripe sends it: the event's id
// and creation time, the invoice's id and its customer.
func invoiceEvent(id, typ, invoice, customer string, created time.Time) []byte {
	return []byte(fmt.Sprintf(`{"id":%q,"object":"event","type":%q,"created":%d,"api_version":"2020-08-27",`+
		`"data":{"object":{"id":%q,"object":"invoice","customer":%q}}}`, id, typ, created.Unix(), invoice, customer))
}

// payer is an account with a Stripe customer and a webhook that acts on it.
func payer(t *testing.T, id string) (*store.Store, *billing.Webhook, func() string, func(body []byte) int) {
	t.Helper()
	s := harness.Store(t)
	ctx := context.Background()
	if _, err := s.CreateAccount(ctx, id, id+"@example.com"); err != nil {
		t.Fatal(err)
	}
	if err := s.SetStripeCustomer(ctx, id, "cus_"+id); err != nil {
		t.Fatal(err)
	}
	h := &billing.Webhook{Secret: secret, Accounts: s}
	status := func() string {
		a, err := s.AccountByID(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		return a.Status + "/" + a.SuspendedReason
	}
	deliver := func(body []byte) int {
		rec := post(h, body, sign(body, time.Now()))
		if rec.Code != 200 {
			t.Fatalf("webhook answered %d: %s", rec.Code, rec.Body.String())
		}
		return rec.Code
	}
	return s, h, status, deliver
}

// Stripe does not deliver in order: a payment_failed created before the
// invoice was paid, delivered after it, must not suspend the account again.
func TestWebhookOldFailureAfterPaid(t *testing.T) {
	_, _, status, deliver := payer(t, "late-failure")
	t0 := time.Now().Add(-time.Hour).Truncate(time.Second)
	deliver(invoiceEvent("evt_f1", "invoice.payment_failed", "in_1", "cus_late-failure", t0))
	if got := status(); got != "suspended/payment_failed" {
		t.Fatalf("after the failure: %s", got)
	}
	deliver(invoiceEvent("evt_p1", "invoice.paid", "in_1", "cus_late-failure", t0.Add(20*time.Second)))
	if got := status(); got != "active/" {
		t.Fatalf("after paid: %s", got)
	}
	// The retry that failed before the payment went through, delivered late.
	deliver(invoiceEvent("evt_f2", "invoice.payment_failed", "in_1", "cus_late-failure", t0.Add(10*time.Second)))
	if got := status(); got != "active/" {
		t.Fatalf("an old payment_failed after paid: %s, want active", got)
	}
	// Paid is final for an invoice, even against a failure stamped the same second or later.
	deliver(invoiceEvent("evt_f3", "invoice.payment_failed", "in_1", "cus_late-failure", t0.Add(20*time.Second)))
	if got := status(); got != "active/" {
		t.Fatalf("a payment_failed for an invoice already paid: %s, want active", got)
	}
	// Another invoice that fails does suspend.
	deliver(invoiceEvent("evt_f4", "invoice.payment_failed", "in_2", "cus_late-failure", t0.Add(30*time.Second)))
	if got := status(); got != "suspended/payment_failed" {
		t.Fatalf("a new invoice failing: %s", got)
	}
}

// A paid invoice lifts the payment suspension only: an account also over
// its credit ceiling stays suspended; and lifting the ceiling suspension
// leaves the payment one in place.
func TestWebhookPaidKeepsCeilingSuspension(t *testing.T) {
	s, _, status, deliver := payer(t, "over-ceiling")
	ctx := context.Background()
	if err := s.SetCeiling(ctx, "over-ceiling", 1); err != nil {
		t.Fatal(err)
	}
	if _, err := s.LogUsage(ctx, store.Usage{EventID: "over-ceiling-e1", Account: "over-ceiling", Project: "p", Model: "m", PromptTokens: 1000}); err != nil {
		t.Fatal(err)
	}
	if got := status(); got != "suspended/credit_ceiling" {
		t.Fatalf("after usage over the ceiling: %s", got)
	}
	t0 := time.Now().Add(-time.Hour).Truncate(time.Second)
	deliver(invoiceEvent("evt_f1", "invoice.payment_failed", "in_1", "cus_over-ceiling", t0))
	deliver(invoiceEvent("evt_p1", "invoice.paid", "in_1", "cus_over-ceiling", t0.Add(time.Minute)))
	if got := status(); got != "suspended/credit_ceiling" {
		t.Fatalf("paid reinstated an account over its ceiling: %s", got)
	}

	// Both at once: raising the ceiling leaves the payment suspension.
	deliver(invoiceEvent("evt_f2", "invoice.payment_failed", "in_2", "cus_over-ceiling", t0.Add(2*time.Minute)))
	if err := s.SetCeiling(ctx, "over-ceiling", 100*1_000_000); err != nil {
		t.Fatal(err)
	}
	if got := status(); got != "suspended/payment_failed" {
		t.Fatalf("raising the ceiling lifted a payment suspension: %s", got)
	}
	if _, err := s.LogUsage(ctx, store.Usage{EventID: "over-ceiling-e2", Account: "over-ceiling", Project: "p", Model: "m", PromptTokens: 1}); err == nil {
		t.Fatal("usage logged on a payment-suspended account")
	}
	deliver(invoiceEvent("evt_p2", "invoice.paid", "in_2", "cus_over-ceiling", t0.Add(3*time.Minute)))
	if got := status(); got != "active/" {
		t.Fatalf("after both are settled: %s", got)
	}
}

// Stripe redelivers an event with a fresh signature; the second copy must
// change nothing, even after a later event changed the state.
func TestWebhookSameEventTwiceAppliedOnce(t *testing.T) {
	_, _, status, deliver := payer(t, "redelivered")
	t0 := time.Now().Add(-time.Hour).Truncate(time.Second)
	failed := invoiceEvent("evt_f1", "invoice.payment_failed", "in_1", "cus_redelivered", t0)
	deliver(failed)
	deliver(invoiceEvent("evt_p1", "invoice.paid", "in_1", "cus_redelivered", t0.Add(time.Minute)))
	deliver(failed)
	if got := status(); got != "active/" {
		t.Fatalf("a redelivered payment_failed applied twice: %s, want active", got)
	}
}

// One customer's failed invoice suspends its own account only, and events
// racing for one customer are applied in Stripe's order, not arrival's.
func TestWebhookTouchesOnlyItsCustomerUnderConcurrency(t *testing.T) {
	s, h, status, deliver := payer(t, "racer")
	ctx := context.Background()
	if _, err := s.CreateAccount(ctx, "bystander", "b@example.com"); err != nil {
		t.Fatal(err)
	}
	if err := s.SetStripeCustomer(ctx, "bystander", "cus_bystander"); err != nil {
		t.Fatal(err)
	}
	t0 := time.Now().Add(-time.Hour).Truncate(time.Second)
	// Each invoice failed, then was paid; the payments arrive first, all at
	// once, then the older failures, all at once.
	const n = 8
	var paid, failed [][]byte
	for i := range n {
		inv := fmt.Sprintf("in_race_%d", i)
		failed = append(failed, invoiceEvent(fmt.Sprintf("evt_rf%d", i), "invoice.payment_failed", inv, "cus_racer", t0.Add(time.Duration(i)*time.Second)))
		paid = append(paid, invoiceEvent(fmt.Sprintf("evt_rp%d", i), "invoice.paid", inv, "cus_racer", t0.Add(time.Duration(i)*time.Second+time.Minute)))
	}
	for _, wave := range [][][]byte{paid, failed} {
		errs := make(chan string, len(wave))
		for _, b := range wave {
			go func() {
				rec := post(h, b, sign(b, time.Now()))
				if rec.Code != 200 {
					errs <- rec.Body.String()
					return
				}
				errs <- ""
			}()
		}
		for range wave {
			if e := <-errs; e != "" {
				t.Fatal(e)
			}
		}
	}
	if got := status(); got != "active/" {
		t.Fatalf("every invoice paid, account %s", got)
	}
	deliver(invoiceEvent("evt_rf_last", "invoice.payment_failed", "in_race_last", "cus_racer", t0.Add(time.Hour)))
	if got := status(); got != "suspended/payment_failed" {
		t.Fatalf("after a new failure: %s", got)
	}
	if b, _ := s.AccountByID(ctx, "bystander"); b.Status != "active" {
		t.Fatalf("another customer's failure suspended bystander: %+v", b)
	}
}
