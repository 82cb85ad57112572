package api_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/superinstance/mesh/internal/api"
	"github.com/superinstance/mesh/internal/simulator"
	"github.com/superinstance/mesh/test/harness"
)

// A vote in progress is listed on the dashboard (its JSON and its page)
// with its strategy.
func TestDashboardRunningRunNamesItsStrategy(t *testing.T) {
	m := harness.StartMesh(t, simulator.Options{Latency: 1500 * time.Millisecond})
	m.Account(t, "voter")
	h := (&api.Server{Store: m.Store, Temporal: m.Client}).Handler()
	session := signInAccount(t, m, h, "voter")
	tok, _ := m.Store.CreateAPIToken(t.Context(), "voter", "")
	code, r := call(t, h, "POST", "/v1/consensus", tok, `{"prompt":"What is 2+2?","strategy":"vote","samples":3}`)
	if code != 202 {
		t.Fatalf("start: %d %+v", code, r.Error)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		rec := send(h, "GET", "/v1/dashboard", "", []*http.Cookie{session}, nil)
		var d api.Dashboard
		if err := json.Unmarshal(rec.Body.Bytes(), &d); err != nil {
			t.Fatalf("%d %s", rec.Code, rec.Body.String())
		}
		var got *api.RunInfo
		for _, p := range d.Projects {
			for i := range p.Running {
				if p.Running[i].ID == r.WorkflowID {
					got = &p.Running[i]
				}
			}
		}
		if got != nil {
			if got.Strategy != "vote" {
				t.Fatalf("the running vote is listed as %q", got.Strategy)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the run never showed as running: %s", rec.Body.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	page := send(h, "GET", "/", "", []*http.Cookie{session}, map[string]string{"Accept": "text/html"}).Body.String()
	if !strings.Contains(page, "<small>vote, round ") {
		t.Fatalf("the dashboard page does not name the running run's strategy: %s", page)
	}
	finish(t, m, r.WorkflowID)
}
