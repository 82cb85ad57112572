package api_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/superinstance/mesh/internal/api"
	"github.com/superinstance/mesh/internal/simulator"
	"github.com/superinstance/mesh/test/harness"
	"github.com/superinstance/mesh/workflows"
)

// TestStrategyThroughTheAPI: a vote's strategy, samples and temperature
// go in with the request and come back in the state; bad ones are a 400
// that names the field.
func TestStrategyThroughTheAPI(t *testing.T) {
	m := harness.StartMesh(t, simulator.Options{})
	m.Account(t, "alice")
	ctx := context.Background()
	alice, err := m.Store.CreateAPIToken(ctx, "alice", "test")
	if err != nil {
		t.Fatal(err)
	}
	h := (&api.Server{Store: m.Store, Temporal: m.Client}).Handler()
	for body, want := range map[string]string{
		`{"prompt":"q","strategy":"poll"}`:                   `invalid strategy "poll"`,
		`{"prompt":"q","strategy":"vote","samples":16}`:      "samples 16 is outside 1..15",
		`{"prompt":"q","strategy":"vote","temperature":2.5}`: "temperature 2.5 is outside 0..2",
		`{"prompt":"q","samples":3}`:                         "samples and temperature apply to the vote and single strategies",
	} {
		if code, r := call(t, h, "POST", "/v1/consensus", alice, body); code != 400 || r.Error.Code != "invalid_request" || !strings.Contains(r.Error.Message, want) {
			t.Fatalf("%s: %d %+v", body, code, r.Error)
		}
	}
	code, r := call(t, h, "POST", "/v1/consensus", alice, `{"prompt":"What is 2+2?","strategy":"vote","samples":3,"temperature":0.5}`)
	if code != 202 {
		t.Fatalf("start: %d %+v", code, r)
	}
	if err := m.Client.GetWorkflow(ctx, r.WorkflowID, "").Get(ctx, nil); err != nil {
		t.Fatal(err)
	}
	code, st := call(t, h, "GET", "/v1/consensus/"+r.WorkflowID, alice, "")
	if code != 200 || st.Strategy != workflows.StrategyVote || st.Samples != 3 || st.Temperature == nil || *st.Temperature != 0.5 ||
		len(st.Votes) != 3 || st.Steps != 4 || st.Answer == "" || st.Charged <= 0 || st.Tokens <= 0 {
		t.Fatalf("state: %d %+v", code, st.ConsensusState)
	}
}

// TestContinueFromAnyFinishedRun: a failed run can be continued, and a
// finished one; Pathos reads the new prompt (not the old manifest); a run
// still in progress is a 409 that says to wait; another account's run is
// as absent as one that never was.
func TestContinueFromAnyFinishedRun(t *testing.T) {
	m := harness.StartMesh(t, simulator.Options{Latency: 100 * time.Millisecond})
	m.Account(t, "alice")
	m.Account(t, "bob")
	ctx := context.Background()
	alice, _ := m.Store.CreateAPIToken(ctx, "alice", "test")
	bob, _ := m.Store.CreateAPIToken(ctx, "bob", "test")
	h := (&api.Server{Store: m.Store, Temporal: m.Client}).Handler()

	code, r := call(t, h, "POST", "/v1/consensus", alice, `{"prompt":"x [sim:malformed]"}`)
	if code != 202 {
		t.Fatalf("start: %d %+v", code, r)
	}
	failed := r.WorkflowID
	if code, r := call(t, h, "POST", "/v1/consensus", alice, `{"prompt":"again","continue":"`+failed+`"}`); code != 409 || r.Error.Code != "run_in_progress" {
		t.Fatalf("continuing a running run: %d %+v", code, r.Error)
	}
	if err := m.Client.GetWorkflow(ctx, failed, "").Get(ctx, nil); err == nil {
		t.Fatal("the malformed run did not fail")
	}
	if code, r := call(t, h, "POST", "/v1/consensus", bob, `{"prompt":"mine now [sim:agree]","continue":"`+failed+`"}`); code != 404 || r.Error.Code != "not_found" {
		t.Fatalf("bob continues alice's run: %d %+v", code, r.Error)
	}
	code, r = call(t, h, "POST", "/v1/consensus", alice, `{"prompt":"try the sort again [sim:agree]","continue":"`+failed+`"}`)
	if code != 202 {
		t.Fatalf("continuing a failed run: %d %+v", code, r.Error)
	}
	var st workflows.ConsensusState
	if err := m.Client.GetWorkflow(ctx, r.WorkflowID, "").Get(ctx, &st); err != nil {
		t.Fatal(err)
	}
	if st.Status != workflows.StatusConsensus || st.ContinuedFrom != failed || st.Manifest == nil || !strings.Contains(st.Manifest.Intent, "try the sort again") {
		t.Fatalf("continued run: %+v", st)
	}

	// From a finished run: its manifest is not reused; Pathos reads the new prompt.
	first := r.WorkflowID
	code, r = call(t, h, "POST", "/v1/consensus", alice, `{"prompt":"and for nearly sorted input? [sim:agree]","continue":"`+first+`"}`)
	if code != 202 {
		t.Fatalf("continuing a finished run: %d %+v", code, r.Error)
	}
	if err := m.Client.GetWorkflow(ctx, r.WorkflowID, "").Get(ctx, &st); err != nil {
		t.Fatal(err)
	}
	if st.ContinuedFrom != first || !strings.Contains(st.Manifest.Intent, "nearly sorted") || st.Rounds[0].Round != 2 || st.Steps != 3 {
		t.Fatalf("continued run: %+v", st)
	}
}
