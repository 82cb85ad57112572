package billing_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/superinstance/mesh/internal/billing"
	"github.com/superinstance/mesh/test/harness"
)

// TestMeterEventAnswers: how each answer Stripe can give a meter event is
// told apart: accepted, already held (committed earlier), refused for good,
// not processed (429), and unknown (5xx after commit).
func TestMeterEventAnswers(t *testing.T) {
	d := harness.NewStripeDouble(t)
	d.SetKeyWindow(0) // no idempotency replay: the identifier answers
	s := billing.NewStripe(d.URL, "sk_test_double", "")
	ctx := context.Background()
	cus, err := s.EnsureCustomer(ctx, "acme", "a@example.com")
	if err != nil {
		t.Fatal(err)
	}
	at := time.Now().Add(-time.Minute)
	if err := s.SendMeterEvent(ctx, "flush-acme-1", cus, 125, at); err != nil {
		t.Fatal(err)
	}
	if err := s.SendMeterEvent(ctx, "flush-acme-1", cus, 125, at); !errors.Is(err, billing.ErrDuplicateEvent) {
		t.Fatalf("a second copy of the identifier: %v", err)
	}
	d.Fault("POST /v1/billing/meter_events", harness.CommitLose5xx)
	err = s.SendMeterEvent(ctx, "flush-acme-2", cus, 5, at)
	if err == nil || errors.Is(err, billing.ErrRejected) || errors.Is(err, billing.ErrDuplicateEvent) || errors.Is(err, billing.ErrNotProcessed) {
		t.Fatalf("a lost answer must be unknown: %v", err)
	}
	d.Fault("POST /v1/billing/meter_events", harness.Refuse)
	if err := s.SendMeterEvent(ctx, "flush-acme-3", cus, 5, at); !errors.Is(err, billing.ErrRejected) {
		t.Fatalf("a refusal: %v", err)
	}
	if err := s.SendMeterEvent(ctx, "flush-acme-4", "cus_nobody", 5, at); !errors.Is(err, billing.ErrRejected) {
		t.Fatalf("an unknown customer: %v", err)
	}
	from, to := billing.MeterWindow(at)
	if from.Second() != 0 || to.Sub(from) != time.Minute || at.Before(from) || !at.Before(to) {
		t.Fatalf("window %v..%v for %v", from, to, at)
	}
	held, err := s.MeterTotal(ctx, cus, from, to)
	if err != nil || held != 130 {
		t.Fatalf("summaries say %d cents (%v), want 125 + 5 committed", held, err)
	}
	if err := s.CancelMeterEvent(ctx, billing.MeterEventKey("flush-acme-2"), "k1"); err != nil {
		t.Fatal(err)
	}
	if err := s.CancelMeterEvent(ctx, billing.MeterEventKey("flush-acme-2"), "k2"); !errors.Is(err, billing.ErrRejected) {
		t.Fatalf("cancelling a cancelled event: %v", err)
	}
	if held, err := s.MeterTotal(ctx, cus, from, to); err != nil || held != 125 {
		t.Fatalf("after the cancel: %d %v", held, err)
	}
}

func TestRateLimitedIsNotProcessed(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusTooManyRequests)
		_, _ = io.WriteString(w, `{"error":{"type":"invalid_request_error","code":"rate_limit","message":"Too many requests"}}`)
	}))
	defer srv.Close()
	s := billing.NewStripe(srv.URL, "sk_test_x", "")
	err := s.SendMeterEvent(context.Background(), "flush-x-1", "cus_x", 1, time.Now())
	if !errors.Is(err, billing.ErrNotProcessed) || errors.Is(err, billing.ErrRejected) {
		t.Fatalf("429: %v", err)
	}
}
