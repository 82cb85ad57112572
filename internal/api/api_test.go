package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/superinstance/mesh/internal/api"
	"github.com/superinstance/mesh/internal/money"
	"github.com/superinstance/mesh/internal/simulator"
	"github.com/superinstance/mesh/internal/store"
	"github.com/superinstance/mesh/test/harness"
	"github.com/superinstance/mesh/workflows"
)

func TestMain(m *testing.M) { harness.Main(m) }

type reply struct {
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
	WorkflowID string `json:"workflow_id"`
	workflows.ConsensusState
}

func call(t *testing.T, h http.Handler, method, path, token, body string) (int, reply) {
	t.Helper()
	req := httptest.NewRequest(method, path, bytes.NewBufferString(body))
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	var r reply
	if err := json.Unmarshal(rec.Body.Bytes(), &r); err != nil {
		t.Fatalf("%s %s: not JSON: %s", method, path, rec.Body.String())
	}
	return rec.Code, r
}

func TestAPI(t *testing.T) {
	m := harness.StartMesh(t, simulator.Options{})
	m.Account(t, "alice")
	m.Account(t, "bob")
	ctx := context.Background()
	alice, err := m.Store.CreateAPIToken(ctx, "alice", "test")
	if err != nil {
		t.Fatal(err)
	}
	bob, _ := m.Store.CreateAPIToken(ctx, "bob", "")
	h := (&api.Server{Store: m.Store, Temporal: m.Client}).Handler()

	if code, r := call(t, h, "POST", "/v1/consensus", "", `{"prompt":"q"}`); code != 401 || r.Error.Code != "unauthenticated" {
		t.Fatalf("no token: %d %+v", code, r.Error)
	}
	if code, _ := call(t, h, "POST", "/v1/consensus", "si_forged", `{"prompt":"q"}`); code != 401 {
		t.Fatalf("forged token: %d", code)
	}
	for body, want := range map[string]string{`{"prompt":`: "invalid_json", `{"prompt":"q","surprise":1}`: "invalid_json",
		`{"prompt":""}`: "invalid_request", `{"prompt":"q","threshold":7}`: "invalid_request"} {
		if code, r := call(t, h, "POST", "/v1/consensus", alice, body); code != 400 || r.Error.Code != want {
			t.Fatalf("%s: %d %+v", body, code, r.Error)
		}
	}

	code, r := call(t, h, "POST", "/v1/consensus", alice, `{"prompt":"Why? [sim:agree]","project":"docs"}`)
	if code != 202 || !strings.HasPrefix(r.WorkflowID, "consensus-") {
		t.Fatalf("start: %d %+v", code, r)
	}
	id := r.WorkflowID
	run := m.Client.GetWorkflow(ctx, id, "")
	if err := run.Get(ctx, nil); err != nil {
		t.Fatal(err)
	}
	if code, st := call(t, h, "GET", "/v1/consensus/"+id, alice, ""); code != 200 || st.Status != workflows.StatusConsensus || st.Account != "alice" {
		t.Fatalf("state: %d %+v", code, st)
	}
	if code, _ := call(t, h, "GET", "/v1/consensus/"+id, bob, ""); code != 404 {
		t.Fatalf("bob reads alice's run: %d", code)
	}

	// Under the ceiling but without room for the run's worst case: 402
	// before anything runs, saying what to do.
	acct, _ := m.Store.AccountByID(ctx, "alice")
	if err := m.Store.SetCeiling(ctx, "alice", acct.Unbilled+money.Cent); err != nil {
		t.Fatal(err)
	}
	code, r = call(t, h, "POST", "/v1/consensus", alice, `{"prompt":"a big one"}`)
	if code != http.StatusPaymentRequired || r.Error.Code != "insufficient_headroom" || !strings.HasPrefix(r.Error.Message, "not enough headroom") || r.WorkflowID != "" {
		t.Fatalf("no headroom: %d %+v", code, r)
	}
	if a, _ := m.Store.AccountByID(ctx, "alice"); a.Status != "active" || a.Unbilled != acct.Unbilled {
		t.Fatalf("a refused run changed the account: %+v", a)
	}

	// At the ceiling: 402, naming the reason, and no workflow starts.
	if err := m.Store.SetCeiling(ctx, "alice", 1); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Store.LogUsage(ctx, store.Usage{EventID: "push", Account: "alice", Project: "p", Model: "m", PromptTokens: 1000}); err != nil {
		t.Fatal(err)
	}
	code, r = call(t, h, "POST", "/v1/consensus", alice, `{"prompt":"more"}`)
	if code != http.StatusPaymentRequired || r.Error.Code != "credit_ceiling" || !strings.HasPrefix(r.Error.Message, "credit ceiling reached") || r.WorkflowID != "" {
		t.Fatalf("suspended: %d %+v", code, r)
	}
}
