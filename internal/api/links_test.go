package api_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"golang.org/x/time/rate"

	"github.com/superinstance/mesh/internal/api"
	"github.com/superinstance/mesh/internal/money"
	"github.com/superinstance/mesh/internal/runner"
	"github.com/superinstance/mesh/internal/simulator"
	"github.com/superinstance/mesh/internal/store"
	"github.com/superinstance/mesh/test/harness"
	"github.com/superinstance/mesh/workflows"
)

// get sends a GET from addr (the client address the rate limit counts).
func get(h http.Handler, path, addr string, header map[string]string) *httptest.ResponseRecorder {
	req := httptest.NewRequest("GET", path, nil)
	req.RemoteAddr = addr + ":40000"
	for k, v := range header {
		req.Header.Set(k, v)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

// post sends a POST from addr, as the join button does.
func post(h http.Handler, path, addr string, header map[string]string) *httptest.ResponseRecorder {
	req := httptest.NewRequest("POST", path, nil)
	req.RemoteAddr = addr + ":40000"
	for k, v := range header {
		req.Header.Set(k, v)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

func errorCode(t *testing.T, rec *httptest.ResponseRecorder) string {
	t.Helper()
	var r reply
	if err := json.Unmarshal(rec.Body.Bytes(), &r); err != nil {
		t.Fatalf("not JSON: %s", rec.Body.String())
	}
	return r.Error.Code
}

func invite(t *testing.T, m *harness.Mesh, project, role string, quota int64, expires time.Duration) (string, store.Invite) {
	t.Helper()
	tok, inv, err := runner.StartInvite(context.Background(), m.Store, m.Client, store.Invite{Project: project, Host: "host",
		Role: role, Quota: money.Micros(quota), ExpiresAt: time.Now().Add(expires)})
	if err != nil {
		t.Fatal(err)
	}
	return tok, inv
}

func guestCookie(t *testing.T, rec *httptest.ResponseRecorder) string {
	t.Helper()
	for _, c := range rec.Result().Cookies() {
		if c.Name == api.GuestCookie {
			if !c.HttpOnly || c.SameSite != http.SameSiteLaxMode {
				t.Fatalf("guest cookie %+v is not HttpOnly and SameSite=Lax", c)
			}
			return c.Value
		}
	}
	t.Fatalf("no guest cookie in %v", rec.Result().Header)
	return ""
}

func TestJoinLinkOpensAGuestSession(t *testing.T) {
	m := harness.StartMesh(t, simulator.Options{})
	m.Account(t, "host")
	s := &api.Server{Store: m.Store, Temporal: m.Client}
	h := s.Handler()

	// A browser lands on the project page with the cookie.
	tok, _ := invite(t, m, "team", store.RoleEditor, 5_000, time.Hour)
	rec := post(h, "/join/"+tok, "10.0.0.1", map[string]string{"Accept": "text/html"})
	if rec.Code != http.StatusSeeOther || rec.Header().Get("Location") != "/p/team" {
		t.Fatalf("browser join: %d %s", rec.Code, rec.Header().Get("Location"))
	}
	session := guestCookie(t, rec)
	page := get(h, "/p/team", "10.0.0.1", map[string]string{"Cookie": api.GuestCookie + "=" + session})
	if page.Code != 200 || !strings.Contains(page.Body.String(), `editor</b> guest of <b>host`) ||
		!strings.Contains(page.Body.String(), `<b id="remaining">$0.005</b>`) {
		t.Fatalf("project page: %d %s", page.Code, page.Body.String())
	}
	if other := get(h, "/p/elsewhere", "10.0.0.1", map[string]string{"Cookie": api.GuestCookie + "=" + session}); other.Code != 404 {
		t.Fatalf("a guest sees another project: %d", other.Code)
	}

	// Used: the same link again.
	for _, send := range []func(http.Handler, string, string, map[string]string) *httptest.ResponseRecorder{get, post} {
		if rec := send(h, "/join/"+tok, "10.0.0.1", nil); rec.Code != http.StatusGone || errorCode(t, rec) != "invite_closed" ||
			!strings.Contains(rec.Body.String(), "already been used") {
			t.Fatalf("used link: %d %s", rec.Code, rec.Body.String())
		}
	}
	// Wrong: an unknown token and something that is not a token.
	for _, bad := range []string{store.InviteTokenPrefix + "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "not-a-token", strings.Repeat("x", 500)} {
		if rec := get(h, "/join/"+url.PathEscape(bad), "10.0.0.1", nil); rec.Code != 404 || errorCode(t, rec) != "invalid_token" {
			t.Fatalf("wrong token %.20s: %d %s", bad, rec.Code, rec.Body.String())
		}
	}
	// Revoked.
	tok2, inv2 := invite(t, m, "team", store.RoleViewer, 1_000, time.Hour)
	if err := m.Client.SignalWorkflow(context.Background(), workflows.InviteWorkflowID(inv2.ID), "", workflows.InviteRevokeSignal, nil); err != nil {
		t.Fatal(err)
	}
	if err := m.Client.GetWorkflow(context.Background(), workflows.InviteWorkflowID(inv2.ID), "").Get(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	if rec := post(h, "/join/"+tok2, "10.0.0.2", nil); rec.Code != http.StatusGone || !strings.Contains(rec.Body.String(), "revoked") {
		t.Fatalf("revoked link: %d %s", rec.Code, rec.Body.String())
	}
	// Expired.
	tok3, _ := invite(t, m, "team", store.RoleViewer, 1_000, time.Second)
	time.Sleep(1100 * time.Millisecond)
	if rec := post(h, "/join/"+tok3, "10.0.0.2", nil); rec.Code != http.StatusGone || !strings.Contains(rec.Body.String(), "expired") {
		t.Fatalf("expired link: %d %s", rec.Code, rec.Body.String())
	}

	// An API client gets JSON, and the session works for the API.
	tok4, _ := invite(t, m, "team", store.RoleViewer, 1_000, time.Hour)
	rec = post(h, "/join/"+tok4, "10.0.0.3", nil)
	var jr api.JoinReply
	if err := json.Unmarshal(rec.Body.Bytes(), &jr); err != nil || rec.Code != 200 || jr.Role != store.RoleViewer || jr.Remaining != 1_000 ||
		jr.GuestSession != guestCookie(t, rec) || jr.SessionID == jr.GuestSession || !jr.ExpiresAt.After(time.Now()) {
		t.Fatalf("API join: %d %s", rec.Code, rec.Body.String())
	}
	if me := get(h, "/v1/me", "10.0.0.3", map[string]string{"Cookie": api.GuestCookie + "=" + jr.GuestSession}); me.Code != 200 {
		t.Fatalf("the joined session: %d %s", me.Code, me.Body.String())
	}
}

func TestJoinIsRateLimited(t *testing.T) {
	m := harness.StartMesh(t, simulator.Options{})
	s := &api.Server{Store: m.Store, Temporal: m.Client, LinkLimit: &api.Limiter{Rate: rate.Every(time.Hour), Burst: 5, MaxClients: 100}}
	h := s.Handler()
	bad := "/join/" + store.InviteTokenPrefix + "guessguessguessguessguessguessgu"
	for i := 0; i < 5; i++ {
		if rec := get(h, bad, "192.0.2.7", nil); rec.Code != 404 {
			t.Fatalf("guess %d: %d", i, rec.Code)
		}
	}
	rec := get(h, bad, "192.0.2.7", nil)
	if rec.Code != http.StatusTooManyRequests || errorCode(t, rec) != "rate_limited" || rec.Header().Get("Retry-After") == "" {
		t.Fatalf("sixth guess: %d %s", rec.Code, rec.Body.String())
	}
	// A browser is told on a page.
	if rec := get(h, bad, "192.0.2.7", map[string]string{"Accept": "text/html"}); rec.Code != http.StatusTooManyRequests ||
		!strings.HasPrefix(rec.Header().Get("Content-Type"), "text/html") || !strings.Contains(rec.Body.String(), "Wait a few seconds") {
		t.Fatalf("a browser's sixth guess: %d %s", rec.Code, rec.Body.String())
	}
	// Another address has its own allowance.
	if rec := get(h, bad, "192.0.2.8", nil); rec.Code != 404 {
		t.Fatalf("another address: %d", rec.Code)
	}
}

// A guest's requests: an editor may start runs until the quota is spent
// (then 402 "guest quota exhausted"), a viewer may only read, and neither
// sees runs outside the project.
func TestGuestRequestsAndRoles(t *testing.T) {
	m := harness.StartMesh(t, simulator.Options{})
	m.Account(t, "host")
	m.Account(t, "stranger")
	ctx := context.Background()
	h := (&api.Server{Store: m.Store, Temporal: m.Client}).Handler()
	// Enough for a run's worst case (admission reserves it before the run).
	tok, _ := invite(t, m, "team", store.RoleEditor, 2_000_000, time.Hour)
	editor := guestCookie(t, post(h, "/join/"+tok, "10.1.0.1", nil))
	vtok, _ := invite(t, m, "team", store.RoleViewer, 3_000, time.Hour)
	viewer := guestCookie(t, post(h, "/join/"+vtok, "10.1.0.1", nil))

	as := func(session, method, path, body string) (int, reply) {
		req := httptest.NewRequest(method, path, strings.NewReader(body))
		req.AddCookie(&http.Cookie{Name: api.GuestCookie, Value: session})
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		var r reply
		_ = json.Unmarshal(rec.Body.Bytes(), &r)
		return rec.Code, r
	}
	code, r := as(editor, "POST", "/v1/consensus", `{"prompt":"Plan the sprint [sim:agree]"}`)
	if code != 202 {
		t.Fatalf("editor guest starts a run: %d %+v", code, r.Error)
	}
	id := r.WorkflowID
	if err := m.Client.GetWorkflow(ctx, id, "").Get(ctx, nil); err != nil {
		t.Fatal(err)
	}
	if code, st := as(viewer, "GET", "/v1/consensus/"+id, ""); code != 200 || st.Project != "team" {
		t.Fatalf("viewer reads the project's run: %d %+v", code, st)
	}
	if code, r := as(viewer, "POST", "/v1/consensus", `{"prompt":"q"}`); code != 403 || r.Error.Code != "forbidden" {
		t.Fatalf("viewer starts a run: %d %+v", code, r.Error)
	}
	if code, r := as(editor, "POST", "/v1/consensus", `{"prompt":"q","project":"elsewhere"}`); code != 404 {
		t.Fatalf("guest names another project: %d %+v", code, r.Error)
	}
	// The host's own run in another project is not the guest's to see.
	stok, _ := m.Store.CreateAPIToken(ctx, "host", "")
	code, r = call(t, h, "POST", "/v1/consensus", stok, `{"prompt":"private [sim:agree]","project":"private"}`)
	if code != 202 {
		t.Fatalf("host run: %d %+v", code, r.Error)
	}
	if err := m.Client.GetWorkflow(ctx, r.WorkflowID, "").Get(ctx, nil); err != nil {
		t.Fatal(err)
	}
	if code, _ := as(editor, "GET", "/v1/consensus/"+r.WorkflowID, ""); code != 404 {
		t.Fatalf("guest reads the host's other project: %d", code)
	}
	// A stranger can neither run in nor read the host's project.
	xtok, _ := m.Store.CreateAPIToken(ctx, "stranger", "")
	if code, _ := call(t, h, "POST", "/v1/consensus", xtok, `{"prompt":"q","project":"team"}`); code != 404 {
		t.Fatalf("stranger runs in the host's project: %d", code)
	}
	if code, _ := call(t, h, "GET", "/v1/consensus/"+id, xtok, ""); code != 404 {
		t.Fatalf("stranger reads the project's run: %d", code)
	}
	// A member with the viewer role reads but does not run.
	if err := m.Store.AddMember(ctx, "team", "stranger", store.RoleViewer); err != nil {
		t.Fatal(err)
	}
	if code, _ := call(t, h, "GET", "/v1/consensus/"+id, xtok, ""); code != 200 {
		t.Fatalf("viewer member reads the project's run: %d", code)
	}
	if code, r := call(t, h, "POST", "/v1/consensus", xtok, `{"prompt":"q","project":"team"}`); code != 403 {
		t.Fatalf("viewer member runs: %d %+v", code, r.Error)
	}
	// Spend the editor's quota: the next request is 402.
	if err := spend(ctx, m.Store, editor); err != nil {
		t.Fatal(err)
	}
	if code, r := as(editor, "POST", "/v1/consensus", `{"prompt":"more"}`); code != http.StatusPaymentRequired ||
		r.Error.Code != "guest_quota_exhausted" || !strings.HasPrefix(r.Error.Message, "guest quota exhausted") {
		t.Fatalf("spent guest: %d %+v", code, r.Error)
	}
}

// spend uses up what is left of the quota of the guest session a secret proves.
func spend(ctx context.Context, st *store.Store, secret string) error {
	g, err := st.GuestSessionBySecret(ctx, secret)
	if err != nil {
		return err
	}
	session := g.ID
	for i := 0; g.Remaining > 0; i++ {
		if _, err := st.LogUsage(ctx, store.Usage{EventID: session + "-spend-" + string(rune('a'+i)), Account: g.Host, Project: g.Project,
			GuestSession: session, Model: "m", PromptTokens: 1_000_000}); err != nil {
			return err
		}
		if g, err = st.GuestSessionByID(ctx, session); err != nil {
			return err
		}
	}
	return nil
}

// Whatever a client puts in a link's token, /join and /handover answer
// with a JSON error (or the rate limit), never a panic or a guest session.
func FuzzLinkTokens(f *testing.F) {
	st := harness.Store(f)
	h := (&api.Server{Store: st, LinkLimit: &api.Limiter{Rate: rate.Inf, Burst: 1, MaxClients: 10}}).Handler()
	f.Add("si_inv_" + strings.Repeat("a", 32))
	f.Add("si_ho_x")
	f.Add("%00%ff")
	f.Add(strings.Repeat("si_inv_", 20))
	f.Fuzz(func(t *testing.T, tok string) {
		for _, rq := range []struct {
			send   func(http.Handler, string, string, map[string]string) *httptest.ResponseRecorder
			prefix string
		}{{get, "/join/"}, {post, "/join/"}, {get, "/handover/"}, {post, "/handover/"}} {
			prefix := rq.prefix
			rec := rq.send(h, prefix+url.PathEscape(tok), "10.9.9.9", nil)
			if rec.Code != http.StatusNotFound && rec.Code != http.StatusMovedPermanently && rec.Code != http.StatusTemporaryRedirect {
				t.Fatalf("%s%q: %d %s", prefix, tok, rec.Code, rec.Body.String())
			}
			if len(rec.Result().Cookies()) != 0 {
				t.Fatalf("%s%q set a cookie", prefix, tok)
			}
		}
	})
}
