package api_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/superinstance/mesh/internal/api"
	"github.com/superinstance/mesh/internal/simulator"
	"github.com/superinstance/mesh/internal/store"
	"github.com/superinstance/mesh/test/harness"
)

// A handover that waits for the new owner's payment method is in flight
// on both dashboards; its payment link is on the new owner's alone. Closed
// handovers, however many, are not listed.
func TestDashboardShowsHandoversAwaitingPayment(t *testing.T) {
	m := harness.StartMesh(t, simulator.Options{})
	m.Account(t, "host")
	ctx := context.Background()
	if _, err := m.Store.CreateAccount(ctx, "ada", "ada@example.com"); err != nil {
		t.Fatal(err)
	}
	for i := range 25 {
		p := fmt.Sprintf("old-%02d", i)
		if _, err := m.Store.ClaimProject(ctx, p, "host"); err != nil {
			t.Fatal(err)
		}
		h, err := m.Store.CreateHandover(ctx, store.Handover{ID: "ho-" + p, Project: p, Host: "host", Recipient: "ada@example.com", ExpiresAt: time.Now().Add(time.Hour)})
		if err != nil {
			t.Fatal(err)
		}
		if ok, err := m.Store.CloseHandover(ctx, h.ID, store.HandoverDeclined, ""); !ok || err != nil {
			t.Fatalf("decline: %v %v", ok, err)
		}
	}
	if _, err := m.Store.ClaimProject(ctx, "atlas", "host"); err != nil {
		t.Fatal(err)
	}
	h, err := m.Store.CreateHandover(ctx, store.Handover{ID: "ho-atlas", Project: "atlas", Host: "host", Recipient: "ada@example.com", ExpiresAt: time.Now().Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Store.AcceptHandover(ctx, h.ID, store.HandoverAcceptance{Account: "ada", Request: "r-atlas"}, time.Now()); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Store.AwaitPayment(ctx, h.ID); err != nil {
		t.Fatal(err)
	}
	const link = "https://checkout.stripe.test/c/pay/cs_test_atlas"
	if err := m.Store.AddPaymentSession(ctx, h.ID, store.PaymentSession{ID: "cs_test_atlas", Customer: "cus_ada", URL: link, ExpiresAt: time.Now().Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	hnd := (&api.Server{Store: m.Store, Temporal: m.Client}).Handler()
	for _, who := range []string{"host", "ada"} {
		tok, _ := m.Store.CreateAPIToken(ctx, who, "")
		rec := send(hnd, "GET", "/v1/dashboard", "", nil, map[string]string{"Authorization": "Bearer " + tok})
		var d struct {
			Handovers []struct {
				ID         string `json:"id"`
				State      string `json:"state"`
				PaymentURL string `json:"payment_url"`
			} `json:"handovers"`
		}
		if err := json.Unmarshal(rec.Body.Bytes(), &d); rec.Code != 200 || err != nil {
			t.Fatalf("%s's dashboard: %d %v %s", who, rec.Code, err, rec.Body.String())
		}
		if len(d.Handovers) != 1 || d.Handovers[0].ID != h.ID || d.Handovers[0].State != store.HandoverAwaitingPayment {
			t.Fatalf("%s's dashboard lists handovers %+v, want only %s awaiting payment", who, d.Handovers, h.ID)
		}
		want := map[string]string{"ada": link}[who]
		if got := d.Handovers[0].PaymentURL; got != want {
			t.Fatalf("%s's dashboard gives payment link %q, want %q", who, got, want)
		}
		page := send(hnd, "GET", "/", "", []*http.Cookie{signInAccount(t, m, hnd, who)}, nil).Body.String()
		_, page, _ = strings.Cut(page, `<section id="handovers"`)
		page, _, _ = strings.Cut(page, "</section>")
		if !strings.Contains(page, "atlas") || strings.Contains(page, "old-0") || strings.Contains(page, link) != (want != "") {
			t.Fatalf("%s's dashboard page (payment link shown: %v, want %v):\n%s", who, strings.Contains(page, link), want != "", page)
		}
	}
}
