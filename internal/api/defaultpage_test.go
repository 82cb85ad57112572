package api_test

import (
	"context"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/converter"

	"github.com/superinstance/mesh/internal/api"
	"github.com/superinstance/mesh/internal/simulator"
	"github.com/superinstance/mesh/test/harness"
)

// queryCounter is a Temporal client that notes which workflows the API queries.
type queryCounter struct {
	client.Client
	mu      sync.Mutex
	queried []string
}

func (q *queryCounter) QueryWorkflow(ctx context.Context, id, runID, name string, args ...any) (converter.EncodedValue, error) {
	q.mu.Lock()
	q.queried = append(q.queried, id)
	q.mu.Unlock()
	return q.Client.QueryWorkflow(ctx, id, runID, name, args...)
}

// Every account's default runs share one project name: /p/default must
// list the caller's own runs in progress, query none of another account's
// workflows, and not lose the caller's run behind 25 of someone else's.
func TestDefaultPageQueriesOnlyTheCallersRuns(t *testing.T) {
	m := harness.StartMesh(t, simulator.Options{Latency: 4 * time.Second})
	// Accounts of their own: the package's meshes share Temporal, so a run
	// another test left going may still be worked on here.
	alice, bob := harness.UniqueID("alice"), harness.UniqueID("bob")
	m.Account(t, alice)
	m.Account(t, bob)
	ctx := context.Background()
	aliceTok, _ := m.Store.CreateAPIToken(ctx, alice, "")
	bobTok, _ := m.Store.CreateAPIToken(ctx, bob, "")
	qc := &queryCounter{Client: m.Client}
	h := (&api.Server{Store: m.Store, Temporal: qc}).Handler()

	start := func(tok, prompt string) string {
		t.Helper()
		code, r := call(t, h, "POST", "/v1/consensus", tok, `{"prompt":"`+prompt+`","placement":"cloud","max_rounds":1}`)
		if code != http.StatusAccepted {
			t.Fatalf("start: %d %+v", code, r.Error)
		}
		return r.WorkflowID
	}
	mine := start(aliceTok, "alice's own question [sim:agree]")
	var bobs []string
	for range 25 {
		bobs = append(bobs, start(bobTok, "bob's question [sim:agree]"))
	}
	t.Cleanup(func() {
		for _, id := range append(bobs, mine) {
			_ = m.Client.TerminateWorkflow(context.Background(), id, "", "test over")
		}
	})
	qc.mu.Lock()
	qc.queried = nil
	qc.mu.Unlock()

	// A run whose state query times out (a loaded worker) is left off one
	// load of the page and shown by a later one, as the page refreshes
	// itself; bob's runs must be on none of them.
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(500 * time.Millisecond) {
		page := send(h, "GET", "/p/default", "", nil, map[string]string{"Accept": "text/html", "Authorization": "Bearer " + aliceTok})
		body := page.Body.String()
		if strings.Contains(body, "bob's question") {
			t.Fatalf("alice's /p/default shows bob's run: %s", body)
		}
		if page.Code == 200 && strings.Contains(body, mine) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("alice's /p/default does not list her run %s: %d %s", mine, page.Code, body)
		}
	}
	qc.mu.Lock()
	defer qc.mu.Unlock()
	for _, id := range qc.queried {
		if slices.Contains(bobs, id) {
			t.Fatalf("alice's /p/default queried %d workflows, among them bob's %s", len(qc.queried), id)
		}
	}
}
