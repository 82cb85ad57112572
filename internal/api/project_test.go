package api_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/superinstance/mesh/internal/api"
	"github.com/superinstance/mesh/internal/simulator"
	"github.com/superinstance/mesh/internal/store"
	"github.com/superinstance/mesh/test/harness"
)

// signIn opens a browser session for an API token, as the sign-in form does.
func signIn(t *testing.T, h http.Handler, token string) *http.Cookie {
	t.Helper()
	return cookie(t, send(h, "POST", "/v1/session", `{"token":"`+token+`"}`, nil, nil), api.SessionCookie)
}

// startRun starts a consensus as token and waits for it to end.
func startRun(t *testing.T, m *harness.Mesh, h http.Handler, token, project, prompt string) string {
	t.Helper()
	code, r := call(t, h, "POST", "/v1/consensus", token, `{"prompt":"`+prompt+`","project":"`+project+`"}`)
	if code != 202 {
		t.Fatalf("start in %s: %d %+v", project, code, r.Error)
	}
	finish(t, m, r.WorkflowID)
	return r.WorkflowID
}

func TestProjectPageForOwnerAndGuest(t *testing.T) {
	m := harness.StartMesh(t, simulator.Options{})
	m.Account(t, "host")
	m.Account(t, "intruder")
	ctx := context.Background()
	hostTok, _ := m.Store.CreateAPIToken(ctx, "host", "")
	intruderTok, _ := m.Store.CreateAPIToken(ctx, "intruder", "")
	h := (&api.Server{Store: m.Store, Temporal: m.Client}).Handler()
	first := startRun(t, m, h, hostTok, "studio", "First question [sim:agree]")
	time.Sleep(20 * time.Millisecond)
	second := startRun(t, m, h, hostTok, "studio", "Second question [sim:agree]")
	startRun(t, m, h, hostTok, "private", "Secret plans [sim:agree]")

	// The owner's browser session gets the page: newest run first, with its
	// question, status and cost in dollars and cents.
	owner := signIn(t, h, hostTok)
	rec := send(h, "GET", "/p/studio", "", []*http.Cookie{owner}, browser)
	body := rec.Body.String()
	if rec.Code != 200 || !strings.HasPrefix(rec.Header().Get("Content-Type"), "text/html") {
		t.Fatalf("owner's session: %d %s", rec.Code, body)
	}
	i, j := strings.Index(body, second), strings.Index(body, first)
	if i < 0 || j < 0 || i > j || !strings.Contains(body, "Second question") || !strings.Contains(body, `class="status consensus"`) {
		t.Fatalf("runs newest first (%d, %d): %s", i, j, body)
	}
	if !strings.Contains(body, `<td class="num">$0.`) || !strings.Contains(body, `id="ask-form"`) || !strings.Contains(body, "signed in as host") {
		t.Fatalf("owner's page lacks the cost, the ask form or who is signed in: %s", body)
	}
	if strings.Contains(body, "Secret plans") {
		t.Fatalf("the page of studio lists a run of private: %s", body)
	}

	// Account B's session, or token, gets no page of A's project: the page
	// of a project that does not exist.
	intruder := signIn(t, h, intruderTok)
	for _, who := range []struct {
		name    string
		cookies []*http.Cookie
		header  map[string]string
	}{
		{"session", []*http.Cookie{intruder}, browser},
		{"token", nil, map[string]string{"Accept": "text/html", "Authorization": "Bearer " + intruderTok}},
	} {
		body := errorPage(t, send(h, "GET", "/p/studio", "", who.cookies, who.header), 404, "No such project")
		if strings.Contains(body, "question") || strings.Contains(body, first) {
			t.Fatalf("intruder's %s sees the project: %s", who.name, body)
		}
	}

	// A viewer guest of studio sees its runs, without the ask form; an
	// editor guest gets the form.
	vtok, _ := invite(t, m, "studio", store.RoleViewer, 100_000, time.Hour)
	viewer := joinAs(t, h, vtok)
	rec = send(h, "GET", "/p/studio", "", []*http.Cookie{viewer}, browser)
	body = rec.Body.String()
	if rec.Code != 200 || !strings.Contains(body, "First question") || !strings.Contains(body, `id="guest"`) ||
		!strings.Contains(body, "$0.10") || strings.Contains(body, `id="ask-form"`) {
		t.Fatalf("viewer guest's page: %d %s", rec.Code, body)
	}
	etok, _ := invite(t, m, "studio", store.RoleEditor, 2_000_000, time.Hour)
	editor := joinAs(t, h, etok)
	if body := send(h, "GET", "/p/studio", "", []*http.Cookie{editor}, browser).Body.String(); !strings.Contains(body, `id="ask-form"`) {
		t.Fatalf("editor guest without the ask form: %s", body)
	}

	// A guest of studio sees nothing of the host's other project, nor of
	// the host's default project.
	for _, p := range []string{"private", "default"} {
		body := errorPage(t, send(h, "GET", "/p/"+p, "", []*http.Cookie{viewer}, browser), 404, "No such project")
		if strings.Contains(body, "Secret plans") {
			t.Fatalf("a guest of studio sees %s: %s", p, body)
		}
	}
	// A guest cookie of studio beside the owner's session does not hide
	// the owner's own other project.
	if rec := send(h, "GET", "/p/private", "", []*http.Cookie{viewer, owner}, browser); rec.Code != 200 ||
		!strings.Contains(rec.Body.String(), "Secret plans") {
		t.Fatalf("owner with a guest cookie on their own project: %d", rec.Code)
	}
}

// TestProjectPageShowsStrategy: each finished run's row names the strategy
// it answered with; a run recorded without one (an older history) is a debate.
func TestProjectPageShowsStrategy(t *testing.T) {
	s := harness.Store(t)
	harness.EnsureAccount(t, s, "owner")
	ctx := context.Background()
	tok, _ := s.CreateAPIToken(ctx, "owner", "")
	for _, r := range []store.ConsensusRun{
		{WorkflowID: "run-vote", Project: store.DefaultProject, Account: "owner", Prompt: "voted", Status: "consensus", Strategy: "vote"},
		{WorkflowID: "run-old", Project: store.DefaultProject, Account: "owner", Prompt: "older", Status: "consensus"},
	} {
		if err := s.RecordConsensus(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	h := (&api.Server{Store: s}).Handler()
	rec := send(h, "GET", "/p/default", "", []*http.Cookie{signIn(t, h, tok)}, browser)
	body := rec.Body.String()
	if rec.Code != 200 || !strings.Contains(body, "<th>strategy</th>") ||
		!strings.Contains(body, `<td class="strategy">vote</td>`) || !strings.Contains(body, `<td class="strategy">debate</td>`) {
		t.Fatalf("the page does not name each run's strategy: %d %s", rec.Code, body)
	}
}
