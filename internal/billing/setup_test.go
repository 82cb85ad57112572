package billing_test

import (
	"context"
	"errors"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/superinstance/mesh/internal/billing"
	"github.com/superinstance/mesh/test/harness"
)

func wantForm(t *testing.T, what string, got url.Values, want map[string]string) {
	t.Helper()
	for k, v := range want {
		if got.Get(k) != v {
			t.Errorf("%s: %s = %q, want %q (request %v)", what, k, got.Get(k), v, got)
		}
	}
}

func creates(p *harness.StripeProxy) []string {
	var out []string
	for _, r := range p.Requests("POST ") {
		switch r.Route {
		case "POST /v1/billing/meters", "POST /v1/prices", "POST /v1/products", "POST /v1/webhook_endpoints", "POST /v1/subscriptions", "POST /v1/customers":
			out = append(out, r.Route)
		}
	}
	return out
}

// The meter, price and endpoint are created with the shape meter events
// and webhooks need (stripe-mock refuses unknown parameters), and a second
// run from the recorded setup creates nothing.
func TestStripeSetupCreatesOnceWithTheRightShape(t *testing.T) {
	ctx := context.Background()
	proxy := harness.NewStripeProxy(t, harness.StripeMock(t))
	s := billing.NewStripe(proxy.URL, "sk_test_mesh", "")
	r1, err := s.EnsureSetup(ctx, billing.SetupOptions{PublicURL: "https://mesh.example.com/"})
	if err != nil {
		t.Fatal(err)
	}
	if r1.MeterID == "" || r1.PriceID == "" || r1.WebhookEndpointID == "" || r1.WebhookURL != "https://mesh.example.com/v1/stripe/webhook" {
		t.Fatalf("setup %+v", r1)
	}
	meters := proxy.Requests("POST /v1/billing/meters")
	if len(meters) != 1 {
		t.Fatalf("%d meter creates", len(meters))
	}
	wantForm(t, "meter", meters[0].Form, map[string]string{
		"event_name": billing.DefaultMeterEvent, "default_aggregation[formula]": "sum",
		"customer_mapping[event_payload_key]": "stripe_customer_id", "customer_mapping[type]": "by_id",
		"value_settings[event_payload_key]": "value",
	})
	if meters[0].Key == "" {
		t.Error("meter created without an idempotency key")
	}
	prices := proxy.Requests("POST /v1/prices")
	if len(prices) != 1 {
		t.Fatalf("%d price creates", len(prices))
	}
	wantForm(t, "price", prices[0].Form, map[string]string{
		"currency": "usd", "unit_amount": "1", "product": billing.DefaultPlan.Product, "recurring[interval]": "month",
		"recurring[usage_type]": "metered", "recurring[meter]": r1.MeterID, "lookup_key": billing.UsagePriceLookupKey(billing.DefaultMeterEvent),
	})
	hooks := proxy.Requests("POST /v1/webhook_endpoints")
	if len(hooks) != 1 {
		t.Fatalf("%d webhook endpoint creates", len(hooks))
	}
	wantForm(t, "webhook endpoint", hooks[0].Form, map[string]string{"url": "https://mesh.example.com/v1/stripe/webhook"})
	var events []string
	for k, v := range hooks[0].Form {
		if strings.HasPrefix(k, "enabled_events[") {
			events = append(events, v...)
		}
	}
	slices.Sort(events)
	if want := []string{"checkout.session.completed", "invoice.paid", "invoice.payment_failed", "invoice.voided"}; !slices.Equal(events, want) {
		t.Errorf("enabled events %v, want %v", events, want)
	}

	before := len(creates(proxy))
	r2, err := s.EnsureSetup(ctx, billing.SetupOptions{PublicURL: "https://mesh.example.com", Have: r1.StripeSetup})
	if err != nil {
		t.Fatal(err)
	}
	if got := creates(proxy)[before:]; len(got) != 0 || len(r2.Created) != 0 {
		t.Fatalf("the second run created %v (%v)", got, r2.Created)
	}
	if r2.MeterID != r1.MeterID || r2.PriceID != r1.PriceID || r2.WebhookEndpointID != r1.WebhookEndpointID {
		t.Fatalf("second run %+v, first %+v", r2.StripeSetup, r1.StripeSetup)
	}
}

func TestWebhookURLIsValidated(t *testing.T) {
	for _, bad := range []string{"", "mesh.example.com", "ftp://mesh.example.com", "https://", "https://mesh.example.com/?x=1"} {
		if _, err := billing.WebhookURL(bad); err == nil || !strings.Contains(err.Error(), "--public-url") {
			t.Errorf("%q: %v", bad, err)
		}
	}
}

// Signup subscribes a new customer to the metered price once: a second
// signup asks Stripe for nothing, and a subscription whose reply was lost
// is asked for again under the same idempotency key.
func TestSignupSubscribesOnce(t *testing.T) {
	ctx := context.Background()
	st := harness.Store(t)
	proxy := harness.NewStripeProxy(t, harness.StripeMock(t))
	s := billing.NewStripe(proxy.URL, "sk_test_mesh", "")
	if _, err := st.CreateAccount(ctx, "signup-a", "a@example.com"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Signup(ctx, st, "signup-a", "a@example.com"); !errors.Is(err, billing.ErrNoSetup) {
		t.Fatalf("signup before setup: %v, want ErrNoSetup", err)
	}
	r, err := s.EnsureSetup(ctx, billing.SetupOptions{PublicURL: "https://mesh.example.com"})
	if err != nil {
		t.Fatal(err)
	}
	if err := st.SaveStripeSetup(ctx, r.StripeSetup); err != nil {
		t.Fatal(err)
	}
	proxy.Fail("POST /v1/subscriptions", 1)
	if _, _, err := s.Signup(ctx, st, "signup-a", "a@example.com"); err == nil {
		t.Fatal("the injected fault was not reported")
	}
	cus, sub, err := s.Signup(ctx, st, "signup-a", "a@example.com")
	if err != nil || cus == "" || sub == "" {
		t.Fatalf("signup: %q %q %v", cus, sub, err)
	}
	if _, _, err := s.Signup(ctx, st, "signup-a", "a@example.com"); err != nil {
		t.Fatal(err)
	}
	keys := proxy.Keys("POST /v1/subscriptions")
	if len(keys) != 1 || keys[billing.UsageSubscriptionKey("signup-a")] != 2 {
		t.Fatalf("subscription requests by idempotency key: %v; want 2 under %s", keys, billing.UsageSubscriptionKey("signup-a"))
	}
	subs := proxy.Requests("POST /v1/subscriptions")
	wantForm(t, "subscription", subs[len(subs)-1].Form, map[string]string{"customer": cus, "items[0][price]": r.PriceID, "metadata[si_account]": "signup-a"})
	if got, _ := st.UsageSubscription(ctx, "signup-a"); got != sub {
		t.Fatalf("recorded subscription %q, want %q", got, sub)
	}
	// A second account gets its own subscription, under its own key.
	if _, err := st.CreateAccount(ctx, "signup-b", "b@example.com"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Signup(ctx, st, "signup-b", "b@example.com"); err != nil {
		t.Fatal(err)
	}
	if keys := proxy.Keys("POST /v1/subscriptions"); len(keys) != 2 || keys[billing.UsageSubscriptionKey("signup-b")] != 1 {
		t.Fatalf("keys %v", keys)
	}
}

// The meter setup creates maps exactly the payload keys SendMeterEvent sends.
func TestMeterPayloadKeysMatchTheMeterEvents(t *testing.T) {
	proxy := harness.NewStripeProxy(t, harness.StripeMock(t))
	s := billing.NewStripe(proxy.URL, "sk_test_mesh", "")
	if err := s.SendMeterEvent(context.Background(), "flush-payload-1", "cus_payload", 123, time.Now()); err != nil {
		t.Fatal(err)
	}
	ev := proxy.Requests("POST /v1/billing/meter_events")
	if len(ev) != 1 {
		t.Fatalf("%d meter events", len(ev))
	}
	wantForm(t, "meter event", ev[0].Form, map[string]string{
		"event_name": billing.DefaultMeterEvent, "payload[" + billing.MeterCustomerKey + "]": "cus_payload", "payload[" + billing.MeterValueKey + "]": "123"})
}

// Stripe creates the meter, the price or the endpoint but the reply is
// lost: the setup run again sends each create under the same idempotency
// key, so Stripe answers with what it made the first time. (The price's key
// is its meter's id, the same at Stripe on every retry; stripe-mock makes a
// new meter id each time, so only the meter's and the endpoint's keys can
// be counted here.)
func TestStripeSetupRetriedAfterLostRepliesReusesTheKeys(t *testing.T) {
	ctx := context.Background()
	proxy := harness.NewStripeProxy(t, harness.StripeMock(t))
	s := billing.NewStripe(proxy.URL, "sk_test_mesh", "")
	for _, route := range []string{"POST /v1/billing/meters", "POST /v1/prices", "POST /v1/webhook_endpoints"} {
		proxy.Fail(route, 1)
		if _, err := s.EnsureSetup(ctx, billing.SetupOptions{PublicURL: "https://mesh.example.com"}); err == nil {
			t.Fatalf("%s: the lost reply was not reported", route)
		}
	}
	if _, err := s.EnsureSetup(ctx, billing.SetupOptions{PublicURL: "https://mesh.example.com"}); err != nil {
		t.Fatal(err)
	}
	for _, route := range []string{"POST /v1/billing/meters", "POST /v1/webhook_endpoints"} {
		keys := proxy.Keys(route)
		if len(keys) != 1 {
			t.Errorf("%s sent under %d idempotency keys (%v); want one", route, len(keys), keys)
		}
		for k := range keys {
			if k == "" {
				t.Errorf("%s sent without an idempotency key", route)
			}
		}
	}
}
