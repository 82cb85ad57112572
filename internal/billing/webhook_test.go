package billing_test

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/stripe/stripe-go/v76/webhook"

	"github.com/superinstance/mesh/internal/billing"
	"github.com/superinstance/mesh/internal/store"
	"github.com/superinstance/mesh/test/harness"
)

func TestMain(m *testing.M) { harness.Main(m) }

const secret = "whsec_test_mesh"

func event(id, typ, customer string) []byte {
	return invoiceEvent(id, typ, "in_of_"+customer, customer, time.Now())
}

func post(h http.Handler, body []byte, sig string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(http.MethodPost, "/v1/stripe/webhook", bytes.NewReader(body))
	req.Header.Set("Stripe-Signature", sig)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

func sign(body []byte, at time.Time) string {
	return webhook.GenerateTestSignedPayload(&webhook.UnsignedPayload{Payload: body, Secret: secret, Timestamp: at}).Header
}

func TestWebhook(t *testing.T) {
	s := harness.Store(t)
	ctx := context.Background()
	if _, err := s.CreateAccount(ctx, "payer", "p@example.com"); err != nil {
		t.Fatal(err)
	}
	if err := s.SetStripeCustomer(ctx, "payer", "cus_payer"); err != nil {
		t.Fatal(err)
	}
	h := &billing.Webhook{Secret: secret, Accounts: s}
	status := func() string {
		a, _ := s.AccountByID(ctx, "payer")
		return a.Status + "/" + a.SuspendedReason
	}

	failed := event("evt_1", "invoice.payment_failed", "cus_payer")
	cases := []struct {
		name string
		body []byte
		sig  string
		code int
		want string
	}{
		{"tampered body", append(bytes.Clone(failed[:len(failed)-1]), []byte(` `+"}")...), sign(failed, time.Now()), 400, "active/"},
		{"wrong secret", failed, webhook.GenerateTestSignedPayload(&webhook.UnsignedPayload{Payload: failed, Secret: "whsec_other", Timestamp: time.Now()}).Header, 400, "active/"},
		{"stale signature", failed, sign(failed, time.Now().Add(-10*time.Minute)), 400, "active/"},
		{"no signature", failed, "", 400, "active/"},
		{"payment failed suspends", failed, sign(failed, time.Now()), 200, "suspended/payment_failed"},
		{"replayed failure is harmless", failed, sign(failed, time.Now()), 200, "suspended/payment_failed"},
		{"paid reinstates", event("evt_2", "invoice.paid", "cus_payer"), sign(event("evt_2", "invoice.paid", "cus_payer"), time.Now()), 200, "active/"},
		{"replayed paid is harmless", event("evt_2", "invoice.paid", "cus_payer"), sign(event("evt_2", "invoice.paid", "cus_payer"), time.Now()), 200, "active/"},
		{"unknown customer is acknowledged", event("evt_3", "invoice.paid", "cus_nobody"), sign(event("evt_3", "invoice.paid", "cus_nobody"), time.Now()), 200, "active/"},
		{"other events are ignored", event("evt_4", "customer.created", "cus_payer"), sign(event("evt_4", "customer.created", "cus_payer"), time.Now()), 200, "active/"},
	}
	for _, tc := range cases {
		rec := post(h, tc.body, tc.sig)
		if rec.Code != tc.code || status() != tc.want {
			t.Fatalf("%s: %d %s, account %s; want %d and %s", tc.name, rec.Code, rec.Body.String(), status(), tc.code, tc.want)
		}
	}

	// A ceiling suspension is not lifted by a payment.
	if err := s.SetCeiling(ctx, "payer", 1); err != nil {
		t.Fatal(err)
	}
	if _, err := s.LogUsage(ctx, store.Usage{EventID: "e", Account: "payer", Project: "p", Model: "m", PromptTokens: 1000}); err != nil {
		t.Fatal(err)
	}
	paid := event("evt_5", "invoice.paid", "cus_payer")
	if rec := post(h, paid, sign(paid, time.Now())); rec.Code != 200 || status() != "suspended/credit_ceiling" {
		t.Fatalf("paid over a ceiling suspension: %d, %s", rec.Code, status())
	}
}

func FuzzWebhookBody(f *testing.F) {
	f.Add(event("evt", "invoice.paid", "cus_x"))
	f.Add([]byte(`{"id":"evt","created":1,"type":"invoice.paid","data":{"object":{"id":"in_1","customer":{"id":"cus_y"}}}}`))
	f.Add([]byte(`{"id":"evt","created":1,"type":"invoice.voided","data":{"object":{"customer":"cus_y"}}}`))
	f.Add([]byte(`not json`))
	h := &billing.Webhook{Secret: secret, Accounts: nopAccounts{}}
	f.Fuzz(func(t *testing.T, body []byte) {
		rec := post(h, body, sign(body, time.Now()))
		if rec.Code != 200 && rec.Code != 400 && rec.Code != 413 {
			t.Fatalf("status %d for %q", rec.Code, body)
		}
	})
}

type nopAccounts struct{}

func (nopAccounts) ApplyInvoiceEvent(context.Context, store.InvoiceEvent) (store.InvoiceOutcome, error) {
	return store.InvoiceOutcome{Outcome: "unknown_customer"}, nil
}
