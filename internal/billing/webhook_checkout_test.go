package billing_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/superinstance/mesh/internal/billing"
	"github.com/superinstance/mesh/internal/store"
)

func checkoutEvent(id, session, mode, status, customer string) []byte {
	return []byte(fmt.Sprintf(`{"id":%q,"object":"event","type":"checkout.session.completed","created":%d,"api_version":"2023-10-16",`+
		`"data":{"object":{"id":%q,"object":"checkout.session","mode":%q,"status":%q,"customer":%q}}}`,
		id, time.Now().Unix(), session, mode, status, customer))
}

// payments records what reaches the store.
type payments struct {
	got []store.PaymentEvent
	out store.PaymentOutcome
}

func (p *payments) ApplyPaymentEvent(_ context.Context, ev store.PaymentEvent) (store.PaymentOutcome, error) {
	p.got = append(p.got, ev)
	return p.out, nil
}

// A completed Checkout Session reaches the store only signed and whole;
// what it applied is told to the handovers, and nothing else is.
func TestWebhookCheckoutCompleted(t *testing.T) {
	p := &payments{out: store.PaymentOutcome{Outcome: "applied", Account: "ada", Handovers: []string{"ho_1"}}}
	var told [][]string
	h := &billing.Webhook{Secret: secret, Accounts: nopAccounts{}, Payments: p,
		PaymentSaved: func(_ context.Context, ids []string) error { told = append(told, ids); return nil }}
	ev := checkoutEvent("evt_c1", "cs_1", "setup", "complete", "cus_ada")
	if rec := post(h, ev, "t=1,v1=forged"); rec.Code != 400 || len(p.got) != 0 {
		t.Fatalf("unsigned: %d, %d events reached the store", rec.Code, len(p.got))
	}
	for name, body := range map[string][]byte{
		"no session id": []byte(`{"id":"evt_c2","object":"event","type":"checkout.session.completed","created":1,"data":{"object":{"object":"checkout.session","customer":"cus_ada"}}}`),
		"not a session": []byte(`{"id":"evt_c3","object":"event","type":"checkout.session.completed","created":1,"data":{"object":{"id":"in_1","object":"invoice","customer":"cus_ada"}}}`),
		"no created":    []byte(`{"id":"evt_c4","object":"event","type":"checkout.session.completed","data":{"object":{"id":"cs_1","object":"checkout.session","customer":"cus_ada"}}}`),
	} {
		if rec := post(h, body, sign(body, time.Now())); rec.Code != 400 {
			t.Fatalf("%s: %d %s", name, rec.Code, rec.Body)
		}
	}
	if len(p.got) != 0 || len(told) != 0 {
		t.Fatalf("malformed events reached the store (%d) or the handovers (%v)", len(p.got), told)
	}
	if rec := post(h, ev, sign(ev, time.Now())); rec.Code != 200 {
		t.Fatalf("a signed event: %d %s", rec.Code, rec.Body)
	}
	want := store.PaymentEvent{ID: "evt_c1", Session: "cs_1", Customer: "cus_ada", Mode: "setup", Status: "complete"}
	if len(p.got) != 1 || p.got[0].ID != want.ID || p.got[0].Session != want.Session || p.got[0].Customer != want.Customer ||
		p.got[0].Mode != want.Mode || p.got[0].Status != want.Status || p.got[0].Created.IsZero() {
		t.Fatalf("the store got %+v, want %+v", p.got, want)
	}
	if len(told) != 1 || len(told[0]) != 1 || told[0][0] != "ho_1" {
		t.Fatalf("handovers told %v", told)
	}
	// A duplicate tells no one.
	p.out = store.PaymentOutcome{Outcome: "duplicate", Account: "ada"}
	if rec := post(h, ev, sign(ev, time.Now())); rec.Code != 200 || len(told) != 1 {
		t.Fatalf("a duplicate: %d, told %v", rec.Code, told)
	}
}

func FuzzWebhookCheckout(f *testing.F) {
	f.Add(checkoutEvent("evt", "cs_1", "setup", "complete", "cus_x"))
	f.Add([]byte(`{"id":"evt","created":1,"type":"checkout.session.completed","data":{"object":{"id":"cs_1","object":"checkout.session","customer":{"id":"cus_y"}}}}`))
	f.Add([]byte(`{"id":"evt","created":1,"type":"checkout.session.completed","data":{"object":{"id":"cs_1","object":"checkout.session","customer":null}}}`))
	f.Add([]byte(`{"id":"evt","created":1,"type":"checkout.session.completed","data":null}`))
	h := &billing.Webhook{Secret: secret, Accounts: nopAccounts{}, Payments: &payments{out: store.PaymentOutcome{Outcome: "no_match"}}}
	f.Fuzz(func(t *testing.T, body []byte) {
		rec := post(h, body, sign(body, time.Now()))
		if rec.Code != 200 && rec.Code != 400 && rec.Code != 413 {
			t.Fatalf("status %d for %q", rec.Code, body)
		}
	})
}
