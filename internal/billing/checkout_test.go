package billing_test

import (
	"context"
	"errors"
	"testing"

	"github.com/superinstance/mesh/internal/billing"
	"github.com/superinstance/mesh/test/harness"
)

// TestSetupCheckoutOncePerReason: the payment-method page for one reason
// is one setup-mode Checkout Session, however often it is asked for (an
// answer lost on the way included); another reason is another session; a
// customer Stripe does not know is a refusal, not a retry.
func TestSetupCheckoutOncePerReason(t *testing.T) {
	d := harness.NewStripeDouble(t)
	s := billing.NewStripe(d.URL, "sk_test_double", "")
	ctx := context.Background()
	cus, err := s.EnsureCustomer(ctx, "ada", "ada@example.com")
	if err != nil {
		t.Fatal(err)
	}
	const route = "POST /v1/checkout/sessions"
	d.Fault(route, harness.CommitLose5xx)
	if _, err := s.SetupCheckout(ctx, "handover-h1", cus, "https://mesh.example.com/?payment_method=saved", "https://mesh.example.com/"); err == nil || errors.Is(err, billing.ErrRejected) {
		t.Fatalf("a lost answer: %v; want a retryable error", err)
	}
	first, err := s.SetupCheckout(ctx, "handover-h1", cus, "https://mesh.example.com/?payment_method=saved", "https://mesh.example.com/")
	if err != nil {
		t.Fatal(err)
	}
	again, err := s.SetupCheckout(ctx, "handover-h1", cus, "https://mesh.example.com/?payment_method=saved", "https://mesh.example.com/")
	if err != nil || again != first {
		t.Fatalf("asked again: %q %v; want %q", again, err, first)
	}
	got := d.Checkouts(cus)
	if len(got) != 1 || got[0].Mode != "setup" || got[0].URL != first || got[0].Currency != "usd" {
		t.Fatalf("sessions %+v; want one in setup mode at %s", got, first)
	}
	if other, err := s.SetupCheckout(ctx, "handover-h2", cus, "https://mesh.example.com/", "https://mesh.example.com/"); err != nil || other == first {
		t.Fatalf("another handover: %q %v", other, err)
	}
	if _, err := s.SetupCheckout(ctx, "handover-h3", "cus_nobody", "https://mesh.example.com/", "https://mesh.example.com/"); !errors.Is(err, billing.ErrRejected) {
		t.Fatalf("an unknown customer: %v; want ErrRejected", err)
	}
	if _, err := s.SetupCheckout(ctx, "handover-h4", "", "https://mesh.example.com/", "https://mesh.example.com/"); err == nil {
		t.Fatal("no customer: no error")
	}
}
