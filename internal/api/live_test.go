package api_test

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/converter"

	"github.com/superinstance/mesh/internal/api"
	"github.com/superinstance/mesh/internal/simulator"
	"github.com/superinstance/mesh/test/harness"
	"github.com/superinstance/mesh/workflows"
)

// The OpenAPI description names exactly the routes the server serves.
func TestOpenAPIMatchesRoutes(t *testing.T) {
	b, err := os.ReadFile("openapi.json")
	if err != nil {
		t.Fatal(err)
	}
	var spec struct {
		Paths map[string]map[string]struct {
			Responses map[string]json.RawMessage `json:"responses"`
		} `json:"paths"`
	}
	if err := json.Unmarshal(b, &spec); err != nil {
		t.Fatal(err)
	}
	var documented []string
	for path, ops := range spec.Paths {
		for method, op := range ops {
			if method == "parameters" {
				continue
			}
			documented = append(documented, strings.ToUpper(method)+" "+path)
			if len(op.Responses) == 0 {
				t.Errorf("%s %s documents no response", method, path)
			}
			for code, r := range op.Responses {
				if code >= "400" && !strings.Contains(string(r), "#/components/responses/Error") {
					t.Errorf("%s %s %s is not the JSON error", method, path, code)
				}
			}
		}
	}
	s := &api.Server{Webhook: http.NotFoundHandler()}
	var served []string
	for _, rt := range s.Routes() {
		served = append(served, rt.Method+" "+rt.Path)
	}
	sort.Strings(documented)
	sort.Strings(served)
	if strings.Join(documented, "\n") != strings.Join(served, "\n") {
		t.Fatalf("openapi.json and the routes differ:\ndocumented:\n%s\n\nserved:\n%s", strings.Join(documented, "\n"), strings.Join(served, "\n"))
	}
}

// sseEvent is one Server-Sent Event.
type sseEvent struct {
	name string
	data string
}

// readEvents reads events from an SSE body until "end" or EOF.
func readEvents(t *testing.T, body io.Reader) []sseEvent {
	t.Helper()
	var out []sseEvent
	sc := bufio.NewScanner(body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	var cur sseEvent
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "event: "):
			cur.name = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "data: "):
			cur.data = strings.TrimPrefix(line, "data: ")
		case line == "" && cur.name != "":
			out = append(out, cur)
			if cur.name == "end" {
				return out
			}
			cur = sseEvent{}
		}
	}
	return out
}

func TestConsensusStreamsOverSSE(t *testing.T) {
	m := harness.StartMesh(t, simulator.Options{Latency: 150 * time.Millisecond})
	m.Account(t, "alice")
	m.Account(t, "bob")
	ctx := context.Background()
	alice, _ := m.Store.CreateAPIToken(ctx, "alice", "")
	bob, _ := m.Store.CreateAPIToken(ctx, "bob", "")
	s := &api.Server{Store: m.Store, Temporal: m.Client}
	srv := httptest.NewServer(s.Handler())
	defer srv.Close()

	code, r := call(t, s.Handler(), "POST", "/v1/consensus", alice, `{"prompt":"Is P equal to NP? [sim:disagree]","max_rounds":2,"project":"research"}`)
	if code != 202 {
		t.Fatalf("start: %d %+v", code, r.Error)
	}
	id := r.WorkflowID
	open := func(token string) *http.Response {
		req, _ := http.NewRequest("GET", srv.URL+"/v1/consensus/"+id+"/events", nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	if resp := open(bob); resp.StatusCode != 404 {
		t.Fatalf("bob streams alice's run: %d", resp.StatusCode)
	}
	const viewers = 3
	results := make(chan []sseEvent, viewers)
	for range viewers {
		resp := open(alice)
		if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
			t.Fatalf("stream: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
		}
		go func() {
			defer resp.Body.Close()
			results <- readEvents(t, resp.Body)
		}()
	}
	for range viewers {
		events := <-results
		if len(events) < 3 || events[len(events)-1].name != "end" {
			t.Fatalf("events: %+v", events)
		}
		steps := -1
		var last workflows.ConsensusState
		for _, e := range events[:len(events)-1] {
			if e.name != "state" {
				t.Fatalf("unexpected event %+v", e)
			}
			var st workflows.ConsensusState
			if err := json.Unmarshal([]byte(e.data), &st); err != nil {
				t.Fatal(err)
			}
			if st.Steps < steps {
				t.Fatalf("steps went back from %d to %d", steps, st.Steps)
			}
			steps, last = st.Steps, st
		}
		// Pathos, two rounds of Logos and Ethos, the Arbiter.
		if last.Status != workflows.StatusArbiter || last.Steps != 6 || last.Arbiter == nil || len(last.Rounds) != 2 {
			t.Fatalf("final state %+v", last)
		}
		if len(events) < 4 {
			t.Fatalf("only %d events for a six-step run: progress was not streamed", len(events))
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for s.Hub.Watching() != 0 {
		if time.Now().After(deadline) {
			t.Fatal("the watcher outlived its viewers")
		}
		time.Sleep(10 * time.Millisecond)
	}
	// A finished run streams its final state and ends.
	resp := open(alice)
	events := readEvents(t, resp.Body)
	resp.Body.Close()
	if len(events) != 2 || events[0].name != "state" || events[1].name != "end" {
		t.Fatalf("finished run: %+v", events)
	}
}

func TestAccountEndpointsAndPages(t *testing.T) {
	m := harness.StartMesh(t, simulator.Options{})
	m.Account(t, "host")
	m.Account(t, "other")
	ctx := context.Background()
	host, _ := m.Store.CreateAPIToken(ctx, "host", "")
	other, _ := m.Store.CreateAPIToken(ctx, "other", "")
	h := (&api.Server{Store: m.Store, Temporal: m.Client, PublicURL: "https://mesh.example"}).Handler()
	do := func(method, path, token, cookie, body string) *httptest.ResponseRecorder {
		req := httptest.NewRequest(method, path, strings.NewReader(body))
		req.RemoteAddr = "10.2.0.1:1234"
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		if cookie != "" {
			req.Header.Set("Cookie", cookie)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec
	}
	// An invite over the API, its link, the guest it makes.
	rec := do("POST", "/v1/invites", host, "", `{"project":"crew","role":"editor","quota":"0.50","expires":"2h"}`)
	var inv api.InviteInfo
	if err := json.Unmarshal(rec.Body.Bytes(), &inv); err != nil || rec.Code != 201 || !strings.HasPrefix(inv.Link, "https://mesh.example/join/si_inv_") ||
		inv.Quota != 500_000 {
		t.Fatalf("create invite: %d %s", rec.Code, rec.Body.String())
	}
	if rec := do("POST", "/v1/invites", other, "", `{"project":"crew","quota":"1"}`); rec.Code != 404 {
		t.Fatalf("a stranger invites to crew: %d %s", rec.Code, rec.Body.String())
	}
	if rec := do("POST", "/v1/invites", host, "", `{"project":"crew","quota":"1","role":"admin"}`); rec.Code != 400 || errorCode(t, rec) != "invalid_request" {
		t.Fatalf("unknown role: %d %s", rec.Code, rec.Body.String())
	}
	if rec := do("POST", "/v1/invites", host, "", `{"project":"crew","quota":"-1"}`); rec.Code != 400 || errorCode(t, rec) != "invalid_request" {
		t.Fatalf("negative quota: %d %s", rec.Code, rec.Body.String())
	}
	join := do("POST", "/join/"+inv.Token, "", "", "")
	secret := guestCookie(t, join)
	guest := api.GuestCookie + "=" + secret
	rec = do("GET", "/v1/me", "", guest, "")
	var me api.Me
	if err := json.Unmarshal(rec.Body.Bytes(), &me); err != nil || me.Kind != "guest" || me.Guest.Remaining != 500_000 || me.Guest.Session == secret {
		t.Fatalf("guest /v1/me: %s", rec.Body.String())
	}
	if rec := do("GET", "/v1/balance", "", guest, ""); rec.Code != 403 {
		t.Fatalf("guest reads the host's balance: %d", rec.Code)
	}
	if rec := do("GET", "/v1/balance", host, "", ""); rec.Code != 200 || !strings.Contains(rec.Body.String(), `"account":"host"`) {
		t.Fatalf("balance: %d %s", rec.Code, rec.Body.String())
	}
	if rec := do("GET", "/v1/usage?since=forever", host, "", ""); rec.Code != 400 {
		t.Fatalf("bad since: %d", rec.Code)
	}
	if rec := do("GET", "/v1/usage?since=1h&limit=10", host, "", ""); rec.Code != 200 || !strings.Contains(rec.Body.String(), `"events":[]`) {
		t.Fatalf("usage: %d %s", rec.Code, rec.Body.String())
	}
	// The host sees the project's guests; the guest and strangers do not.
	rec = do("GET", "/v1/projects/crew/guests", host, "", "")
	if rec.Code != 200 || !strings.Contains(rec.Body.String(), `"remaining_micros":500000`) {
		t.Fatalf("guests: %d %s", rec.Code, rec.Body.String())
	}
	for _, who := range []struct{ token, cookie string }{{"", guest}, {other, ""}} {
		if rec := do("GET", "/v1/projects/crew/guests", who.token, who.cookie, ""); rec.Code != 404 {
			t.Fatalf("guests seen by %v: %d", who, rec.Code)
		}
	}
	if rec := do("GET", "/v1/invites", host, "", ""); rec.Code != 200 || !strings.Contains(rec.Body.String(), `"state":"accepted"`) {
		t.Fatalf("list invites: %d %s", rec.Code, rec.Body.String())
	}
	// Revoke: a stranger cannot; the host can while it is pending.
	rec = do("POST", "/v1/invites", host, "", `{"project":"crew","quota":"0.10"}`)
	var inv2 api.InviteInfo
	_ = json.Unmarshal(rec.Body.Bytes(), &inv2)
	if rec := do("POST", "/v1/invites/"+inv2.ID+"/revoke", other, "", ""); rec.Code != 404 {
		t.Fatalf("stranger revokes: %d", rec.Code)
	}
	if rec := do("POST", "/v1/invites/"+inv2.ID+"/revoke", host, "", ""); rec.Code != 200 || !strings.Contains(rec.Body.String(), `"state":"revoked"`) {
		t.Fatalf("revoke: %d %s", rec.Code, rec.Body.String())
	}
	if rec := do("POST", "/v1/invites/"+inv2.ID+"/revoke", host, "", ""); rec.Code != 409 {
		t.Fatalf("revoke twice: %d %s", rec.Code, rec.Body.String())
	}
	// A browser session from a token: the cookie authenticates, sign-out clears it.
	if rec := do("POST", "/v1/session", "", "", `{"token":"si_nope"}`); rec.Code != 401 {
		t.Fatalf("bad token sign-in: %d", rec.Code)
	}
	rec = do("POST", "/v1/session", "", "", `{"token":"`+host+`"}`)
	var session string
	for _, c := range rec.Result().Cookies() {
		if c.Name == api.SessionCookie && c.HttpOnly && c.SameSite == http.SameSiteStrictMode {
			session = api.SessionCookie + "=" + c.Value
		}
	}
	if rec.Code != 200 || session == "" {
		t.Fatalf("sign-in: %d %v", rec.Code, rec.Result().Cookies())
	}
	if rec := do("GET", "/v1/me", "", session, ""); !strings.Contains(rec.Body.String(), `"account":"host"`) {
		t.Fatalf("session /v1/me: %s", rec.Body.String())
	}
	if rec := do("DELETE", "/v1/session", "", session, ""); rec.Code != 204 || len(rec.Result().Cookies()) != 2 || rec.Result().Cookies()[0].MaxAge >= 0 {
		t.Fatalf("sign-out: %d %v", rec.Code, rec.Result().Cookies())
	}
	// The live page and its assets are embedded.
	if rec := do("GET", "/c/consensus-x", "", "", ""); rec.Code != 200 || !strings.Contains(rec.Body.String(), `<script src="/assets/live.js">`) {
		t.Fatalf("live page: %d", rec.Code)
	}
	if rec := do("GET", "/assets/live.js", "", "", ""); rec.Code != 200 || !strings.Contains(rec.Header().Get("Content-Type"), "javascript") ||
		!strings.Contains(rec.Body.String(), "EventSource") {
		t.Fatalf("live.js: %d %s", rec.Code, rec.Header().Get("Content-Type"))
	}
	if rec := do("GET", "/assets/nothing.js", "", "", ""); rec.Code != 404 || errorCode(t, rec) != "not_found" {
		t.Fatalf("missing asset: %d", rec.Code)
	}
	if rec := do("GET", "/openapi.json", "", "", ""); rec.Code != 200 || !strings.Contains(rec.Body.String(), `"openapi": "3.0.3"`) {
		t.Fatalf("openapi.json: %d", rec.Code)
	}
}

// countingClient counts the queries the API makes of Temporal.
type countingClient struct {
	client.Client
	queries atomic.Int64
}

func (c *countingClient) QueryWorkflow(ctx context.Context, id, runID, name string, args ...any) (converter.EncodedValue, error) {
	c.queries.Add(1)
	return c.Client.QueryWorkflow(ctx, id, runID, name, args...)
}

// countingAPI serves the API over a mesh whose Temporal queries are
// counted, with an API token of account.
func countingAPI(t *testing.T, sim simulator.Options, account string) (*api.Server, *httptest.Server, string, *countingClient) {
	t.Helper()
	m := harness.StartMesh(t, sim)
	m.Account(t, account)
	token, err := m.Store.CreateAPIToken(context.Background(), account, "")
	if err != nil {
		t.Fatal(err)
	}
	counting := &countingClient{Client: m.Client}
	s := &api.Server{Store: m.Store, Temporal: counting}
	srv := httptest.NewServer(s.Handler())
	t.Cleanup(srv.Close)
	return s, srv, token, counting
}

// TestManyViewersOpeningARunShareOneWatcher is the operator's test of a
// crowd: a hundred viewers open a run's stream at once, before anyone
// watches it. They wait for its one watcher's first state instead of each
// querying the workflow (a hundred queries at once, on a busy machine,
// time out and answer 404), and every one gets the stream.
func TestManyViewersOpeningARunShareOneWatcher(t *testing.T) {
	s, srv, alice, counting := countingAPI(t, simulator.Options{Latency: 300 * time.Millisecond}, "alice")
	code, r := call(t, s.Handler(), "POST", "/v1/consensus", alice, `{"prompt":"A crowd [sim:agree]","max_rounds":1}`)
	if code != 202 {
		t.Fatalf("start: %d %+v", code, r.Error)
	}
	const viewers = 100
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: viewers}}
	before := counting.queries.Load()
	start := time.Now()
	statuses := make(chan int, viewers)
	var bodies sync.WaitGroup
	for range viewers {
		go func() {
			req, _ := http.NewRequest("GET", srv.URL+"/v1/consensus/"+r.WorkflowID+"/events", nil)
			req.Header.Set("Authorization", "Bearer "+alice)
			resp, err := client.Do(req)
			if err != nil {
				statuses <- 0
				return
			}
			statuses <- resp.StatusCode
			bodies.Add(1)
			go func() { defer bodies.Done(); _, _ = io.Copy(io.Discard, resp.Body); resp.Body.Close() }()
		}()
	}
	for range viewers {
		if code := <-statuses; code != 200 {
			t.Fatalf("a viewer's stream answered %d", code)
		}
	}
	opened := time.Since(start)
	queries := counting.queries.Load() - before
	// One watcher polls every 25 ms while the crowd connects; a query per
	// viewer would be a hundred more.
	if limit := int64(opened/(25*time.Millisecond)) + 10; queries > limit {
		t.Fatalf("%d viewers opened in %v with %d queries of the workflow (at most %d for one watcher)", viewers, opened, queries, limit)
	}
	bodies.Wait()
}

// TestAStreamOfNoRunCostsAQuery is the stranger's test: streams opened for
// made-up run ids (any token may try) answer 404 after a query or two
// each, not after a second of a watcher's queries.
func TestAStreamOfNoRunCostsAQuery(t *testing.T) {
	_, srv, token, counting := countingAPI(t, simulator.Options{}, "mallory")
	for i := range 5 {
		before := counting.queries.Load()
		req, _ := http.NewRequest("GET", srv.URL+"/v1/consensus/consensus-made-up-"+strconv.Itoa(i)+"/events", nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if n := counting.queries.Load() - before; resp.StatusCode != 404 || n > 3 {
			t.Fatalf("a made-up run: %d after %d queries of Temporal (want 404 after at most 3)", resp.StatusCode, n)
		}
	}
}
