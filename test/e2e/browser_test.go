package e2e

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/superinstance/mesh/internal/api"
	"github.com/superinstance/mesh/internal/money"
	"github.com/superinstance/mesh/internal/runner"
	"github.com/superinstance/mesh/internal/simulator"
	"github.com/superinstance/mesh/internal/store"
	"github.com/superinstance/mesh/test/harness"
)

// chromium finds Debian's chromium (installed by `make deps`), or the
// browser SI_CHROMIUM names.
func chromium(t *testing.T) string {
	t.Helper()
	for _, p := range []string{os.Getenv("SI_CHROMIUM"), "/usr/bin/chromium", "/usr/bin/chromium-browser"} {
		if p != "" {
			if _, err := os.Stat(p); err == nil {
				return p
			}
		}
	}
	t.Fatal("chromium not found: run `make deps` (apt-get install chromium) or set SI_CHROMIUM")
	return ""
}

// artifacts is where the browser test keeps its screenshot: $SI_ARTIFACTS,
// else artifacts/ at the top of the checkout.
func artifacts(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("SI_ARTIFACTS")
	if dir == "" {
		dir = filepath.Join("..", "..", "artifacts")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// A guest opens an invite link in headless Chromium, lands on the project
// page, then watches a consensus stream in on the live page: read-only,
// with their remaining quota, each round's Logos and Ethos, the scores and
// the Arbiter.
func TestBrowserGuestWatchesConsensus(t *testing.T) {
	m := harness.StartMesh(t, simulator.Options{Latency: 600 * time.Millisecond})
	m.Account(t, "host")
	ctx := context.Background()
	hostToken, err := m.Store.CreateAPIToken(ctx, "host", "")
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer((&api.Server{Store: m.Store, Temporal: m.Client}).Handler())
	defer srv.Close()
	if _, err := m.Store.ClaimProject(ctx, "studio", "host"); err != nil {
		t.Fatal(err)
	}
	tok, _, err := runner.StartInvite(ctx, m.Store, m.Client, store.Invite{Project: "studio", Host: "host", Role: store.RoleViewer,
		Quota: 250_000, ExpiresAt: time.Now().Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}

	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(chromium(t)), chromedp.NoSandbox,
		chromedp.DisableGPU, chromedp.WindowSize(1100, 1400))
	actx, cancelAlloc := chromedp.NewExecAllocator(ctx, opts...)
	defer cancelAlloc()
	bctx, cancelBrowser := chromedp.NewContext(actx)
	defer cancelBrowser()
	bctx, cancel := context.WithTimeout(bctx, 2*time.Minute)
	defer cancel()

	// The invite link: a page whose button accepts (opening the link
	// alone, as a preview does, leaves the invite open), then a guest
	// session and the project page.
	var landed, page string
	if err := chromedp.Run(bctx,
		chromedp.Navigate(srv.URL+"/join/"+tok),
		chromedp.WaitVisible("#join", chromedp.ByID),
	); err != nil {
		t.Fatal(err)
	}
	if inv, err := m.Store.InviteByToken(ctx, tok); err != nil || inv.State != store.InvitePending {
		t.Fatalf("opening the link spent the invite: %+v, %v", inv, err)
	}
	if err := chromedp.Run(bctx,
		chromedp.Click("#join", chromedp.ByID),
		chromedp.WaitVisible("#guest", chromedp.ByID),
		chromedp.Location(&landed),
		chromedp.Text("#guest", &page, chromedp.ByID),
	); err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(landed, "/p/studio") || !strings.Contains(page, "viewer guest of host") || !strings.Contains(page, "$0.25") {
		t.Fatalf("landed on %s: %q", landed, page)
	}

	// The host starts a run; the guest opens its page while it runs.
	req, _ := http.NewRequest("POST", srv.URL+"/v1/consensus",
		strings.NewReader(`{"prompt":"Which launch plan is safer? [sim:disagree]","project":"studio","max_rounds":3}`))
	req.Header.Set("Authorization", "Bearer "+hostToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var started struct {
		WorkflowID string `json:"workflow_id"`
		PageURL    string `json:"page_url"`
	}
	_ = json.NewDecoder(resp.Body).Decode(&started)
	resp.Body.Close()
	if resp.StatusCode != 202 {
		t.Fatalf("start: %d", resp.StatusCode)
	}
	// The project page lists the run while it is in progress (it refreshes
	// itself every few seconds; the test reloads it sooner); the guest follows
	// the link to the live page.
	var firstStatus, at string
	listed := 0
	for deadline := time.Now().Add(20 * time.Second); listed == 0 && time.Now().Before(deadline); {
		if err := chromedp.Run(bctx,
			chromedp.Navigate(srv.URL+"/p/studio"),
			chromedp.WaitVisible("#guest", chromedp.ByID),
			chromedp.Evaluate(`document.querySelectorAll("#runs tr.running a").length`, &listed),
		); err != nil {
			t.Fatal(err)
		}
		if listed == 0 {
			time.Sleep(200 * time.Millisecond)
		}
	}
	if listed == 0 {
		t.Fatal("the project page never listed the run in progress")
	}
	if err := chromedp.Run(bctx,
		chromedp.Click("#runs tr.running a", chromedp.ByQuery),
		chromedp.WaitVisible("#status", chromedp.ByID),
		chromedp.Location(&at),
		chromedp.Text("#status", &firstStatus, chromedp.ByID),
	); err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(at, started.PageURL) {
		t.Fatalf("the project page's link went to %s, not %s", at, started.PageURL)
	}
	// The status is shown in capitals (CSS); its text is lower case.
	if strings.ToLower(firstStatus) != "running" {
		t.Fatalf("the page first showed %q; the run should still be going", firstStatus)
	}
	var status, viewer, question, answer, arbiter string
	var rounds, scored int
	var askHidden, guestsHidden bool
	if err := chromedp.Run(bctx,
		chromedp.WaitVisible(`body[data-done="true"]`, chromedp.ByQuery),
		chromedp.Text("#status", &status, chromedp.ByID),
		chromedp.Text("#viewer", &viewer, chromedp.ByID),
		chromedp.Text("#question", &question, chromedp.ByID),
		chromedp.Text("#answer", &answer, chromedp.ByID),
		chromedp.Text("#arbiter", &arbiter, chromedp.ByID),
		chromedp.Evaluate(`document.querySelectorAll(".round").length`, &rounds),
		chromedp.Evaluate(`[...document.querySelectorAll(".round-score")].filter(e => /score 0\.\d{3}/.test(e.textContent)).length`, &scored),
		chromedp.Evaluate(`document.getElementById("ask").hidden`, &askHidden),
		chromedp.Evaluate(`document.getElementById("guests").hidden`, &guestsHidden),
	); err != nil {
		t.Fatal(err)
	}
	var shot []byte
	if err := chromedp.Run(bctx, chromedp.FullScreenshot(&shot, 100)); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(artifacts(t), "browser-live-consensus.png")
	if err := os.WriteFile(out, shot, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s (%d bytes)", out, len(shot))

	if strings.ToLower(status) != "arbiter resolved" || rounds != 3 || scored != 3 || !strings.Contains(arbiter, "Arbiter") || answer == "" {
		t.Fatalf("final page: status %q, %d rounds (%d scored), arbiter %q, answer %q", status, rounds, scored, arbiter, answer)
	}
	if !strings.Contains(question, "Which launch plan is safer?") {
		t.Fatalf("question %q", question)
	}
	if !strings.Contains(viewer, "read-only") || !strings.Contains(viewer, "$0.25") {
		t.Fatalf("viewer %q", viewer)
	}
	if !askHidden || !guestsHidden {
		t.Fatalf("a read-only guest sees the ask form (%v hidden) or the guest list (%v hidden)", askHidden, guestsHidden)
	}
	// The host, signed in with an API token in a browser of their own, sees
	// the same run and the project's guests with their quotas.
	hctx, cancelHost := chromedp.NewContext(actx)
	defer cancelHost()
	hctx, cancelH := context.WithTimeout(hctx, time.Minute)
	defer cancelH()
	var guestRows string
	var hostAskHidden bool
	if err := chromedp.Run(hctx,
		chromedp.Navigate(srv.URL+started.PageURL),
		chromedp.WaitVisible("#signin", chromedp.ByID),
		chromedp.SendKeys("#token", hostToken, chromedp.ByID),
		chromedp.Click("#signin-form button", chromedp.ByQuery),
		chromedp.WaitVisible(`body[data-done="true"]`, chromedp.ByQuery),
		chromedp.WaitVisible("#guests", chromedp.ByID),
		chromedp.Text("#guest-rows", &guestRows, chromedp.ByID),
		chromedp.Evaluate(`document.getElementById("ask").hidden`, &hostAskHidden),
	); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(guestRows, "viewer") || !strings.Contains(guestRows, "$0.25") || hostAskHidden {
		t.Fatalf("host view: guests %q, ask form hidden %v", guestRows, hostAskHidden)
	}

	// The viewer spent nothing: the host paid for the host's run.
	g, err := m.Store.GuestSessions(ctx, "host")
	if err != nil || len(g) != 1 || g[0].Remaining != money.Micros(250_000) {
		t.Fatalf("guest sessions %+v, %v", g, err)
	}
}
