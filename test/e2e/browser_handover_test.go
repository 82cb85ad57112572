package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/superinstance/mesh/internal/api"
	"github.com/superinstance/mesh/internal/runner"
	"github.com/superinstance/mesh/internal/simulator"
	"github.com/superinstance/mesh/internal/store"
	"github.com/superinstance/mesh/test/harness"

	"net/http/httptest"
)

// The recipient opens the handover link in headless Chromium: the offer
// says what they get (their copy's name, and why it is not the project's)
// and pay, in dollars and cents. They accept as a new account: the page
// signs the browser in, shows the Stripe page for the payment method and
// a way on to their account at /.
func TestBrowserHandoverOfferAndAccept(t *testing.T) {
	d := harness.NewStripeDouble(t)
	mb := harness.Mailpit(t)
	m := harness.StartMesh(t, simulator.Options{}, harness.WithStripe(d.URL), harness.WithHandovers(mb))
	m.Account(t, "host")
	ctx := context.Background()
	project := harness.UniqueID("acme")
	if _, err := m.Store.ClaimProject(ctx, project, "host"); err != nil {
		t.Fatal(err)
	}
	to := harness.UniqueID("ada") + "@example.com"
	h, err := runner.StartHandover(ctx, m.Store, m.Client, "host", project, to)
	if err != nil {
		t.Fatal(err)
	}
	link := harness.Link(t, mb.WaitFor(t, to, 1, 30*time.Second)[0].Text, "handover")
	srv := httptest.NewServer((&api.Server{Store: m.Store, Temporal: m.Client}).Handler())
	defer srv.Close()
	page := srv.URL + link[strings.Index(link, "/handover/"):]

	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(chromium(t)), chromedp.NoSandbox,
		chromedp.DisableGPU, chromedp.WindowSize(1000, 1200))
	actx, cancelAlloc := chromedp.NewExecAllocator(ctx, opts...)
	defer cancelAlloc()
	bctx, cancelBrowser := chromedp.NewContext(actx)
	defer cancelBrowser()
	bctx, cancel := context.WithTimeout(bctx, 2*time.Minute)
	defer cancel()

	var gets, price, copyName string
	if err := chromedp.Run(bctx,
		chromedp.Navigate(page),
		chromedp.WaitVisible("#accept", chromedp.ByID),
		chromedp.Text("#gets", &gets, chromedp.ByID),
		chromedp.Text("#price", &price, chromedp.ByID),
		chromedp.Text("#copy-name", &copyName, chromedp.ByID),
	); err != nil {
		t.Fatal(err)
	}
	shot(t, bctx, "browser-handover-offer.png")
	if !strings.Contains(price, "$30.00 for the first year, then $60.00 a year") || strings.Contains(price, "0000") {
		t.Fatalf("offer price %q", price)
	}
	if copyName != project+"-2" || !strings.Contains(gets, "not "+project+": "+project+" stays with host") || !strings.Contains(gets, "0 adapters") {
		t.Fatalf("offer: copy %q, gets %q", copyName, gets)
	}

	account := harness.UniqueID("ada")
	var result, renamed, pay, dashboard string
	var ok bool
	if err := chromedp.Run(bctx,
		chromedp.SendKeys("#account", account, chromedp.ByID),
		chromedp.Click("#accept", chromedp.ByID),
		chromedp.WaitVisible("#result", chromedp.ByID),
		chromedp.Text("#result", &result, chromedp.ByID),
		chromedp.Text("#renamed", &renamed, chromedp.ByID),
		chromedp.AttributeValue("#pay", "href", &pay, &ok, chromedp.ByID),
		chromedp.AttributeValue("#dashboard", "href", &dashboard, nil, chromedp.ByID),
	); err != nil {
		t.Fatal(err)
	}
	shot(t, bctx, "browser-handover-accepted.png")
	if !strings.Contains(result, "is yours") || !strings.Contains(renamed, project+"-2 because "+project+" stays with host") {
		t.Fatalf("accepted: %q, %q", result, renamed)
	}
	sessions := d.Checkouts("")
	if !ok || len(sessions) != 1 || pay != sessions[0].URL || sessions[0].Mode != "setup" {
		t.Fatalf("payment link %q; the double made %+v", pay, sessions)
	}
	if dashboard != "/" {
		t.Fatalf("the way on is %q, want /", dashboard)
	}
	// The browser is signed in as the new account: /v1/me answers for it,
	// and the link opened again shows where the handover stands.
	var me, again string
	if err := chromedp.Run(bctx,
		chromedp.Navigate(srv.URL+"/v1/me"),
		chromedp.Text("body", &me, chromedp.ByQuery),
		chromedp.Navigate(page),
		chromedp.WaitVisible("#pay", chromedp.ByID),
		chromedp.Text("#result", &again, chromedp.ByID),
	); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(me, `"`+account+`"`) || !strings.Contains(again, "is yours") {
		t.Fatalf("/v1/me %q; the link again %q", me, again)
	}
	if row, _ := m.Store.HandoverByID(ctx, h.ID); row.State != store.HandoverAwaitingPayment || row.NewOwner != account {
		t.Fatalf("handover %+v", row)
	}
}
