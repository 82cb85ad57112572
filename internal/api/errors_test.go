package api_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/superinstance/mesh/internal/api"
	"github.com/superinstance/mesh/internal/simulator"
	"github.com/superinstance/mesh/internal/store"
	"github.com/superinstance/mesh/test/harness"
)

type apiError struct {
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
		Param   string `json:"param"`
	} `json:"error"`
}

// jsonError decodes the documented JSON error, failing on anything else.
func jsonError(t *testing.T, rec *httptest.ResponseRecorder) apiError {
	t.Helper()
	var e apiError
	if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
		t.Fatalf("%d answered %q, not JSON: %s", rec.Code, ct, rec.Body.String())
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &e); err != nil || e.Error.Code == "" || e.Error.Message == "" {
		t.Fatalf("not the JSON error: %s", rec.Body.String())
	}
	return e
}

// errorPage checks an HTML error page: the status, that it says what
// happened and what to do, and that it is the shared template.
func errorPage(t *testing.T, rec *httptest.ResponseRecorder, status int, says ...string) string {
	t.Helper()
	body := rec.Body.String()
	if rec.Code != status || !strings.HasPrefix(rec.Header().Get("Content-Type"), "text/html") {
		t.Fatalf("want an HTML page with %d, got %d %q: %s", status, rec.Code, rec.Header().Get("Content-Type"), body)
	}
	if !strings.Contains(body, `id="problem"`) || !strings.Contains(body, `id="problem-do"`) || !strings.Contains(body, "/assets/style.css") {
		t.Fatalf("not the shared error page: %s", body)
	}
	for _, s := range says {
		if !strings.Contains(body, s) {
			t.Fatalf("the page does not say %q: %s", s, body)
		}
	}
	return body
}

var browser = map[string]string{"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}

func TestAPIErrorsAreTheDocumentedJSON(t *testing.T) {
	m := harness.StartMesh(t, simulator.Options{})
	m.Account(t, "alice")
	tok, err := m.Store.CreateAPIToken(context.Background(), "alice", "")
	if err != nil {
		t.Fatal(err)
	}
	h := (&api.Server{Store: m.Store, Temporal: m.Client}).Handler()
	auth := map[string]string{"Authorization": "Bearer " + tok}

	// Unknown routes and wrong methods on API paths.
	for _, path := range []string{"/v1/nothing", "/v1/consensus/x/y/z", "/v1"} {
		rec := send(h, "GET", path, "", nil, auth)
		if e := jsonError(t, rec); rec.Code != 404 || e.Error.Code != "not_found" {
			t.Fatalf("GET %s: %d %+v", path, rec.Code, e)
		}
	}
	for _, c := range []struct{ method, path, allow string }{
		{"PUT", "/v1/consensus", "POST"}, {"DELETE", "/v1/me", "GET"}, {"POST", "/openapi.json", "GET"}} {
		rec := send(h, c.method, c.path, "", nil, auth)
		e := jsonError(t, rec)
		if rec.Code != 405 || e.Error.Code != "method_not_allowed" || !strings.Contains(rec.Header().Get("Allow"), c.allow) ||
			!strings.Contains(e.Error.Message, c.allow) {
			t.Fatalf("%s %s: %d Allow %q %+v", c.method, c.path, rec.Code, rec.Header().Get("Allow"), e)
		}
	}
	// A body over the limit is 413, on every JSON endpoint.
	big := `{"prompt":"` + strings.Repeat("x", 2<<20) + `"}`
	for _, path := range []string{"/v1/consensus", "/v1/invites", "/v1/handovers"} {
		rec := send(h, "POST", path, big, nil, auth)
		if e := jsonError(t, rec); rec.Code != 413 || e.Error.Code != "request_too_large" {
			t.Fatalf("2 MB body on %s: %d %+v", path, rec.Code, e)
		}
	}
	// 400s name the request's field and the JSON it takes, never a Go type.
	for body, want := range map[string]struct{ msg, param string }{
		`{"prompt":"q","max_rounds":"three"}`: {"max_rounds must be a whole number, not a string", "max_rounds"},
		`{"prompt":"q","max_rounds":1.5}`:     {"max_rounds must be a whole number, not a number", "max_rounds"},
		`{"prompt":5}`:                        {"prompt must be a string, not a number", "prompt"},
		`{"prompt":"q","threshold":"high"}`:   {"threshold must be a number, not a string", "threshold"},
		`{"prompt":"q","surprise":1}`:         {`unknown field "surprise"`, "surprise"},
		`["q"]`:                               {"the body must be a JSON object, not a list", ""},
		``:                                    {"the body is empty", ""},
		`{"prompt":`:                          {"ends in the middle", ""},
		`{"prompt":"q"}{"prompt":"r"}`:        {"more than one JSON value", ""},
		`{"prompt" "q"}`:                      {"not valid JSON", ""},
	} {
		rec := send(h, "POST", "/v1/consensus", body, nil, auth)
		e := jsonError(t, rec)
		if rec.Code != 400 || e.Error.Code != "invalid_json" || !strings.Contains(e.Error.Message, want.msg) || e.Error.Param != want.param {
			t.Fatalf("%s: %d %+v, want %q (param %q)", body, rec.Code, e, want.msg, want.param)
		}
		for _, goism := range []string{"ConsensusRequest", "Go value", "int", "float64", "struct"} {
			if strings.Contains(e.Error.Message, goism) {
				t.Fatalf("%s: the message names Go's %q: %s", body, goism, e.Error.Message)
			}
		}
	}
	// The Bearer scheme in any case.
	for _, scheme := range []string{"Bearer", "bearer", "BEARER", "bEaReR"} {
		rec := send(h, "GET", "/v1/me", "", nil, map[string]string{"Authorization": scheme + " " + tok})
		if rec.Code != 200 || !strings.Contains(rec.Body.String(), `"account":"alice"`) {
			t.Fatalf("Authorization: %s ...: %d %s", scheme, rec.Code, rec.Body.String())
		}
	}
	if rec := send(h, "GET", "/v1/me", "", nil, map[string]string{"Authorization": "Basic " + tok}); rec.Code != 401 {
		t.Fatalf("another scheme: %d", rec.Code)
	}
}

func TestPageErrorsAreHTMLPages(t *testing.T) {
	m := harness.StartMesh(t, simulator.Options{})
	m.Account(t, "host")
	m.Account(t, "other")
	ctx := context.Background()
	hostTok, _ := m.Store.CreateAPIToken(ctx, "host", "")
	otherTok, _ := m.Store.CreateAPIToken(ctx, "other", "")
	if _, err := m.Store.ClaimProject(ctx, "studio", "host"); err != nil {
		t.Fatal(err)
	}
	h := (&api.Server{Store: m.Store, Temporal: m.Client}).Handler()
	with := func(extra map[string]string) map[string]string {
		out := map[string]string{}
		for k, v := range browser {
			out[k] = v
		}
		for k, v := range extra {
			out[k] = v
		}
		return out
	}

	// A bad invite link, then a used one.
	errorPage(t, send(h, "GET", "/join/si_inv_nothing", "", nil, browser), 404, "not valid", "ask the host for a new one")
	tok, _ := invite(t, m, "studio", store.RoleViewer, 100_000, time.Hour)
	joinAs(t, h, tok)
	errorPage(t, send(h, "GET", "/join/"+tok, "", nil, browser), 410, "ask the host for a new invite")
	errorPage(t, send(h, "POST", "/join/"+tok, "", nil, browser), 410, "ask the host for a new invite")
	// An API client still gets JSON from the same links.
	if e := jsonError(t, send(h, "GET", "/join/"+tok, "", nil, nil)); e.Error.Code != "invite_closed" {
		t.Fatalf("API client on a used invite: %+v", e)
	}
	// A bad handover link.
	errorPage(t, send(h, "GET", "/handover/si_ho_nothing", "", nil, browser), 404, "handover link is not valid", "newest link in your email")
	// An unknown run id, and a run of another account: the same page.
	errorPage(t, send(h, "GET", "/c/consensus-nothing", "", nil, with(map[string]string{"Authorization": "Bearer " + hostTok})), 404,
		"No such run", "consensus-nothing")
	errorPage(t, send(h, "GET", "/c/not-a-run", "", nil, with(map[string]string{"Authorization": "Bearer " + hostTok})), 404, "No such run")
	// A project one may not see, and one that does not exist: the same page.
	a := errorPage(t, send(h, "GET", "/p/studio", "", nil, with(map[string]string{"Authorization": "Bearer " + otherTok})), 404, "No such project")
	b := errorPage(t, send(h, "GET", "/p/nowhere", "", nil, with(map[string]string{"Authorization": "Bearer " + otherTok})), 404, "No such project")
	if strings.ReplaceAll(a, "studio", "X") != strings.ReplaceAll(b, "nowhere", "X") {
		t.Fatalf("a hidden project's page differs from a missing one's:\n%s\n%s", a, b)
	}
	// A signed-out visitor: a page with the sign-in form.
	if body := errorPage(t, send(h, "GET", "/p/studio", "", nil, browser), 401, "not signed in"); !strings.Contains(body, `id="signin-form"`) {
		t.Fatalf("no sign-in form: %s", body)
	}
	errorPage(t, send(h, "GET", "/p/studio", "", []*http.Cookie{{Name: api.SessionCookie, Value: "si_bs_gone"}}, browser), 401, "session has ended")
	// An unknown page, and a wrong method on a page.
	errorPage(t, send(h, "GET", "/nowhere/at/all", "", nil, browser), 404, "Nothing lives at /nowhere/at/all")
	rec := send(h, "DELETE", "/p/studio", "", nil, browser)
	errorPage(t, rec, 405, "Use GET")
	if !strings.Contains(rec.Header().Get("Allow"), "GET") {
		t.Fatalf("405 page without Allow: %v", rec.Header())
	}
}

// FuzzDecodeConsensusRequest: whatever the bytes, the decoder answers 202
// territory (a decoded request) or one documented JSON error, 400 or 413,
// whose message names no Go type.
func FuzzDecodeConsensusRequest(f *testing.F) {
	for _, s := range []string{`{"prompt":"q"}`, `{"prompt":5}`, `{"max_rounds":"x"}`, `[`, ``, `{"a":1}`, `{"prompt":"q"} x`,
		`{"threshold":1e999}`, `{"prompt":"\ud800"}`, `null`, `{"max_tokens":-1}`, `{"lora":{"x":1}}`} {
		f.Add([]byte(s))
	}
	h := (&api.Server{}).DecodeOnly()
	f.Fuzz(func(t *testing.T, body []byte) {
		req := httptest.NewRequest("POST", "/", strings.NewReader(string(body)))
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code == 200 {
			return
		}
		if rec.Code != 400 && rec.Code != 413 {
			t.Fatalf("%q: %d", body, rec.Code)
		}
		var e apiError
		if err := json.Unmarshal(rec.Body.Bytes(), &e); err != nil || e.Error.Code == "" || e.Error.Message == "" {
			t.Fatalf("%q: not the JSON error: %s", body, rec.Body.String())
		}
		for _, goism := range []string{"api.Consensus", "Go value", "ConsensusRequest", "json: "} {
			if strings.Contains(e.Error.Message, goism) {
				t.Fatalf("%q: message names %q: %s", body, goism, e.Error.Message)
			}
		}
	})
}
