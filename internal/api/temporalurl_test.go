package api_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/superinstance/mesh/internal/api"
	"github.com/superinstance/mesh/internal/simulator"
	"github.com/superinstance/mesh/test/harness"
)

// The link to a run in the Temporal Web UI is for the run's own account:
// a member of its project or a guest reading the run gets no operator link,
// neither from GET /v1/consensus/{id} nor from its event stream.
func TestTemporalLinkOnlyForTheRunsAccount(t *testing.T) {
	m := harness.StartMesh(t, simulator.Options{Latency: 300 * time.Millisecond})
	m.Account(t, "host")
	m.Account(t, "member")
	ctx := context.Background()
	if _, err := m.Store.ClaimProject(ctx, "team", "host"); err != nil {
		t.Fatal(err)
	}
	if err := m.Store.AddMember(ctx, "team", "member", "viewer"); err != nil {
		t.Fatal(err)
	}
	hostTok, _ := m.Store.CreateAPIToken(ctx, "host", "")
	memberTok, _ := m.Store.CreateAPIToken(ctx, "member", "")
	s := &api.Server{Store: m.Store, Temporal: m.Client, TemporalUIURL: "http://temporal-ui.internal:8233"}
	h := s.Handler()
	srv := httptest.NewServer(h)
	defer srv.Close()
	tok, _ := invite(t, m, "team", "viewer", 50_000, time.Hour)
	guest := joinAs(t, h, tok)

	code, r := call(t, h, "POST", "/v1/consensus", hostTok, `{"prompt":"a team question [sim:agree]","project":"team","placement":"cloud","max_rounds":1}`)
	if code != http.StatusAccepted {
		t.Fatalf("start: %d %+v", code, r.Error)
	}
	id := r.WorkflowID
	type viewer struct {
		name    string
		header  map[string]string
		cookies []*http.Cookie
		link    bool
	}
	viewers := []viewer{
		{"host", map[string]string{"Authorization": "Bearer " + hostTok}, nil, true},
		{"member", map[string]string{"Authorization": "Bearer " + memberTok}, nil, false},
		{"guest", nil, []*http.Cookie{guest}, false},
	}
	streams := make(chan string, len(viewers))
	for _, v := range viewers {
		req, _ := http.NewRequest("GET", srv.URL+"/v1/consensus/"+id+"/events", nil)
		for k, val := range v.header {
			req.Header.Set(k, val)
		}
		for _, c := range v.cookies {
			req.AddCookie(c)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("%s's stream: %v %v", v.name, err, resp)
		}
		go func() {
			defer resp.Body.Close()
			var b strings.Builder
			for _, ev := range readEvents(t, resp.Body) {
				if ev.name == "state" {
					b.WriteString(ev.data + "\n")
				}
			}
			streams <- v.name + "\n" + b.String()
		}()
	}
	for range viewers {
		got := <-streams
		name, events, _ := strings.Cut(got, "\n")
		link := strings.Contains(events, "temporal-ui.internal")
		want := name == "host"
		if events == "" || link != want {
			t.Errorf("%s's event stream carries the Temporal link: %v, want %v:\n%s", name, link, want, events)
		}
	}
	finish(t, m, id)
	for _, v := range viewers {
		rec := send(h, "GET", "/v1/consensus/"+id, "", v.cookies, v.header)
		if rec.Code != 200 {
			t.Fatalf("%s reads the run: %d %s", v.name, rec.Code, rec.Body.String())
		}
		if link := strings.Contains(rec.Body.String(), `"temporal_url"`); link != v.link {
			t.Errorf("%s's GET /v1/consensus carries temporal_url: %v, want %v", v.name, link, v.link)
		}
	}
}
