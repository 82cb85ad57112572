package activities_test

import (
	"context"
	"errors"
	"testing"

	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/testsuite"

	"github.com/superinstance/mesh/activities"
	"github.com/superinstance/mesh/internal/billing"
	"github.com/superinstance/mesh/internal/store"
	"github.com/superinstance/mesh/test/harness"
)

func TestMain(m *testing.M) { harness.Main(m) }

// reserved makes an account whose customer lives in the double, with a
// reserved flush of a few dollars.
func reserved(t *testing.T, s *store.Store, st *billing.Stripe, id string) (store.Flush, string) {
	t.Helper()
	ctx := context.Background()
	harness.EnsureAccount(t, s, id)
	cus, err := st.EnsureCustomer(ctx, id, id+"@example.com")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.SetStripeCustomer(ctx, id, cus); err != nil {
		t.Fatal(err)
	}
	if _, err := s.LogUsage(ctx, store.Usage{EventID: id + "-e", Account: id, Project: "p", Model: "si-simulator-large", PromptTokens: 1_000_000}); err != nil {
		t.Fatal(err)
	}
	f, _, err := s.ReserveFlush(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	return f, cus
}

// TestReconcileFlush: what Stripe's summaries say about a flush in doubt,
// with another account's flush in the same minute: absent, committed, held
// twice (one copy cancelled, by identifier), and a figure that is neither.
// Another account's flush id is not this account's to open.
func TestReconcileFlush(t *testing.T) {
	var suite testsuite.WorkflowTestSuite
	env := suite.NewTestActivityEnvironment()
	d := harness.NewStripeDouble(t)
	s := harness.Store(t)
	st := billing.NewStripe(d.URL, "sk_test_double", "")
	b := &activities.Billing{Store: s, Stripe: st}
	env.RegisterActivity(b)
	ctx := context.Background()
	f, cus := reserved(t, s, st, "rec")
	other, _ := reserved(t, s, st, "rec-other")

	if _, err := env.ExecuteActivity(b.OpenFlush, activities.FlushStart{Account: "rec", FlushID: other.ID}); !isType(err, activities.ErrUnknownFlush) {
		t.Fatalf("opening another account's flush: %v", err)
	}
	v, err := env.ExecuteActivity(b.OpenFlush, activities.FlushStart{Account: "rec", FlushID: f.ID})
	if err != nil {
		t.Fatal(err)
	}
	var started activities.StartedFlush
	if err := v.Get(&started); err != nil || started.Customer != cus {
		t.Fatalf("open %+v %v", started, err)
	}
	reconcile := func() activities.Reconciled {
		t.Helper()
		v, err := env.ExecuteActivity(b.ReconcileFlush, started)
		if err != nil {
			t.Fatal(err)
		}
		var r activities.Reconciled
		if err := v.Get(&r); err != nil {
			t.Fatal(err)
		}
		return r
	}
	if r := reconcile(); r.Outcome != activities.ReconcileAbsent {
		t.Fatalf("nothing at Stripe: %+v", r)
	}
	// The other account's flush in the same minute is another customer's.
	if err := st.SendMeterEvent(ctx, other.ID, mustCustomer(t, s, "rec-other"), other.AmountCents, other.MeterAt); err != nil {
		t.Fatal(err)
	}
	if err := st.SendMeterEvent(ctx, f.ID, cus, f.AmountCents, f.MeterAt); err != nil {
		t.Fatal(err)
	}
	if r := reconcile(); r.Outcome != activities.ReconcileCommitted || r.Cancelled != 0 || r.Held != f.AmountCents {
		t.Fatalf("held once: %+v", r)
	}
	key := billing.MeterEventKey(f.ID)
	copyOf := d.Events(key)[0]
	copyOf.Received = d.Now()
	d.Plant(copyOf)
	if r := reconcile(); r.Outcome != activities.ReconcileCommitted || r.Cancelled != 1 || r.Held != 2*f.AmountCents {
		t.Fatalf("held twice: %+v", r)
	}
	if held := d.Held(cus); held != f.AmountCents {
		t.Fatalf("after the cancel Stripe holds %d cents, want %d", held, f.AmountCents)
	}
	d.Plant(harness.DoubleMeterEvent{Identifier: "someone-else", Customer: cus, Value: 1, Timestamp: copyOf.Timestamp})
	if r := reconcile(); r.Outcome != activities.ReconcileMismatch {
		t.Fatalf("a figure that is neither: %+v", r)
	}
}

func mustCustomer(t *testing.T, s *store.Store, id string) string {
	t.Helper()
	a, err := s.AccountByID(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return a.StripeCustomerID
}

func isType(err error, typ string) bool {
	var ae *temporal.ApplicationError
	return errors.As(err, &ae) && ae.Type() == typ
}
