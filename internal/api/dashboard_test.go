package api_test

// The account dashboard's boundaries, from the attacker's side: a second
// account's session, a guest's cookie, a page on another origin.

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/superinstance/mesh/internal/api"
	"github.com/superinstance/mesh/internal/simulator"
	"github.com/superinstance/mesh/test/harness"
)

// signIn opens a browser session with a new API token of account.
func signInAccount(t *testing.T, m *harness.Mesh, h http.Handler, account string) *http.Cookie {
	t.Helper()
	tok, err := m.Store.CreateAPIToken(context.Background(), account, "")
	if err != nil {
		t.Fatal(err)
	}
	return signIn(t, h, tok)
}

// Account B's session sees all of B's affairs on / and /v1/dashboard, and
// nothing of A's: every name SeedDashboard gives A carries "alice".
func TestDashboardShowsNothingOfAnotherAccount(t *testing.T) {
	m := harness.StartMesh(t, simulator.Options{})
	m.Account(t, "alice")
	m.Account(t, "bob")
	harness.SeedDashboard(t, m, "alice")
	bob := harness.SeedDashboard(t, m, "bob")
	h := (&api.Server{Store: m.Store, Temporal: m.Client}).Handler()
	session := signInAccount(t, m, h, "bob")

	page := send(h, "GET", "/", "", []*http.Cookie{session}, map[string]string{"Accept": "text/html"})
	body := page.Body.String()
	if page.Code != 200 || !strings.HasPrefix(page.Header().Get("Content-Type"), "text/html") {
		t.Fatalf("GET / as bob: %d %s\n%s", page.Code, page.Header().Get("Content-Type"), body)
	}
	for _, want := range []string{`id="account">bob<`, bob.Project, bob.Device, bob.Adapter, bob.Recipient, bob.InDoubtFlush.StripeIdentifier,
		"in doubt", "<svg", "<polyline", " of $2.00</td>", "<td>$0.50</td>"} {
		if !strings.Contains(body, want) {
			t.Errorf("bob's dashboard lacks %q", want)
		}
	}
	if strings.Contains(strings.ToLower(body), "alice") {
		i := strings.Index(strings.ToLower(body), "alice")
		t.Errorf("bob's dashboard shows alice's: ...%s...", body[max(0, i-200):min(len(body), i+100)])
	}

	rec := send(h, "GET", "/v1/dashboard", "", []*http.Cookie{session}, nil)
	if rec.Code != 200 {
		t.Fatalf("GET /v1/dashboard as bob: %d %s", rec.Code, rec.Body.String())
	}
	if strings.Contains(strings.ToLower(rec.Body.String()), "alice") {
		t.Errorf("bob's /v1/dashboard shows alice's: %s", rec.Body.String())
	}
	var d api.Dashboard
	if err := json.Unmarshal(rec.Body.Bytes(), &d); err != nil {
		t.Fatal(err)
	}
	if d.Account != "bob" || len(d.Usage) == 0 || len(d.Flushes) != 2 || d.Flushes[0].State != "in_doubt" || len(d.Adapters) != 1 ||
		len(d.Hubs) != 1 || len(d.Hubs[0].Vitals) < 10 || len(d.Invites) != 2 || len(d.Guests) != 1 || d.Guests[0].Remaining >= d.Guests[0].Quota ||
		len(d.Handovers) != 1 || d.Funnel.Invites.Sent != 2 || d.Funnel.Invites.Opened != 1 || d.Funnel.Invites.Accepted != 1 ||
		d.Funnel.Invites.FirstRun != 1 || d.Funnel.Handovers.Started != 1 || d.Funnel.Handovers.Opened != 1 {
		t.Errorf("bob's dashboard: %+v", d)
	}
	// A suspension is shown with its reason and what lifts it.
	if _, err := m.Store.Pool.Exec(context.Background(), `UPDATE accounts SET status = 'suspended', suspended_reason = 'credit_ceiling' WHERE id = 'bob'`); err != nil {
		t.Fatal(err)
	}
	if page := send(h, "GET", "/", "", []*http.Cookie{session}, nil).Body.String(); !strings.Contains(page, `id="suspended"`) ||
		!strings.Contains(page, "reached the credit ceiling") || !strings.Contains(page, "suspended (credit_ceiling)") {
		t.Errorf("a suspended account's dashboard does not say so:\n%s", page)
	}
	// The same with bob's API token.
	tok, _ := m.Store.CreateAPIToken(context.Background(), "bob", "")
	if rec := send(h, "GET", "/v1/dashboard", "", nil, map[string]string{"Authorization": "Bearer " + tok}); rec.Code != 200 ||
		strings.Contains(strings.ToLower(rec.Body.String()), "alice") {
		t.Errorf("GET /v1/dashboard with bob's token: %d", rec.Code)
	}
}

// A guest's cookie for A's project is no way into A's dashboard: / offers
// a sign-in (and the guest's project page), /v1/dashboard is refused.
func TestGuestCookieGetsNoOwnerDashboard(t *testing.T) {
	m := harness.StartMesh(t, simulator.Options{})
	m.Account(t, "alice")
	a := harness.SeedDashboard(t, m, "alice")
	h := (&api.Server{Store: m.Store, Temporal: m.Client}).Handler()
	guest := &http.Cookie{Name: api.GuestCookie, Value: a.GuestSecret}

	page := send(h, "GET", "/", "", []*http.Cookie{guest}, map[string]string{"Accept": "text/html"})
	body := page.Body.String()
	if page.Code != 200 || !strings.Contains(body, `id="signin-form"`) || !strings.Contains(body, `href="/p/`+a.Project+`"`) {
		t.Fatalf("GET / with a guest cookie: %d\n%s", page.Code, body)
	}
	for _, secret := range []string{a.Device, a.Adapter, a.Recipient, a.InDoubtFlush.StripeIdentifier, a.OpenInvite.ID, "unbilled", "cus_alice"} {
		if strings.Contains(body, secret) {
			t.Errorf("the guest's / shows the owner's %q", secret)
		}
	}
	if rec := send(h, "GET", "/v1/dashboard", "", []*http.Cookie{guest}, nil); rec.Code != http.StatusForbidden ||
		strings.Contains(rec.Body.String(), a.Device) {
		t.Errorf("GET /v1/dashboard with a guest cookie: %d %s", rec.Code, rec.Body.String())
	}
}

// Signed out, / is a page to sign in, never a JSON error; a session that
// ended says so. Signing in and out from another site's page is refused as
// for every cookie request; / is the dashboard alone, not every path.
func TestDashboardSignInPage(t *testing.T) {
	m := harness.StartMesh(t, simulator.Options{})
	m.Account(t, "alice")
	h := (&api.Server{Store: m.Store, Temporal: m.Client, PublicURL: "https://mesh.example.com"}).Handler()

	for _, c := range [][]*http.Cookie{nil, {{Name: api.SessionCookie, Value: "si_bs_forged"}}} {
		rec := send(h, "GET", "/", "", c, map[string]string{"Accept": "text/html"})
		body := rec.Body.String()
		if rec.Code != 200 || !strings.HasPrefix(rec.Header().Get("Content-Type"), "text/html") || !strings.Contains(body, `id="signin-form"`) ||
			!strings.Contains(body, "si login") || !strings.Contains(body, "si whoami") || strings.HasPrefix(body, "{") {
			t.Fatalf("GET / with %v: %d %s\n%s", c, rec.Code, rec.Header().Get("Content-Type"), body)
		}
		if csp := rec.Header().Get("Content-Security-Policy"); !strings.Contains(csp, "frame-ancestors 'none'") || rec.Header().Get("Cache-Control") != "no-store" {
			t.Errorf("GET / may be framed or cached: CSP %q, Cache-Control %q", csp, rec.Header().Get("Cache-Control"))
		}
		if c != nil && !strings.Contains(body, "session has ended") {
			t.Errorf("a forged session is not told it ended:\n%s", body)
		}
	}
	tok, _ := m.Store.CreateAPIToken(context.Background(), "alice", "")
	evil := map[string]string{"Origin": "https://evil.example", "Content-Type": "application/json"}
	if rec := send(h, "POST", "/v1/session", `{"token":"`+tok+`"}`, nil, evil); rec.Code != http.StatusForbidden ||
		len(rec.Result().Cookies()) != 0 {
		t.Fatalf("cross-origin sign-in: %d %v", rec.Code, rec.Result().Cookies())
	}
	session := cookie(t, send(h, "POST", "/v1/session", `{"token":"`+tok+`"}`, nil,
		map[string]string{"Origin": "https://mesh.example.com", "Content-Type": "application/json"}), api.SessionCookie)
	if rec := send(h, "DELETE", "/v1/session", "", []*http.Cookie{session}, evil); rec.Code != http.StatusForbidden {
		t.Fatalf("cross-origin sign-out: %d", rec.Code)
	}
	if rec := send(h, "GET", "/", "", []*http.Cookie{session}, nil); rec.Code != 200 || !strings.Contains(rec.Body.String(), `id="account">alice<`) {
		t.Fatalf("the dashboard after a cross-origin sign-out attempt: %d", rec.Code)
	}
	if rec := send(h, "GET", "/no-such-page", "", []*http.Cookie{session}, nil); rec.Code != http.StatusNotFound {
		t.Fatalf("GET /no-such-page: %d", rec.Code)
	}
}

// The dashboard lists the runs in progress of the account's projects, with
// links to them; another account's dashboard does not.
func TestDashboardListsRunsInProgress(t *testing.T) {
	m := harness.StartMesh(t, simulator.Options{Latency: 4 * time.Second})
	// Accounts of their own: the package's meshes share Temporal.
	aliceID, bobID := harness.UniqueID("alice"), harness.UniqueID("bob")
	m.Account(t, aliceID)
	m.Account(t, bobID)
	h := (&api.Server{Store: m.Store, Temporal: m.Client}).Handler()
	alice, _ := m.Store.CreateAPIToken(context.Background(), aliceID, "")
	studio := aliceID + "-studio"
	var ids []string
	for _, body := range []string{`{"prompt":"a studio question [sim:agree]","project":"` + studio + `","placement":"cloud"}`,
		`{"prompt":"a default question [sim:agree]","placement":"cloud"}`} {
		code, r := call(t, h, "POST", "/v1/consensus", alice, body)
		if code != 202 {
			t.Fatalf("start: %d %+v", code, r.Error)
		}
		ids = append(ids, r.WorkflowID)
	}
	aliceCookie, bobCookie := signInAccount(t, m, h, aliceID), signInAccount(t, m, h, bobID)
	// A run whose state query times out on a loaded worker is left off one
	// load of the page and listed by a later one (the page refreshes
	// itself); the runs take 16 s or more.
	var page string
	for deadline := time.Now().Add(12 * time.Second); ; time.Sleep(300 * time.Millisecond) {
		page = send(h, "GET", "/", "", []*http.Cookie{aliceCookie}, nil).Body.String()
		all := strings.Contains(page, `href="/p/`+studio+`"`) && strings.Contains(page, "a studio question")
		for _, id := range ids {
			all = all && strings.Contains(page, `href="/c/`+id+`"`)
		}
		if all || time.Now().After(deadline) {
			break
		}
	}
	for _, id := range ids {
		if !strings.Contains(page, `href="/c/`+id+`"`) {
			t.Errorf("alice's dashboard does not link her run %s", id)
		}
	}
	if !strings.Contains(page, `href="/p/`+studio+`"`) || !strings.Contains(page, "a studio question") {
		t.Errorf("alice's dashboard lacks the project and its run:\n%s", page)
	}
	bobPage := send(h, "GET", "/", "", []*http.Cookie{bobCookie}, nil).Body.String()
	for _, leak := range append(ids, studio, "a default question") {
		if strings.Contains(bobPage, leak) {
			t.Errorf("bob's dashboard shows alice's %q", leak)
		}
	}
	for _, id := range ids {
		finish(t, m, id)
	}
}

// The funnel's "opened" is someone opening the invite's page: a browser's
// prefetch is not, and opening twice counts once.
func TestInviteOpenedCountsPeopleNotPrefetches(t *testing.T) {
	m := harness.StartMesh(t, simulator.Options{})
	m.Account(t, "host")
	h := (&api.Server{Store: m.Store, Temporal: m.Client}).Handler()
	tok, _ := invite(t, m, "team", "viewer", 50_000, time.Hour)
	opened := func() int64 {
		t.Helper()
		f, _, err := m.Store.Funnels(context.Background(), "host", 0)
		if err != nil {
			t.Fatal(err)
		}
		return f.Invites.Opened
	}
	for _, hdr := range []map[string]string{{"Sec-Purpose": "prefetch;prerender"}, {"Purpose": "prefetch"}, {"X-Moz": "prefetch"}} {
		hdr["Accept"] = "text/html"
		if rec := send(h, "GET", "/join/"+tok, "", nil, hdr); rec.Code != 200 {
			t.Fatalf("prefetch: %d", rec.Code)
		}
	}
	if n := opened(); n != 0 {
		t.Fatalf("prefetches counted as %d opened", n)
	}
	for range 2 {
		send(h, "GET", "/join/"+tok, "", nil, map[string]string{"Accept": "text/html"})
	}
	if n := opened(); n != 1 {
		t.Fatalf("opened twice: %d", n)
	}
}

// A new account's dashboard is empty lists, not nulls, and a page that
// says how to fill each section.
func TestNewAccountDashboardIsEmptyNotNull(t *testing.T) {
	m := harness.StartMesh(t, simulator.Options{})
	m.Account(t, "newbie")
	h := (&api.Server{Store: m.Store, Temporal: m.Client}).Handler()
	session := signInAccount(t, m, h, "newbie")
	rec := send(h, "GET", "/v1/dashboard", "", []*http.Cookie{session}, nil)
	if rec.Code != 200 || strings.Contains(rec.Body.String(), "null") {
		t.Fatalf("a new account's /v1/dashboard: %d %s", rec.Code, rec.Body.String())
	}
	page := send(h, "GET", "/", "", []*http.Cookie{session}, nil).Body.String()
	for _, hint := range []string{"No usage in the last 14 days", "Nothing flushed yet", "si hub", "si push --expert", "si invite", "None in flight"} {
		if !strings.Contains(page, hint) {
			t.Errorf("a new account's dashboard lacks %q", hint)
		}
	}
}
