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

	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"

	"github.com/superinstance/mesh/internal/api"
	"github.com/superinstance/mesh/internal/runner"
	"github.com/superinstance/mesh/internal/simulator"
	"github.com/superinstance/mesh/internal/store"
	"github.com/superinstance/mesh/test/harness"
)

// browserEnv is a mesh with the API on an HTTP server and a headless Chromium.
type browserEnv struct {
	m     *harness.Mesh
	srv   *httptest.Server
	alloc context.Context
}

func newBrowserEnv(t *testing.T, latency time.Duration) *browserEnv {
	t.Helper()
	m := harness.StartMesh(t, simulator.Options{Latency: latency})
	srv := httptest.NewServer((&api.Server{Store: m.Store, Temporal: m.Client, TemporalUIURL: "http://temporal-ui.example:8233"}).Handler())
	t.Cleanup(srv.Close)
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(chromium(t)), chromedp.NoSandbox,
		chromedp.DisableGPU, chromedp.WindowSize(1100, 900))
	actx, cancel := chromedp.NewExecAllocator(context.Background(), opts...)
	t.Cleanup(cancel)
	return &browserEnv{m: m, srv: srv, alloc: actx}
}

// tab is a fresh browser profile (its own cookies) with a deadline.
func (e *browserEnv) tab(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := chromedp.NewContext(e.alloc)
	t.Cleanup(cancel)
	ctx, cancelT := context.WithTimeout(ctx, 2*time.Minute)
	t.Cleanup(cancelT)
	return ctx
}

// shot keeps a full-page screenshot in the test's artifacts.
func shot(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	var b []byte
	if err := chromedp.Run(ctx, chromedp.FullScreenshot(&b, 100)); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(artifacts(t), name)
	if err := os.WriteFile(out, b, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s (%d bytes)", out, len(b))
}

// start starts a consensus as token and returns its id.
func (e *browserEnv) start(t *testing.T, token, body string) string {
	t.Helper()
	req, _ := http.NewRequest("POST", e.srv.URL+"/v1/consensus", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var r struct {
		WorkflowID string `json:"workflow_id"`
	}
	_ = json.NewDecoder(resp.Body).Decode(&r)
	if resp.StatusCode != 202 {
		t.Fatalf("start: %d", resp.StatusCode)
	}
	return r.WorkflowID
}

func (e *browserEnv) invite(t *testing.T, project, role string) string {
	t.Helper()
	tok, _, err := runner.StartInvite(context.Background(), e.m.Store, e.m.Client, store.Invite{Project: project, Host: "host", Role: role,
		Quota: 2_000_000, ExpiresAt: time.Now().Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// The owner watches a run on the live page: while it runs, the step in
// progress with its ticking time and the chart of the scores so far; after
// it, the answer above the fold, the Arbiter's reasoning, every step's
// placement, model, tokens, cost and time, and the Temporal link. The
// project link leads to the project page, signed in.
func TestBrowserLivePageDuringAndAfterARun(t *testing.T) {
	e := newBrowserEnv(t, 500*time.Millisecond)
	e.m.Account(t, "host")
	ctx := context.Background()
	hostToken, err := e.m.Store.CreateAPIToken(ctx, "host", "")
	if err != nil {
		t.Fatal(err)
	}
	id := e.start(t, hostToken, `{"prompt":"Which launch plan is safer? [sim:disagree]","project":"studio","max_rounds":3}`)

	b := e.tab(t)
	var elapsed1, elapsed2, what string
	var points int
	if err := chromedp.Run(b,
		chromedp.Navigate(e.srv.URL+"/c/"+id),
		chromedp.WaitVisible("#signin", chromedp.ByID),
		chromedp.SendKeys("#token", hostToken, chromedp.ByID),
		chromedp.Click("#signin-form button", chromedp.ByQuery),
		chromedp.WaitVisible("#current", chromedp.ByID),
		chromedp.Text("#current-what", &what, chromedp.ByID),
		chromedp.Text("#current-elapsed", &elapsed1, chromedp.ByID),
		chromedp.Sleep(300*time.Millisecond),
		chromedp.Text("#current-elapsed", &elapsed2, chromedp.ByID),
	); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(what, "is working") || !strings.HasSuffix(elapsed1, " s") || elapsed1 == elapsed2 {
		t.Fatalf("step in progress %q, elapsed %q then %q (not ticking)", what, elapsed1, elapsed2)
	}
	// The chart while the run goes on: a point per scored round, under
	// the threshold line.
	if err := chromedp.Run(b,
		chromedp.WaitVisible("#chart-svg .point", chromedp.ByQuery),
		chromedp.Evaluate(`document.querySelectorAll("#chart-svg .point").length`, &points),
	); err != nil {
		t.Fatal(err)
	}
	var stillRunning bool
	if err := chromedp.Run(b, chromedp.Evaluate(`document.body.dataset.status === "running"`, &stillRunning)); err != nil {
		t.Fatal(err)
	}
	if !stillRunning || points < 1 {
		t.Fatalf("during the run: running %v, %d chart points", stillRunning, points)
	}
	shot(t, b, "live-during-run.png")

	var status, arbiterNote, temporal, costLine string
	var steps, costs, thresholds int
	var answerTop, fold float64
	var currentHidden bool
	if err := chromedp.Run(b,
		chromedp.WaitVisible(`body[data-done="true"]`, chromedp.ByQuery),
		chromedp.Text("#status", &status, chromedp.ByID),
		chromedp.Text("#arbiter-note", &arbiterNote, chromedp.ByID),
		chromedp.Text("#cost-line", &costLine, chromedp.ByID),
		chromedp.Evaluate(`document.getElementById("temporal-link").href`, &temporal),
		chromedp.Evaluate(`document.querySelectorAll("#step-rows tr").length`, &steps),
		chromedp.Evaluate(`[...document.querySelectorAll("#step-rows tr td:nth-child(5)")].filter(td => /^\$\d+\.\d{2,6}$/.test(td.textContent)).length`, &costs),
		chromedp.Evaluate(`document.querySelectorAll("#chart-svg .point").length`, &points),
		chromedp.Evaluate(`document.querySelectorAll("#chart-svg .threshold").length`, &thresholds),
		chromedp.Evaluate(`document.getElementById("final").getBoundingClientRect().top`, &answerTop),
		chromedp.Evaluate(`window.innerHeight`, &fold),
		chromedp.Evaluate(`document.getElementById("current").offsetParent === null`, &currentHidden),
	); err != nil {
		t.Fatal(err)
	}
	shot(t, b, "live-after-run.png")
	if strings.ToLower(status) != "arbiter resolved" || arbiterNote == "" || !currentHidden {
		t.Fatalf("final: status %q, arbiter reasoning %q, step in progress hidden %v", status, arbiterNote, currentHidden)
	}
	// Pathos, three rounds of Logos and Ethos, the Arbiter: each with its
	// cost; three points against one threshold line.
	if steps != 8 || costs != 8 || points != 3 || thresholds != 1 || !strings.Contains(costLine, "cost $") {
		t.Fatalf("steps %d (with cost %d), chart points %d, threshold lines %d, %q", steps, costs, points, thresholds, costLine)
	}
	if answerTop <= 0 || answerTop > fold {
		t.Fatalf("the answer is below the fold: top %.0f, window %.0f", answerTop, fold)
	}
	if temporal != "http://temporal-ui.example:8233/namespaces/default/workflows/"+id {
		t.Fatalf("temporal link %q", temporal)
	}
	var row string
	if err := chromedp.Run(b, chromedp.Text(`#step-rows tr:nth-child(2)`, &row, chromedp.ByQuery)); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(row, "Round 1 · Logos") || !strings.Contains(row, "cloud") || !strings.Contains(row, simulator.ModelSmall) || !strings.Contains(row, " in, ") {
		t.Fatalf("logos row %q", row)
	}

	// The project link in the header: the project page, signed in.
	var at, list string
	if err := chromedp.Run(b,
		chromedp.Click("#project-link", chromedp.ByID),
		chromedp.WaitVisible("#runs", chromedp.ByID),
		chromedp.Location(&at),
		chromedp.Text("#runs", &list, chromedp.ByID),
	); err != nil {
		t.Fatal(err)
	}
	shot(t, b, "project-owner.png")
	if !strings.HasSuffix(at, "/p/studio") || !strings.Contains(list, "Which launch plan is safer?") || !strings.Contains(strings.ToLower(list), "arbiter resolved") ||
		!strings.Contains(list, "$") {
		t.Fatalf("project page at %s: %q", at, list)
	}
}

// Guests in the browser: an editor guest gets the Ask form on the project
// and live pages and starts a run; a viewer guest gets neither, and the API
// refuses the ask the viewer's page would make.
func TestBrowserGuestsAsEditorAndViewer(t *testing.T) {
	e := newBrowserEnv(t, 0)
	e.m.Account(t, "host")
	ctx := context.Background()
	hostToken, _ := e.m.Store.CreateAPIToken(ctx, "host", "")
	if _, err := e.m.Store.ClaimProject(ctx, "studio", "host"); err != nil {
		t.Fatal(err)
	}
	done := e.start(t, hostToken, `{"prompt":"Ship on Friday? [sim:agree]","project":"studio"}`)
	if err := e.m.Client.GetWorkflow(ctx, done, "").Get(ctx, nil); err != nil {
		t.Fatal(err)
	}

	ed := e.tab(t)
	var viewer, runs string
	if err := chromedp.Run(ed,
		chromedp.Navigate(e.srv.URL+"/join/"+e.invite(t, "studio", store.RoleEditor)),
		chromedp.Click("#join", chromedp.ByID),
		chromedp.WaitVisible("#guest", chromedp.ByID),
		chromedp.WaitVisible("#ask-form", chromedp.ByID),
		chromedp.Text("#viewer", &viewer, chromedp.ByID),
		chromedp.Text("#runs", &runs, chromedp.ByID),
	); err != nil {
		t.Fatal(err)
	}
	shot(t, ed, "project-editor-guest.png")
	if !strings.Contains(viewer, "editor guest of host") || !strings.Contains(runs, "Ship on Friday?") {
		t.Fatalf("editor guest's project page: %q %q", viewer, runs)
	}
	var label string
	var askHidden, temporalHidden bool
	if err := chromedp.Run(ed,
		chromedp.Navigate(e.srv.URL+"/c/"+done),
		chromedp.WaitVisible(`body[data-done="true"]`, chromedp.ByQuery),
		chromedp.Text("#viewer", &label, chromedp.ByID),
		chromedp.Evaluate(`document.getElementById("ask").hidden`, &askHidden),
		chromedp.Evaluate(`document.getElementById("temporal-link").offsetParent === null`, &temporalHidden),
	); err != nil {
		t.Fatal(err)
	}
	if askHidden || strings.Contains(label, "read-only") || !temporalHidden {
		t.Fatalf("editor guest on the live page: ask hidden %v, label %q, Temporal link hidden %v", askHidden, label, temporalHidden)
	}
	var started string
	if err := chromedp.Run(ed,
		chromedp.SendKeys("#prompt", "And on Monday? [sim:agree]", chromedp.ByID),
		chromedp.Click("#ask-form button", chromedp.ByQuery),
	); err != nil {
		t.Fatal(err)
	}
	// The form opens the new run's page.
	for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if err := chromedp.Run(ed, chromedp.Location(&started)); err == nil && !strings.HasSuffix(started, done) {
			break
		}
	}
	if err := chromedp.Run(ed, chromedp.WaitVisible(`body[data-done="true"]`, chromedp.ByQuery)); err != nil {
		t.Fatal(err)
	}
	if strings.HasSuffix(started, done) || !strings.Contains(started, "/c/consensus-") {
		t.Fatalf("the editor's ask went to %s", started)
	}

	vw := e.tab(t)
	var vlabel string
	var vAskHidden, pageForm bool
	var refused int
	if err := chromedp.Run(vw,
		chromedp.Navigate(e.srv.URL+"/join/"+e.invite(t, "studio", store.RoleViewer)),
		chromedp.Click("#join", chromedp.ByID),
		chromedp.WaitVisible("#guest", chromedp.ByID),
		chromedp.Evaluate(`!!document.getElementById("ask-form")`, &pageForm),
		chromedp.Navigate(e.srv.URL+"/c/"+done),
		chromedp.WaitVisible(`body[data-done="true"]`, chromedp.ByQuery),
		chromedp.Text("#viewer", &vlabel, chromedp.ByID),
		chromedp.Evaluate(`document.getElementById("ask").hidden`, &vAskHidden),
		chromedp.Evaluate(`fetch("/v1/consensus", {method: "POST", headers: {"Content-Type": "application/json"},
			body: JSON.stringify({prompt: "sneak one in", project: "studio"})}).then(r => r.status)`, &refused,
			func(p *runtime.EvaluateParams) *runtime.EvaluateParams { return p.WithAwaitPromise(true) }),
	); err != nil {
		t.Fatal(err)
	}
	shot(t, vw, "live-viewer-guest.png")
	if pageForm || !vAskHidden || !strings.Contains(vlabel, "read-only") || refused != 403 {
		t.Fatalf("viewer guest: project ask form %v, live ask hidden %v, label %q, ask answered %d", pageForm, vAskHidden, vlabel, refused)
	}
}

// A failed run says what failed in one sentence, with the details folded
// away, and no Temporal internals anywhere on the page.
func TestBrowserFailedRun(t *testing.T) {
	e := newBrowserEnv(t, 0)
	e.m.Account(t, "host")
	hostToken, _ := e.m.Store.CreateAPIToken(context.Background(), "host", "")
	id := e.start(t, hostToken, `{"prompt":"hi [sim:malformed]"}`)
	b := e.tab(t)
	var sentence, page string
	var open bool
	if err := chromedp.Run(b,
		chromedp.Navigate(e.srv.URL+"/c/"+id),
		chromedp.WaitVisible("#signin", chromedp.ByID),
		chromedp.SendKeys("#token", hostToken, chromedp.ByID),
		chromedp.Click("#signin-form button", chromedp.ByQuery),
		chromedp.WaitVisible("#failure", chromedp.ByID),
		chromedp.WaitVisible(`body[data-done="true"]`, chromedp.ByQuery),
		chromedp.Text("#error", &sentence, chromedp.ByID),
		chromedp.Evaluate(`document.getElementById("error-details").open`, &open),
		chromedp.Evaluate(`document.body.innerText`, &page),
	); err != nil {
		t.Fatal(err)
	}
	shot(t, b, "live-failed-run.png")
	if !strings.HasPrefix(sentence, "Round 1 failed: ") || strings.Count(sentence, ".") > 2 || open {
		t.Fatalf("failure sentence %q (details open %v)", sentence, open)
	}
	if strings.Count(page, "unusable after one repair attempt") != 1 {
		t.Fatalf("the failure is said %d times: %s", strings.Count(page, "unusable after one repair attempt"), page)
	}
	for _, internal := range []string{"scheduledEventID", "identity", "activity error", "workflowID"} {
		if strings.Contains(page, internal) {
			t.Fatalf("the page shows %q: %s", internal, page)
		}
	}
}

// Every page error is the shared HTML page saying what happened and what
// to do.
func TestBrowserErrorPages(t *testing.T) {
	e := newBrowserEnv(t, 0)
	e.m.Account(t, "host")
	e.m.Account(t, "other")
	ctx := context.Background()
	otherToken, _ := e.m.Store.CreateAPIToken(ctx, "other", "")
	if _, err := e.m.Store.ClaimProject(ctx, "studio", "host"); err != nil {
		t.Fatal(err)
	}
	used := e.invite(t, "studio", store.RoleViewer)
	b := e.tab(t)
	// Accept an invite (this browser becomes a guest of studio), then use it again.
	if err := chromedp.Run(b,
		chromedp.Navigate(e.srv.URL+"/join/"+used),
		chromedp.Click("#join", chromedp.ByID),
		chromedp.WaitVisible("#guest", chromedp.ByID),
	); err != nil {
		t.Fatal(err)
	}
	signedOut := e.tab(t)
	member := e.tab(t)
	if err := chromedp.Run(member, chromedp.Navigate(e.srv.URL+"/p/studio"), chromedp.WaitVisible("#signin-form", chromedp.ByID),
		chromedp.SendKeys("#token", otherToken, chromedp.ByID), chromedp.Click("#signin-form button", chromedp.ByQuery),
		chromedp.Sleep(500*time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		tab  context.Context
		path string
		says string
	}{
		{"bad-invite", signedOut, "/join/si_inv_nothing", "ask the host for a new one"},
		{"used-invite", b, "/join/" + used, "ask the host for a new invite"},
		{"bad-handover", signedOut, "/handover/si_ho_nothing", "newest link in your email"},
		{"unknown-run", b, "/c/consensus-nothing", "the project page lists its runs"},
		{"hidden-project-guest", b, "/p/elsewhere", "ask the project's owner for an invite"},
		{"hidden-project-account", member, "/p/studio", "ask the project's owner for an invite"},
		{"signed-out", signedOut, "/p/studio", "Sign in with an API token"},
		{"no-such-page", signedOut, "/no/such/page", "Check the link"},
	} {
		var what, do string
		if err := chromedp.Run(c.tab,
			chromedp.Navigate(e.srv.URL+c.path),
			chromedp.WaitVisible("#problem", chromedp.ByID),
			chromedp.Text("#problem-what", &what, chromedp.ByID),
			chromedp.Text("#problem-do", &do, chromedp.ByID),
		); err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		shot(t, c.tab, "error-"+c.name+".png")
		if what == "" || !strings.Contains(do, c.says) {
			t.Fatalf("%s: %q / %q, want %q", c.name, what, do, c.says)
		}
	}
	// A signed-out visitor of an unknown run signs in on the live page, then
	// gets the page saying there is no such run.
	late := e.tab(t)
	var what string
	if err := chromedp.Run(late,
		chromedp.Navigate(e.srv.URL+"/c/consensus-nothing"),
		chromedp.WaitVisible("#signin", chromedp.ByID),
		chromedp.SendKeys("#token", otherToken, chromedp.ByID),
		chromedp.Click("#signin-form button", chromedp.ByQuery),
		chromedp.WaitVisible("#problem", chromedp.ByID),
		chromedp.Text("#problem-what", &what, chromedp.ByID),
	); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(what, "no run consensus-nothing") {
		t.Fatalf("unknown run after signing in: %q", what)
	}
}
