package e2e

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/superinstance/mesh/internal/api"
	"github.com/superinstance/mesh/internal/simulator"
	"github.com/superinstance/mesh/test/harness"
)

// An account owner opens / in headless Chromium, is offered a sign-in,
// pastes an API token and gets a dashboard with data in every section: the
// balance, the usage charts, an in-doubt flush, an adapter, a hub
// with its vitals chart, a run in progress, a guest with remaining quota,
// an open invite, a handover in flight and the funnel. It keeps a
// screenshot at desktop and at phone width; at phone width nothing is wider
// than the screen.
func TestBrowserDashboard(t *testing.T) {
	m := harness.StartMesh(t, simulator.Options{Latency: 1500 * time.Millisecond})
	m.Account(t, "ada")
	m.Account(t, "mallory")
	seed := harness.SeedDashboard(t, m, "ada")
	harness.SeedDashboard(t, m, "mallory")
	ctx := context.Background()
	token, err := m.Store.CreateAPIToken(ctx, "ada", "browser")
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer((&api.Server{Store: m.Store, Temporal: m.Client}).Handler())
	defer srv.Close()

	// A run in progress in the seeded project.
	req, _ := http.NewRequest("POST", srv.URL+"/v1/consensus",
		strings.NewReader(`{"prompt":"Which contract clause is riskier? [sim:disagree]","project":"`+seed.Project+`","max_rounds":3,"placement":"cloud"}`))
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var started struct {
		WorkflowID string `json:"workflow_id"`
	}
	_ = json.NewDecoder(resp.Body).Decode(&started)
	resp.Body.Close()
	if resp.StatusCode != 202 {
		t.Fatalf("start: %d", resp.StatusCode)
	}
	defer func() {
		ctx, cancel := context.WithTimeout(ctx, time.Minute)
		defer cancel()
		_ = m.Client.GetWorkflow(ctx, started.WorkflowID, "").Get(ctx, nil)
	}()

	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(chromium(t)), chromedp.NoSandbox,
		chromedp.DisableGPU, chromedp.WindowSize(1200, 1400))
	actx, cancelAlloc := chromedp.NewExecAllocator(ctx, opts...)
	defer cancelAlloc()
	bctx, cancelBrowser := chromedp.NewContext(actx)
	defer cancelBrowser()
	bctx, cancel := context.WithTimeout(bctx, 2*time.Minute)
	defer cancel()

	var signin string
	if err := chromedp.Run(bctx,
		chromedp.Navigate(srv.URL+"/"),
		chromedp.WaitVisible("#signin-form", chromedp.ByID),
		chromedp.Text("#signin", &signin, chromedp.ByID),
		// A wrong token is answered on the page.
		chromedp.SendKeys("#token", "si_not_a_token", chromedp.ByID),
		chromedp.Click("#signin-form button", chromedp.ByQuery),
		chromedp.WaitVisible(`//p[@id="signin-error" and string-length(normalize-space()) > 0]`),
	); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(signin, "si login") || !strings.Contains(signin, "si whoami") {
		t.Fatalf("the sign-in page does not say how to get a token: %q", signin)
	}
	var wrong string
	if err := chromedp.Run(bctx, chromedp.Text("#signin-error", &wrong, chromedp.ByID)); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(wrong, "token") {
		t.Fatalf("a wrong token: %q", wrong)
	}

	var account, balance, flushes, hubs, projects, guests, handovers, funnel string
	var svgs, polylines, bars int
	if err := chromedp.Run(bctx,
		chromedp.SetValue("#token", token, chromedp.ByID),
		chromedp.Click("#signin-form button", chromedp.ByQuery),
		chromedp.WaitVisible("#account", chromedp.ByID),
		chromedp.Text("#account", &account, chromedp.ByID),
		chromedp.Text("#balance", &balance, chromedp.ByID),
		chromedp.Text("#flushes", &flushes, chromedp.ByID),
		chromedp.Text("#hubs", &hubs, chromedp.ByID),
		chromedp.Text("#projects", &projects, chromedp.ByID),
		chromedp.Text("#guests", &guests, chromedp.ByID),
		chromedp.Text("#handovers", &handovers, chromedp.ByID),
		chromedp.Text("#funnel", &funnel, chromedp.ByID),
		chromedp.Evaluate(`document.querySelectorAll("#usage svg").length`, &svgs),
		chromedp.Evaluate(`document.querySelectorAll("#usage svg rect").length`, &bars),
		chromedp.Evaluate(`document.querySelectorAll("#hubs svg polyline").length`, &polylines),
	); err != nil {
		t.Fatal(err)
	}
	shot(t, bctx, "browser-dashboard.png")
	all := strings.Join([]string{balance, flushes, hubs, projects, guests, handovers, funnel}, "\n")
	for _, want := range []string{"active", "credit ceiling", "$100.00", "in doubt", seed.InDoubtFlush.StripeIdentifier,
		seed.Device, "GPU load", seed.Project, "Which contract clause is riskier?", "of $2.00", "$0.50", seed.Recipient,
		"guest's first run", "first invoice paid"} {
		if !strings.Contains(all, want) {
			t.Errorf("the dashboard lacks %q", want)
		}
	}
	if account != "ada" || svgs != 2 || bars < 6 || polylines != 3 {
		t.Errorf("account %q, %d usage charts with %d bars, %d vitals lines", account, svgs, bars, polylines)
	}
	if strings.Contains(strings.ToLower(all), "mallory") {
		t.Errorf("ada's dashboard shows mallory's")
	}

	// At a phone's width the page fits the screen.
	var overflow int
	if err := chromedp.Run(bctx,
		chromedp.EmulateViewport(390, 844, chromedp.EmulateScale(2)),
		chromedp.Reload(),
		chromedp.WaitVisible("#account", chromedp.ByID),
		chromedp.Evaluate(`document.documentElement.scrollWidth - document.documentElement.clientWidth`, &overflow),
	); err != nil {
		t.Fatal(err)
	}
	shot(t, bctx, "browser-dashboard-phone.png")
	if overflow > 0 {
		t.Errorf("at phone width the page is %d px wider than the screen", overflow)
	}

	// Signing out leads back to the sign-in page.
	if err := chromedp.Run(bctx,
		chromedp.Click("#signout", chromedp.ByID),
		chromedp.WaitVisible("#signin-form", chromedp.ByID),
	); err != nil {
		t.Fatal(err)
	}
}
