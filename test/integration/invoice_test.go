package integration

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/superinstance/mesh/internal/billing"
	"github.com/superinstance/mesh/internal/money"
	"github.com/superinstance/mesh/internal/simulator"
	"github.com/superinstance/mesh/internal/store"
	"github.com/superinstance/mesh/test/harness"
	"github.com/superinstance/mesh/workflows"
)

// upcomingCents is the customer's upcoming invoice at Stripe, in cents.
func upcomingCents(t *testing.T, m *harness.Mesh, customer string) int64 {
	t.Helper()
	inv, err := m.Stripe.Upcoming(context.Background(), customer)
	if err != nil {
		t.Fatalf("upcoming invoice of %s: %v", customer, err)
	}
	if inv.AmountDue != inv.Total || inv.Currency != "usd" || inv.Lines != 1 {
		t.Fatalf("upcoming invoice %+v: want one usd line, all of it due", inv)
	}
	return inv.AmountDue
}

// TestFlushedCentsEndOnTheUpcomingInvoice follows a cent from the books to
// what Stripe will invoice: si stripe setup makes the meter's price and the
// webhook endpoint, an account signs up (twice, subscribed once), usage is
// flushed through FlushWorkflow, and the customer's upcoming invoice asks
// for exactly the cents flushed; a flush whose answers were all lost and
// which was then reconciled is on it once. Before the double served
// products, prices, webhook endpoints, subscriptions and upcoming invoices,
// the setup failed here (404 on GET /v1/products/si_cloud).
func TestFlushedCentsEndOnTheUpcomingInvoice(t *testing.T) {
	d := harness.NewStripeDouble(t)
	m := harness.StartMesh(t, simulator.Options{}, harness.WithStripe(d.URL))
	ctx := context.Background()
	stripeFlags := []string{"--database-url", m.DatabaseURL, "--stripe-key", "sk_test_mesh", "--stripe-api-base", d.URL}
	setup := append([]string{"stripe", "setup", "--public-url", "https://mesh.example.com"}, stripeFlags...)
	var first, second struct {
		billing.SetupResult
		Subscribed []string `json:"subscribed_accounts"`
	}
	siJSON(t, &first, setup...)
	if first.MeterID != harness.DoubleMeterID || first.PriceID == "" || first.WebhookEndpointID == "" || first.WebhookSecret == "" || len(first.Created) != 2 {
		t.Fatalf("setup %+v: want the existing meter, a new price and a new webhook endpoint with its secret", first)
	}
	siJSON(t, &second, setup...)
	if len(second.Created)+len(second.Updated) != 0 || second.StripeSetup != first.StripeSetup {
		t.Fatalf("second setup %+v after %+v: want nothing new", second, first)
	}
	if len(d.Prices()) != 1 || len(d.WebhookEndpoints()) != 1 {
		t.Fatalf("Stripe holds prices %v and endpoints %v; want one each", d.Prices(), d.WebhookEndpoints())
	}

	create := append([]string{"account", "create", "--account", "shop", "--email", "ops@shop.example"}, stripeFlags...)
	var acct struct {
		StripeCustomerID   string `json:"stripe_customer_id"`
		StripeSubscription string `json:"stripe_subscription"`
	}
	siJSON(t, &acct, create...)
	siJSON(t, &acct, create...)
	cus := acct.StripeCustomerID
	subs := d.Subscriptions(cus)
	if len(subs) != 1 || subs[0].ID != acct.StripeSubscription || len(subs[0].Prices) != 1 || subs[0].Prices[0] != first.PriceID {
		t.Fatalf("customer %s holds subscriptions %+v; want one, to %s", cus, subs, first.PriceID)
	}
	if got := upcomingCents(t, m, cus); got != 0 {
		t.Fatalf("upcoming invoice before any usage: %d cents", got)
	}

	// A flush answered at once.
	charge(t, m.Store, "shop", 3*money.Dollar+1)
	res, err := flush(t, m, "shop")
	if err != nil || res.Flush.State != store.FlushSent {
		t.Fatalf("flush %+v %v", res, err)
	}
	b := balanced(t, m, "shop")
	if got := upcomingCents(t, m, cus); money.Micros(got)*money.Cent != b.Flushed || got != res.Flush.AmountCents {
		t.Fatalf("upcoming invoice asks %d cents; the books flushed %s", got, b.Flushed)
	}

	// A flush Stripe commits but never answers: in doubt, then reconciled
	// past the identifier window against the meter, and billed once.
	charge(t, m.Store, "shop", 2*money.Dollar)
	d.FaultN(meterEvents, harness.CommitLose5xx, 1000)
	in := quick
	in.Window = 3 * time.Second
	s, err := starter(m, in).Start(ctx, "shop")
	if err != nil {
		t.Fatal(err)
	}
	var lost workflows.FlushResult
	if err := m.Client.GetWorkflow(ctx, s.Flush.ID, "").Get(ctx, &lost); err != nil || lost.Flush.State != store.FlushSent {
		t.Fatalf("lost flush %+v %v", lost, err)
	}
	if lost.Reconciled == nil {
		t.Fatalf("lost flush %+v: sent without being reconciled", lost)
	}
	d.ClearFaults()
	if n := len(d.Events(billing.MeterEventKey(s.Flush.ID))); n != 1 {
		t.Fatalf("Stripe holds %d meter events for %s, want 1", n, s.Flush.ID)
	}
	b = balanced(t, m, "shop")
	if got := upcomingCents(t, m, cus); money.Micros(got)*money.Cent != b.Flushed || got != res.Flush.AmountCents+lost.Flush.AmountCents {
		t.Fatalf("upcoming invoice asks %d cents; the books flushed %s in %d+%d cents", got, b.Flushed, res.Flush.AmountCents, lost.Flush.AmountCents)
	}

	// A customer subscribed to nothing has no upcoming invoice, said plainly.
	other := doubleAccount(t, m, "nosub")
	if _, err := m.Stripe.Upcoming(ctx, other); !errors.Is(err, billing.ErrNoUpcomingInvoice) {
		t.Fatalf("upcoming invoice of a customer with no subscription: %v", err)
	}
}

// TestNoFlushBeforeTheSubscription: Stripe invoices a meter event only in
// the period of a subscription to its price, so cents flushed for a
// customer not yet subscribed would be counted flushed and never invoiced.
// An account whose signup got its customer but not its subscription (Stripe
// refused it) keeps its usage unbilled, with an error that says why, until
// it is subscribed; then the flush sends it and the upcoming invoice asks
// for all of it. It failed before: the first flush was sent, and the
// invoice asked for 0 of its cents.
func TestNoFlushBeforeTheSubscription(t *testing.T) {
	d := harness.NewStripeDouble(t)
	m := harness.StartMesh(t, simulator.Options{}, harness.WithStripe(d.URL))
	stripeFlags := []string{"--database-url", m.DatabaseURL, "--stripe-key", "sk_test_mesh", "--stripe-api-base", d.URL}
	var setup struct{ billing.SetupResult }
	siJSON(t, &setup, append([]string{"stripe", "setup", "--public-url", "https://mesh.example.com"}, stripeFlags...)...)
	create := append([]string{"account", "create", "--account", "late", "--email", "ops@late.example"}, stripeFlags...)
	d.Fault("POST /v1/subscriptions", harness.Refuse)
	if _, errb, code := operatorSI(t, create...); code == 0 || !strings.Contains(errb, "subscribing late to the metered price") {
		t.Fatalf("account create with the subscription refused: exit %d, %s", code, errb)
	}
	a, err := m.Store.AccountByID(context.Background(), "late")
	if err != nil || a.StripeCustomerID == "" {
		t.Fatalf("account %+v %v: want its customer kept", a, err)
	}
	cus := a.StripeCustomerID
	charge(t, m.Store, "late", 2*money.Dollar)
	_, err = starter(m, quick).Start(context.Background(), "late")
	if !errors.Is(err, store.ErrNoUsageSubscription) || !strings.Contains(err.Error(), "si stripe setup") || len(d.Events("")) != 0 {
		t.Fatalf("flush before the subscription: %v; Stripe holds %d events", err, len(d.Events("")))
	}
	if b := balanced(t, m, "late"); b.Flushed != 0 {
		t.Fatalf("books %+v: nothing may count as flushed", b)
	}
	time.Sleep(1100 * time.Millisecond) // the subscription starts in a later second than the usage
	var acct struct {
		StripeSubscription string `json:"stripe_subscription"`
	}
	siJSON(t, &acct, create...)
	if acct.StripeSubscription == "" {
		t.Fatalf("account create again: %+v", acct)
	}
	res, err := flush(t, m, "late")
	if err != nil || res.Flush.State != store.FlushSent {
		t.Fatalf("flush after the subscription: %+v %v", res, err)
	}
	b := balanced(t, m, "late")
	if got := upcomingCents(t, m, cus); money.Micros(got)*money.Cent != b.Flushed || got == 0 {
		t.Fatalf("upcoming invoice asks %d cents; the books flushed %s", got, b.Flushed)
	}
}

// TestFlushNotBeforeTheSubscriptionStarts: Stripe's clock runs ahead of the
// mesh's, so a subscription starts (by Stripe) after the moment the mesh
// stamps a flush made just after signup. The meter event must not be
// timestamped before the subscription's start, or no invoice holds it. It
// failed before: the invoice asked 0 cents of a flush that was sent.
func TestFlushNotBeforeTheSubscriptionStarts(t *testing.T) {
	d := harness.NewStripeDouble(t)
	m := harness.StartMesh(t, simulator.Options{}, harness.WithStripe(d.URL))
	stripeFlags := []string{"--database-url", m.DatabaseURL, "--stripe-key", "sk_test_mesh", "--stripe-api-base", d.URL}
	var setup struct{ billing.SetupResult }
	siJSON(t, &setup, append([]string{"stripe", "setup", "--public-url", "https://mesh.example.com"}, stripeFlags...)...)
	d.Advance(3 * time.Second)
	var acct struct {
		StripeCustomerID string `json:"stripe_customer_id"`
	}
	siJSON(t, &acct, append([]string{"account", "create", "--account", "fast", "--email", "ops@fast.example"}, stripeFlags...)...)
	charge(t, m.Store, "fast", 2*money.Dollar)
	res, err := flush(t, m, "fast")
	if err != nil || res.Flush.State != store.FlushSent {
		t.Fatalf("flush %+v %v", res, err)
	}
	b := balanced(t, m, "fast")
	if got := upcomingCents(t, m, acct.StripeCustomerID); money.Micros(got)*money.Cent != b.Flushed {
		t.Fatalf("upcoming invoice asks %d cents; the books flushed %s (meter event at %s)", got, b.Flushed, res.Flush.MeterAt)
	}
}
