package integration

import (
	"context"
	"encoding/json"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/superinstance/mesh/internal/billing"
	"github.com/superinstance/mesh/internal/runner"
	"github.com/superinstance/mesh/internal/store"
	"github.com/superinstance/mesh/test/harness"
	"github.com/superinstance/mesh/workflows"
)

// subscriptionIDs lists a customer's subscriptions at the double.
func subscriptionIDs(d *harness.StripeDouble, customer string) []string {
	var ids []string
	for _, s := range d.Subscriptions(customer) {
		ids = append(ids, s.ID+"/"+s.Schedule)
	}
	return ids
}

// plans counts a customer's subscriptions made by a subscription schedule.
func plans(d *harness.StripeDouble, customer string) int {
	n := 0
	for _, s := range d.Subscriptions(customer) {
		if s.Schedule != "" {
			n++
		}
	}
	return n
}

// The new owner's plan starts only when Stripe says they saved a payment
// method on the page made for them; until then the host pays as before and
// the new owner has no subscription at Stripe. Completed sessions that are
// not that page (another customer's handover, a session of ours made for
// something else, our session named with another customer) change nothing;
// a redelivered event does nothing twice; however many handovers the new
// owner takes, they have one plan subscription.
func TestHandoverPlanWaitsForThePaymentMethod(t *testing.T) {
	hm := startHandoverMesh(t)
	ctx := context.Background()
	// Stripe set up as `si stripe setup` does; the host is a paying customer.
	setup, err := hm.Stripe.EnsureSetup(ctx, billing.SetupOptions{PublicURL: "https://mesh.example.com"})
	if err != nil {
		t.Fatal(err)
	}
	if err := hm.Store.SaveStripeSetup(ctx, setup.StripeSetup); err != nil {
		t.Fatal(err)
	}
	hostCustomer, _, err := hm.Stripe.Signup(ctx, hm.Store, "host", "host@example.com")
	if err != nil {
		t.Fatal(err)
	}
	hostSubs := subscriptionIDs(hm.double, hostCustomer)
	if len(hostSubs) != 1 {
		t.Fatalf("the host's subscriptions: %v", hostSubs)
	}

	ada, bob := harness.UniqueID("ada"), harness.UniqueID("bob")
	h1, _, _ := hm.offer(t)
	if err := runner.AcceptHandover(ctx, hm.Client, h1.ID, workflows.HandoverAccept{Account: ada, NewAccount: true}); err != nil {
		t.Fatal(err)
	}
	adaPage := hm.awaiting(t, h1.ID)
	// Waiting for ada's payment method does not hold the host's project:
	// they hand it over again, to bob.
	h2, _, _ := hm.offer(t)
	if err := runner.AcceptHandover(ctx, hm.Client, h2.ID, workflows.HandoverAccept{Account: bob, NewAccount: true}); err != nil {
		t.Fatal(err)
	}
	bobPage := hm.awaiting(t, h2.ID)
	adaAcct, _ := hm.Store.AccountByID(ctx, ada)
	bobAcct, _ := hm.Store.AccountByID(ctx, bob)
	if adaAcct.StripeCustomerID == "" || adaPage.Customer != adaAcct.StripeCustomerID || bobPage.Customer != bobAcct.StripeCustomerID {
		t.Fatalf("pages %+v %+v for customers %s %s", adaPage, bobPage, adaAcct.StripeCustomerID, bobAcct.StripeCustomerID)
	}
	waitForStatus(t, hm, h1.ID, store.HandoverAwaitingPayment)

	// Before the payment method: no subscription for the new owner, the
	// host's unchanged, and the project is already theirs.
	stillWaiting := func(why string) {
		t.Helper()
		time.Sleep(300 * time.Millisecond) // a workflow told wrongly has time to act
		if row, _ := hm.Store.HandoverByID(ctx, h1.ID); row.State != store.HandoverAwaitingPayment || row.Schedule != "" {
			t.Fatalf("%s: ada's handover is %+v", why, row)
		}
		if subs := subscriptionIDs(hm.double, adaAcct.StripeCustomerID); len(subs) != 0 {
			t.Fatalf("%s: ada has subscriptions %v before her payment method", why, subs)
		}
		if subs := subscriptionIDs(hm.double, hostCustomer); !slices.Equal(subs, hostSubs) {
			t.Fatalf("%s: the host's subscriptions %v, were %v", why, subs, hostSubs)
		}
	}
	stillWaiting("accepted")
	row, _ := hm.Store.HandoverByID(ctx, h1.ID)
	if role, err := hm.Store.ProjectRole(ctx, row.NewProject, ada); err != nil || role != store.RoleOwner {
		t.Fatalf("ada's role in %s: %q %v", row.NewProject, role, err)
	}

	// Bob saves his payment method: his handover goes on, ada's does not.
	hm.pay(t, h2.ID)
	if st, err := hm.result(t, h2.ID); err != nil || st.Status != store.HandoverCompleted {
		t.Fatalf("bob's handover: %+v %v", st, err)
	}
	stillWaiting("bob paid")

	// Ada's session, named in an event with bob's customer.
	forged := map[string]any{"id": harness.UniqueID("evt"), "object": "event", "type": "checkout.session.completed",
		"created": time.Now().Unix(), "data": map[string]any{"object": map[string]any{"id": adaPage.ID, "object": "checkout.session",
			"mode": "setup", "status": "complete", "customer": bobAcct.StripeCustomerID}}}
	body, _ := json.Marshal(forged)
	if code, out := hm.webhook(t, body); code != http.StatusOK || out["outcome"] != "no_match" {
		t.Fatalf("ada's session with bob's customer: %d %v", code, out)
	}
	// A setup session for ada's customer that no handover made.
	other, err := hm.Stripe.SetupCheckoutPage(ctx, "something-else", adaAcct.StripeCustomerID, "https://mesh.example.com/", "https://mesh.example.com/")
	if err != nil {
		t.Fatal(err)
	}
	if code, out := hm.webhook(t, hm.double.CompletedCheckoutEvent(harness.UniqueID("evt"), other.ID)); code != http.StatusOK || out["outcome"] != "no_match" {
		t.Fatalf("a session no handover made: %d %v", code, out)
	}
	// Ada's own session, not complete (the customer left the page).
	open := map[string]any{"id": harness.UniqueID("evt"), "object": "event", "type": "checkout.session.completed",
		"created": time.Now().Unix(), "data": map[string]any{"object": map[string]any{"id": adaPage.ID, "object": "checkout.session",
			"mode": "payment", "status": "open", "customer": adaAcct.StripeCustomerID}}}
	body, _ = json.Marshal(open)
	if code, out := hm.webhook(t, body); code != http.StatusOK || out["outcome"] != "no_match" {
		t.Fatalf("an open session: %d %v", code, out)
	}
	stillWaiting("events that are not ada's payment method")

	// Ada saves hers: exactly one plan subscription, and her usage one.
	evt := hm.pay(t, h1.ID)
	st, err := hm.result(t, h1.ID)
	if err != nil || st.Status != store.HandoverCompleted || st.Schedule == "" {
		t.Fatalf("ada's handover: %+v %v", st, err)
	}
	if n := plans(hm.double, adaAcct.StripeCustomerID); n != 1 {
		t.Fatalf("ada has %d plan subscriptions, want 1: %v", n, subscriptionIDs(hm.double, adaAcct.StripeCustomerID))
	}
	adaSubs := subscriptionIDs(hm.double, adaAcct.StripeCustomerID)
	if len(adaSubs) != 2 {
		t.Fatalf("ada's subscriptions %v: want the plan and the metered usage", adaSubs)
	}
	// Stripe delivers the event again: nothing happens twice.
	if code, out := hm.webhook(t, hm.double.CompletedCheckoutEvent(evt, adaPage.ID)); code != http.StatusOK || out["outcome"] != "duplicate" {
		t.Fatalf("a redelivered event: %d %v", code, out)
	}
	// A second handover to ada: her payment method is on file, no page
	// is asked for, and she keeps one plan subscription.
	h3, _ := hm.offerTo(t, adaAcct.Email, 4)
	if err := runner.AcceptHandover(ctx, hm.Client, h3.ID, workflows.HandoverAccept{Account: ada}); err != nil {
		t.Fatal(err)
	}
	st3, err := hm.result(t, h3.ID)
	if err != nil || st3.Status != store.HandoverCompleted || st3.Schedule != st.Schedule {
		t.Fatalf("ada's second handover: %+v %v (first schedule %s)", st3, err, st.Schedule)
	}
	if subs := subscriptionIDs(hm.double, adaAcct.StripeCustomerID); !slices.Equal(subs, adaSubs) {
		t.Fatalf("after a second handover ada's subscriptions %v, were %v", subs, adaSubs)
	}
	if n, _, _, _ := hm.Store.PaymentSessions(ctx, h3.ID, time.Time{}); n != 0 {
		t.Fatalf("the second handover made %d payment pages", n)
	}
	if subs := subscriptionIDs(hm.double, hostCustomer); !slices.Equal(subs, hostSubs) {
		t.Fatalf("the host's subscriptions %v, were %v", subs, hostSubs)
	}
}
