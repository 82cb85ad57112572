package activities_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"go.temporal.io/sdk/testsuite"

	"github.com/superinstance/mesh/activities"
	"github.com/superinstance/mesh/internal/billing"
	"github.com/superinstance/mesh/internal/store"
	"github.com/superinstance/mesh/test/harness"
)

// TestACancellationStripeRefusesIsRecordedNotRetried: Stripe holds a flush
// twice and refuses to cancel the copy (both older than its 24-hour
// adjustment window). Reconciling must not fail (a retryable error stalls
// the flush, and with it the account's later flushes, for good): it reports
// the flush overbilled, and records how much on the flush for an operator.
func TestACancellationStripeRefusesIsRecordedNotRetried(t *testing.T) {
	var suite testsuite.WorkflowTestSuite
	env := suite.NewTestActivityEnvironment()
	d := harness.NewStripeDouble(t)
	s := harness.Store(t)
	st := billing.NewStripe(d.URL, "sk_test_double", "")
	b := &activities.Billing{Store: s, Stripe: st}
	env.RegisterActivity(b)
	f, cus := reserved(t, s, st, "late")
	old := d.Now().Add(-25 * time.Hour)
	for range 2 {
		d.Plant(harness.DoubleMeterEvent{Identifier: billing.MeterEventKey(f.ID), Customer: cus, Value: f.AmountCents,
			Timestamp: f.MeterAt.UTC(), Received: old})
	}
	v, err := env.ExecuteActivity(b.ReconcileFlush, activities.StartedFlush{Flush: f, Customer: cus})
	if err != nil {
		t.Fatalf("a refused cancellation is an error to retry: %v", err)
	}
	var r activities.Reconciled
	if err := v.Get(&r); err != nil || r.Outcome != activities.ReconcileOverbilled || r.Overbilled != f.AmountCents || r.Cancelled != 0 {
		t.Fatalf("reconciled %+v %v", r, err)
	}
	got, err := s.FlushByID(context.Background(), f.ID)
	if err != nil || got.OverbilledCents != f.AmountCents || !strings.Contains(got.Error, "refused") || !got.Open() {
		t.Fatalf("flush after the refusal %+v %v", got, err)
	}
}

// TestADefiniteRefusalFailsTheFlushAtOnce: SendFlush records Stripe's
// definite refusal by closing the flush failed itself, so the old flush
// workflow's FailFlush (which no longer fails a flush a request of which
// may have reached Stripe) still fails a refused one.
func TestADefiniteRefusalFailsTheFlushAtOnce(t *testing.T) {
	var suite testsuite.WorkflowTestSuite
	env := suite.NewTestActivityEnvironment()
	d := harness.NewStripeDouble(t)
	s := harness.Store(t)
	st := billing.NewStripe(d.URL, "sk_test_double", "")
	b := &activities.Billing{Store: s, Stripe: st}
	env.RegisterActivity(b)
	f, cus := reserved(t, s, st, "refused")
	d.Fault("POST /v1/billing/meter_events", harness.Refuse)
	if _, err := env.ExecuteActivity(b.SendFlush, activities.StartedFlush{Flush: f, Customer: cus}); !isType(err, activities.ErrStripeRejected) {
		t.Fatalf("send: %v", err)
	}
	got, err := s.FlushByID(context.Background(), f.ID)
	if err != nil || got.State != store.FlushFailed {
		t.Fatalf("after a definite refusal: %+v %v", got, err)
	}
	v, err := env.ExecuteActivity(b.FailFlush, f.ID, "refused")
	var failed store.Flush
	if err != nil || v.Get(&failed) != nil || failed.State != store.FlushFailed {
		t.Fatalf("FailFlush of a refused flush: %+v %v", failed, err)
	}
}
