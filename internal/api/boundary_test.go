package api_test

// The customer plane's boundaries, each tested from the attacker's side: a
// second account, a link preview, an editor reading the guest list, a
// stolen or signed-out cookie, a page on another origin.

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"go.temporal.io/sdk/converter"

	"github.com/superinstance/mesh/internal/api"
	"github.com/superinstance/mesh/internal/runner"
	"github.com/superinstance/mesh/internal/simulator"
	"github.com/superinstance/mesh/internal/store"
	"github.com/superinstance/mesh/test/harness"
	"github.com/superinstance/mesh/workflows"
)

// send makes a request with the given cookies and headers.
func send(h http.Handler, method, path, body string, cookies []*http.Cookie, header map[string]string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(method, path, strings.NewReader(body))
	req.RemoteAddr = "10.7.0.1:40000"
	for _, c := range cookies {
		req.AddCookie(c)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

// cookie returns the named cookie a response sets.
func cookie(t *testing.T, rec *httptest.ResponseRecorder, name string) *http.Cookie {
	t.Helper()
	for _, c := range rec.Result().Cookies() {
		if c.Name == name && c.MaxAge >= 0 {
			return c
		}
	}
	t.Fatalf("no %s cookie in %d %v %s", name, rec.Code, rec.Result().Header, rec.Body.String())
	return nil
}

// joinAs accepts an invite the way a browser's button does: a POST.
func joinAs(t *testing.T, h http.Handler, tok string) *http.Cookie {
	t.Helper()
	return cookie(t, send(h, "POST", "/join/"+tok, "", nil, nil), api.GuestCookie)
}

// finish waits for a workflow to close.
func finish(t *testing.T, m *harness.Mesh, id string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := m.Client.GetWorkflow(ctx, id, "").Get(ctx, nil); err != nil {
		t.Fatal(err)
	}
}

// askAsGuest runs a consensus for the guest session with this handle.
func askAsGuest(m *harness.Mesh, session string) error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	run, err := runner.Start(ctx, m.Client, runner.NewWorkflowID(time.Now()), workflows.ConsensusInput{Prompt: "q [sim:agree]",
		GuestSession: session, Placement: workflows.PlacementCloud})
	if err != nil {
		return err
	}
	return runner.Cause(run.Get(ctx, nil))
}

// A second account cannot read the first one's answers through the default
// project: it cannot invite into (and so adopt) default, and its /p/default
// lists its own runs alone.
func TestSecondAccountCannotReadDefaultProject(t *testing.T) {
	m := harness.StartMesh(t, simulator.Options{})
	m.Account(t, "alice")
	m.Account(t, "mallory")
	ctx := context.Background()
	alice, _ := m.Store.CreateAPIToken(ctx, "alice", "")
	mallory, _ := m.Store.CreateAPIToken(ctx, "mallory", "")
	h := (&api.Server{Store: m.Store, Temporal: m.Client}).Handler()

	code, r := call(t, h, "POST", "/v1/consensus", alice, `{"prompt":"alice's private question [sim:agree]"}`)
	if code != 202 {
		t.Fatalf("alice's run: %d %+v", code, r.Error)
	}
	finish(t, m, r.WorkflowID)

	// Mallory tries to become default's owner by inviting into it.
	rec := send(h, "POST", "/v1/invites", `{"project":"default","role":"viewer","quota":"1.00"}`, nil,
		map[string]string{"Authorization": "Bearer " + mallory})
	if rec.Code != http.StatusBadRequest {
		t.Fatalf("mallory invites into default: %d %s", rec.Code, rec.Body.String())
	}
	if _, err := m.Store.ProjectRole(ctx, "default", "mallory"); err == nil {
		t.Fatal("mallory became a member of default")
	}
	page := send(h, "GET", "/p/default", "", nil, map[string]string{"Authorization": "Bearer " + mallory})
	if strings.Contains(page.Body.String(), r.WorkflowID) || strings.Contains(page.Body.String(), "alice") {
		t.Fatalf("mallory's /p/default shows alice's run: %d %s", page.Code, page.Body.String())
	}
	// Alice sees her own run there.
	if page := send(h, "GET", "/p/default", "", nil, map[string]string{"Authorization": "Bearer " + alice}); page.Code != 200 ||
		!strings.Contains(page.Body.String(), r.WorkflowID) {
		t.Fatalf("alice's /p/default: %d %s", page.Code, page.Body.String())
	}
}

// A project without an owner (made by a run before projects had owners) is
// not adopted by the first account to invite into it.
func TestOwnerlessProjectIsNotAdopted(t *testing.T) {
	m := harness.StartMesh(t, simulator.Options{})
	m.Account(t, "mallory")
	ctx := context.Background()
	if err := m.Store.EnsureProject(ctx, "legacy"); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Store.ClaimProject(ctx, "legacy", "mallory"); err == nil {
		t.Fatal("mallory adopted an ownerless project")
	}
	if _, err := m.Store.ProjectRole(ctx, "legacy", "mallory"); err == nil {
		t.Fatal("mallory became a member of an ownerless project")
	}
}

// GET /join is a link preview's or a prefetch's: it shows the invite and
// consumes nothing. The button's POST accepts.
func TestJoinLinkPreviewLeavesInviteOpen(t *testing.T) {
	m := harness.StartMesh(t, simulator.Options{})
	m.Account(t, "host")
	h := (&api.Server{Store: m.Store, Temporal: m.Client}).Handler()
	tok, inv := invite(t, m, "team", store.RoleViewer, 1_000, time.Hour)
	for _, accept := range []string{"text/html", ""} {
		rec := send(h, "GET", "/join/"+tok, "", nil, map[string]string{"Accept": accept})
		if rec.Code != 200 || len(rec.Result().Cookies()) != 0 {
			t.Fatalf("GET /join (Accept %q): %d, cookies %v", accept, rec.Code, rec.Result().Cookies())
		}
	}
	got, err := m.Store.InviteByID(context.Background(), inv.ID)
	if err != nil || got.State != store.InvitePending {
		t.Fatalf("after two GETs the invite is %q, %v", got.State, err)
	}
	page := send(h, "GET", "/join/"+tok, "", nil, map[string]string{"Accept": "text/html"}).Body.String()
	if !strings.Contains(page, `<form method="post">`) || !strings.Contains(page, "team") {
		t.Fatalf("join page: %s", page)
	}
	joinAs(t, h, tok)
	if got, _ := m.Store.InviteByID(context.Background(), inv.ID); got.State != store.InviteAccepted {
		t.Fatalf("after the POST the invite is %q", got.State)
	}
}

// An editor of the project lists its guests: handles and quotas, never a
// guest's session secret.
func TestEditorListingGuestsSeesNoSecrets(t *testing.T) {
	m := harness.StartMesh(t, simulator.Options{})
	m.Account(t, "host")
	m.Account(t, "ed")
	ctx := context.Background()
	h := (&api.Server{Store: m.Store, Temporal: m.Client}).Handler()
	tok, _ := invite(t, m, "team", store.RoleViewer, 1_000, time.Hour)
	secret := joinAs(t, h, tok).Value
	if err := m.Store.AddMember(ctx, "team", "ed", store.RoleEditor); err != nil {
		t.Fatal(err)
	}
	ed, _ := m.Store.CreateAPIToken(ctx, "ed", "")
	rec := send(h, "GET", "/v1/projects/team/guests", "", nil, map[string]string{"Authorization": "Bearer " + ed})
	if rec.Code != 200 {
		t.Fatalf("guest list: %d %s", rec.Code, rec.Body.String())
	}
	if strings.Contains(rec.Body.String(), secret) {
		t.Fatalf("the guest list holds the guest's session secret: %s", rec.Body.String())
	}
	// What the list shows cannot be used as the guest's cookie.
	var list struct {
		Guests []api.GuestInfo `json:"guests"`
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &list); err != nil || len(list.Guests) != 1 {
		t.Fatalf("guest list %s: %v", rec.Body.String(), err)
	}
	forged := &http.Cookie{Name: api.GuestCookie, Value: list.Guests[0].Session}
	if rec := send(h, "GET", "/v1/me", "", []*http.Cookie{forged}, nil); rec.Code != http.StatusUnauthorized {
		t.Fatalf("the listed handle works as a session: %d %s", rec.Code, rec.Body.String())
	}
}

// A revoked guest session and an expired one are refused, by the API and
// by the workflow.
func TestGuestSessionRevokedOrExpiredIsRefused(t *testing.T) {
	m := harness.StartMesh(t, simulator.Options{})
	m.Account(t, "host")
	m.Account(t, "stranger")
	ctx := context.Background()
	h := (&api.Server{Store: m.Store, Temporal: m.Client}).Handler()
	host, _ := m.Store.CreateAPIToken(ctx, "host", "")
	stranger, _ := m.Store.CreateAPIToken(ctx, "stranger", "")

	tok, _ := invite(t, m, "team", store.RoleEditor, 50_000, time.Hour)
	g := joinAs(t, h, tok)
	if rec := send(h, "GET", "/v1/me", "", []*http.Cookie{g}, nil); rec.Code != 200 {
		t.Fatalf("fresh session: %d", rec.Code)
	}
	var list struct {
		Guests []api.GuestInfo `json:"guests"`
	}
	rec := send(h, "GET", "/v1/projects/team/guests", "", nil, map[string]string{"Authorization": "Bearer " + host})
	if err := json.Unmarshal(rec.Body.Bytes(), &list); err != nil || len(list.Guests) != 1 {
		t.Fatalf("guest list %s: %v", rec.Body.String(), err)
	}
	id := list.Guests[0].Session
	// Someone outside the project cannot revoke it (nor learn it exists).
	if rec := send(h, "POST", "/v1/guests/"+id+"/revoke", "", nil, map[string]string{"Authorization": "Bearer " + stranger}); rec.Code != 404 {
		t.Fatalf("a stranger revokes: %d %s", rec.Code, rec.Body.String())
	}
	if rec := send(h, "POST", "/v1/guests/"+id+"/revoke", "", nil, map[string]string{"Authorization": "Bearer " + host}); rec.Code != 200 ||
		!strings.Contains(rec.Body.String(), `"state":"revoked"`) {
		t.Fatalf("the host revokes: %d %s", rec.Code, rec.Body.String())
	}
	for _, path := range []string{"/v1/me", "/p/team"} {
		if rec := send(h, "GET", path, "", []*http.Cookie{g}, nil); rec.Code == 200 {
			t.Fatalf("revoked session reads %s: %d", path, rec.Code)
		}
	}
	if rec := send(h, "POST", "/v1/consensus", `{"prompt":"q"}`, []*http.Cookie{g}, nil); rec.Code != http.StatusUnauthorized {
		t.Fatalf("revoked session starts a run: %d %s", rec.Code, rec.Body.String())
	}
	// The workflow refuses the revoked session too (a run started before
	// the revoke, or by a client holding only the handle).
	if err := askAsGuest(m, id); err == nil || !strings.Contains(err.Error(), "revoked") {
		t.Fatalf("a consensus with the revoked session: %v", err)
	}

	tok2, _ := invite(t, m, "team", store.RoleEditor, 50_000, time.Hour)
	g2 := joinAs(t, h, tok2)
	if _, err := m.Store.Pool.Exec(ctx, `UPDATE guest_sessions SET expires_at = now() - interval '1 second' WHERE revoked_at IS NULL`); err != nil {
		t.Fatal(err)
	}
	if rec := send(h, "GET", "/v1/me", "", []*http.Cookie{g2}, nil); rec.Code != http.StatusUnauthorized {
		t.Fatalf("expired session: %d %s", rec.Code, rec.Body.String())
	}
}

// Sign-in puts a browser session in the cookie, never the API token;
// sign-out revokes it, so a copy of the old cookie no longer works.
func TestSignOutRevokesTheBrowserSession(t *testing.T) {
	m := harness.StartMesh(t, simulator.Options{})
	m.Account(t, "alice")
	ctx := context.Background()
	tok, _ := m.Store.CreateAPIToken(ctx, "alice", "")
	h := (&api.Server{Store: m.Store, Temporal: m.Client}).Handler()
	rec := send(h, "POST", "/v1/session", `{"token":"`+tok+`"}`, nil, nil)
	c := cookie(t, rec, api.SessionCookie)
	if c.Value == tok || strings.Contains(c.Value, tok) {
		t.Fatal("the session cookie holds the API token")
	}
	if !c.HttpOnly || c.Secure || c.SameSite != http.SameSiteStrictMode {
		t.Fatalf("cookie %+v", c)
	}
	if rec := send(h, "GET", "/v1/me", "", []*http.Cookie{c}, nil); rec.Code != 200 || !strings.Contains(rec.Body.String(), "alice") {
		t.Fatalf("signed in: %d %s", rec.Code, rec.Body.String())
	}
	if rec := send(h, "DELETE", "/v1/session", "", []*http.Cookie{c}, nil); rec.Code != http.StatusNoContent {
		t.Fatalf("sign out: %d", rec.Code)
	}
	if rec := send(h, "GET", "/v1/me", "", []*http.Cookie{c}, nil); rec.Code != http.StatusUnauthorized {
		t.Fatalf("the old cookie after sign-out: %d %s", rec.Code, rec.Body.String())
	}
	// The API token itself still works: signing out a browser is not
	// revoking the token.
	if code, _ := call(t, h, "GET", "/v1/me", tok, ""); code != 200 {
		t.Fatalf("the token after sign-out: %d", code)
	}
}

// Behind an https public URL every cookie the mesh sets is Secure.
func TestCookiesAreSecureBehindHTTPS(t *testing.T) {
	m := harness.StartMesh(t, simulator.Options{})
	m.Account(t, "alice")
	m.Account(t, "host")
	tok, _ := m.Store.CreateAPIToken(context.Background(), "alice", "")
	h := (&api.Server{Store: m.Store, Temporal: m.Client, PublicURL: "https://mesh.example.com"}).Handler()
	if c := cookie(t, send(h, "POST", "/v1/session", `{"token":"`+tok+`"}`, nil, nil), api.SessionCookie); !c.Secure {
		t.Fatalf("session cookie %+v is not Secure", c)
	}
	itok, _ := invite(t, m, "team", store.RoleViewer, 1_000, time.Hour)
	if c := joinAs(t, h, itok); !c.Secure {
		t.Fatalf("guest cookie %+v is not Secure", c)
	}
}

// A page on another origin cannot act with the browser's cookies: its
// POSTs and DELETEs are refused, the same request from the mesh's own page
// is not.
func TestCrossOriginCookieRequestsAreRefused(t *testing.T) {
	m := harness.StartMesh(t, simulator.Options{})
	m.Account(t, "alice")
	m.Account(t, "host")
	ctx := context.Background()
	tok, _ := m.Store.CreateAPIToken(ctx, "alice", "")
	h := (&api.Server{Store: m.Store, Temporal: m.Client, PublicURL: "https://mesh.example.com"}).Handler()
	session := cookie(t, send(h, "POST", "/v1/session", `{"token":"`+tok+`"}`, nil, nil), api.SessionCookie)
	itok, _ := invite(t, m, "team", store.RoleEditor, 50_000, time.Hour)
	guest := joinAs(t, h, itok)
	evil := []map[string]string{
		{"Origin": "https://evil.example"},
		{"Origin": "null"},
		{"Sec-Fetch-Site": "cross-site"},
		{"Origin": "https://mesh.example.com", "Sec-Fetch-Site": "same-site"},
	}
	for _, c := range []*http.Cookie{session, guest} {
		for _, hdr := range evil {
			for _, rq := range []struct{ method, path, body string }{
				{"POST", "/v1/consensus", `{"prompt":"spend their money","project":"team"}`},
				{"POST", "/v1/invites", `{"project":"team","role":"editor","quota":"5.00"}`},
				{"DELETE", "/v1/session", ""},
			} {
				hdr["Content-Type"] = "application/json"
				if rec := send(h, rq.method, rq.path, rq.body, []*http.Cookie{c}, hdr); rec.Code != http.StatusForbidden ||
					errorCode(t, rec) != "cross_origin" {
					t.Fatalf("%s %s with %s cookie and %v: %d %s", rq.method, rq.path, c.Name, hdr, rec.Code, rec.Body.String())
				}
			}
		}
	}
	// The session survived the cross-origin sign-out attempts.
	if rec := send(h, "GET", "/v1/me", "", []*http.Cookie{session}, nil); rec.Code != 200 {
		t.Fatalf("session after cross-origin DELETEs: %d", rec.Code)
	}
	// The mesh's own page may.
	own := map[string]string{"Origin": "https://mesh.example.com", "Sec-Fetch-Site": "same-origin", "Content-Type": "application/json"}
	if rec := send(h, "POST", "/v1/consensus", `{"prompt":"mine [sim:agree]"}`, []*http.Cookie{session}, own); rec.Code != 202 {
		t.Fatalf("same-origin POST: %d %s", rec.Code, rec.Body.String())
	}
	// A bearer token is not a cookie: no origin rule applies to it.
	req := map[string]string{"Origin": "https://evil.example", "Authorization": "Bearer " + tok}
	if rec := send(h, "POST", "/v1/consensus", `{"prompt":"api client [sim:agree]"}`, nil, req); rec.Code != 202 {
		t.Fatalf("bearer POST with a foreign Origin: %d %s", rec.Code, rec.Body.String())
	}
}

// Neither the guest session's secret nor anything that works as one is in
// the invite's or the consensus's workflow input or history.
func TestWorkflowHistoryHoldsNoSessionSecret(t *testing.T) {
	m := harness.StartMesh(t, simulator.Options{})
	m.Account(t, "host")
	ctx := context.Background()
	h := (&api.Server{Store: m.Store, Temporal: m.Client}).Handler()
	tok, inv := invite(t, m, "team", store.RoleEditor, 2_000_000, time.Hour)
	g := joinAs(t, h, tok)
	rec := send(h, "POST", "/v1/consensus", `{"prompt":"guest run [sim:agree]"}`, []*http.Cookie{g}, nil)
	if rec.Code != 202 {
		t.Fatalf("guest run: %d %s", rec.Code, rec.Body.String())
	}
	var started struct {
		WorkflowID string `json:"workflow_id"`
	}
	_ = json.Unmarshal(rec.Body.Bytes(), &started)
	finish(t, m, started.WorkflowID)
	for _, wid := range []string{"invite/" + inv.ID, started.WorkflowID} {
		it := m.Client.GetWorkflowHistory(ctx, wid, "", false, 0)
		var all bytes.Buffer
		for it.HasNext() {
			ev, err := it.Next()
			if err != nil {
				t.Fatal(err)
			}
			all.WriteString(ev.String())
		}
		if all.Len() == 0 {
			t.Fatalf("no history for %s", wid)
		}
		if bytes.Contains(all.Bytes(), []byte(g.Value)) {
			t.Fatalf("the history of %s holds the guest session secret", wid)
		}
	}
}

// Whatever a client puts in the session or guest cookie, the API answers
// 401, never a session or a 5xx.
func FuzzSessionCookies(f *testing.F) {
	st := harness.Store(f)
	h := (&api.Server{Store: st}).Handler()
	f.Add("si_bs_" + strings.Repeat("a", 52))
	f.Add("si_gs_" + strings.Repeat("a", 52))
	f.Add("si_" + strings.Repeat("x", 200))
	f.Add("gs_aaaaaaaaaaaaaaaaaaaaaaaaaa")
	f.Add("")
	f.Fuzz(func(t *testing.T, v string) {
		for _, name := range []string{api.SessionCookie, api.GuestCookie} {
			req := httptest.NewRequest("GET", "/v1/me", nil)
			req.Header.Set("Cookie", name+"="+v)
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != http.StatusUnauthorized {
				t.Fatalf("%s=%q: %d %s", name, v, rec.Code, rec.Body.String())
			}
		}
	})
}

// A stolen API token that is revoked stops working everywhere: a browser
// session the thief opened with it (POST /v1/session) ends with it, instead
// of keeping the account for the session's 7 days.
func TestRevokedTokenEndsItsBrowserSessions(t *testing.T) {
	m := harness.StartMesh(t, simulator.Options{})
	m.Account(t, "alice")
	ctx := context.Background()
	stolen, _ := m.Store.CreateAPIToken(ctx, "alice", "laptop")
	kept, _ := m.Store.CreateAPIToken(ctx, "alice", "desktop")
	h := (&api.Server{Store: m.Store, Temporal: m.Client}).Handler()
	thief := cookie(t, send(h, "POST", "/v1/session", `{"token":"`+stolen+`"}`, nil, nil), api.SessionCookie)
	owner := cookie(t, send(h, "POST", "/v1/session", `{"token":"`+kept+`"}`, nil, nil), api.SessionCookie)
	if rec := send(h, "GET", "/v1/me", "", []*http.Cookie{thief}, nil); rec.Code != 200 {
		t.Fatalf("signed in: %d %s", rec.Code, rec.Body.String())
	}
	// The operator revokes the stolen token.
	if _, err := m.Store.Pool.Exec(ctx, `UPDATE api_tokens SET revoked_at = now() WHERE account_id = 'alice' AND name = 'laptop'`); err != nil {
		t.Fatal(err)
	}
	if code, _ := call(t, h, "GET", "/v1/me", stolen, ""); code != http.StatusUnauthorized {
		t.Fatalf("the revoked token: %d", code)
	}
	if rec := send(h, "GET", "/v1/me", "", []*http.Cookie{thief}, nil); rec.Code != http.StatusUnauthorized {
		t.Fatalf("a browser session opened with the revoked token still works: %d %s", rec.Code, rec.Body.String())
	}
	if rec := send(h, "POST", "/v1/consensus", `{"prompt":"q [sim:agree]"}`, []*http.Cookie{thief}, nil); rec.Code != http.StatusUnauthorized {
		t.Fatalf("a run through the revoked token's session: %d %s", rec.Code, rec.Body.String())
	}
	// Another token's session is untouched.
	if rec := send(h, "GET", "/v1/me", "", []*http.Cookie{owner}, nil); rec.Code != 200 {
		t.Fatalf("the other token's session: %d %s", rec.Code, rec.Body.String())
	}
}

// A run goes only to a hub of the account that pays for it: another
// account's connected hub never sees its prompt, the caller's own does, and
// placement hub without one is refused before the run starts.
func TestRunsGoOnlyToTheAccountsOwnHub(t *testing.T) {
	m := harness.StartMesh(t, simulator.Options{})
	ctx := context.Background()
	for _, a := range []string{"alice", "mallory"} {
		m.Account(t, a)
	}
	connect := func(device, account string) {
		t.Helper()
		if err := m.Store.RegisterCert(ctx, device, account, "serial-"+device, time.Now().Add(time.Hour)); err != nil {
			t.Fatal(err)
		}
		if _, _, err := m.Store.HubConnected(ctx, store.Hub{DeviceID: device, Version: "test", Hostname: device}); err != nil {
			t.Fatal(err)
		}
	}
	mallorys, alices := harness.UniqueID("mallory-gpu"), harness.UniqueID("alice-gpu")
	connect(mallorys, "mallory")
	tok, err := m.Store.CreateAPIToken(ctx, "alice", "")
	if err != nil {
		t.Fatal(err)
	}
	h := (&api.Server{Store: m.Store, Temporal: m.Client}).Handler()
	bearer := map[string]string{"Authorization": "Bearer " + tok, "Content-Type": "application/json"}
	hubQueue := func(body string) string {
		t.Helper()
		rec := send(h, "POST", "/v1/consensus", body, nil, bearer)
		if rec.Code != http.StatusAccepted {
			t.Fatalf("start %s: %d %s", body, rec.Code, rec.Body.String())
		}
		var started struct {
			WorkflowID string `json:"workflow_id"`
		}
		_ = json.Unmarshal(rec.Body.Bytes(), &started)
		it := m.Client.GetWorkflowHistory(ctx, started.WorkflowID, "", false, 0)
		ev, err := it.Next()
		if err != nil {
			t.Fatal(err)
		}
		var in workflows.ConsensusInput
		if err := converter.GetDefaultDataConverter().FromPayloads(ev.GetWorkflowExecutionStartedEventAttributes().GetInput(), &in); err != nil {
			t.Fatal(err)
		}
		finish(t, m, started.WorkflowID)
		return in.HubQueue
	}
	if q := hubQueue(`{"prompt":"private question [sim:agree]","max_rounds":1}`); q != "" {
		t.Fatalf("alice's run was offered to hub queue %q; alice has no hub", q)
	}
	rec := send(h, "POST", "/v1/consensus", `{"prompt":"q","placement":"hub"}`, nil, bearer)
	if rec.Code != http.StatusConflict || errorCode(t, rec) != "no_hub" {
		t.Fatalf("placement hub without a hub of one's own: %d %s", rec.Code, rec.Body.String())
	}
	connect(alices, "alice")
	if q := hubQueue(`{"prompt":"private question [sim:agree]","max_rounds":1}`); q != "hub."+alices {
		t.Fatalf("alice's run went to hub queue %q; want her own hub.%s", q, alices)
	}
	if q := hubQueue(`{"prompt":"cloud only [sim:agree]","max_rounds":1,"placement":"cloud"}`); q != "" {
		t.Fatalf("a cloud run named hub queue %q", q)
	}
}
