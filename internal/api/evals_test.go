package api_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/superinstance/mesh/internal/api"
	"github.com/superinstance/mesh/internal/eval"
	"github.com/superinstance/mesh/internal/simulator"
	"github.com/superinstance/mesh/internal/store"
	"github.com/superinstance/mesh/test/harness"
)

// evalBody is a report of n arithmetic questions, the first `right` of them
// right, for the strategies, each result naming run "<prefix>-<strategy>-<i>"
// and claiming costPerRun.
func evalBody(n, right int, prefix string, costPerRun int64, strategies ...string) string {
	req := api.EvalRequest{Dataset: eval.Arithmetic, Seed: 1, Questions: n, Budget: eval.DefaultBudget}
	for _, s := range strategies {
		for i := range n {
			got := int64(10)
			if i >= right {
				got = 11
			}
			req.Results = append(req.Results, eval.Result{Question: fmt.Sprintf("arithmetic-1-%d", i+1), Strategy: s,
				WorkflowID: fmt.Sprintf("%s-%s-%d", prefix, s, i), Expected: 10, Got: &got, Correct: i < right,
				Rounds: 1, Tokens: 100, Cost: 999_999, LatencyMS: int64(10 * (i + 1))})
		}
	}
	b, _ := json.Marshal(req)
	return string(b)
}

// si eval's reports are the account's own: bob records one that names
// alice's runs, and neither alice's dashboard nor her GET /v1/evals shows
// it; bob's shows only his, at the cost his own ledger holds for those
// runs (none), not the cost his client claimed.
func TestEvalsAreTheAccountsOwn(t *testing.T) {
	st := harness.Store(t)
	ctx := context.Background()
	tokens := map[string]string{}
	for _, a := range []string{"alice", "bob"} {
		harness.EnsureAccount(t, st, a)
		tok, err := st.CreateAPIToken(ctx, a, "")
		if err != nil {
			t.Fatal(err)
		}
		tokens[a] = tok
	}
	// Alice's runs cost 2 steps of usage each in her ledger.
	for i := range 4 {
		for _, step := range []string{"r1-logos", "r1-ethos"} {
			if _, err := st.LogUsage(ctx, store.Usage{EventID: fmt.Sprintf("consensus-alice-debate-%d/%s", i, step), Account: "alice",
				Project: "default", Model: "si-simulator-small", PromptTokens: 1000, CompletionTokens: 500}); err != nil {
				t.Fatal(err)
			}
		}
	}
	h := (&api.Server{Store: st}).Handler()
	bearer := func(a string) map[string]string { return map[string]string{"Authorization": "Bearer " + tokens[a]} }

	rec := send(h, "POST", "/v1/evals", evalBody(4, 3, "consensus-alice", 0, eval.Debate), nil, bearer("alice"))
	if rec.Code != http.StatusCreated {
		t.Fatalf("alice's POST /v1/evals: %d %s", rec.Code, rec.Body)
	}
	var mine api.EvalInfo
	if err := json.Unmarshal(rec.Body.Bytes(), &mine); err != nil || len(mine.Summaries) != 1 {
		t.Fatalf("%v %s", err, rec.Body)
	}
	s := mine.Summaries[0]
	if s.Correct != 3 || s.Questions != 4 || s.Accuracy != 0.75 || s.Cost <= 0 || s.Cost == 4*999_999 || s.P50LatencyMS != 20 {
		t.Fatalf("alice's summary: %+v", s)
	}
	if !mine.Simulated || len(mine.Models) != 1 || mine.Models[0] != "si-simulator-small" {
		t.Fatalf("alice's runs were answered by the simulator: %+v", mine)
	}

	// Bob names alice's runs and claims a cost: the mesh reads his ledger.
	rec = send(h, "POST", "/v1/evals", evalBody(4, 4, "consensus-alice", 0, eval.Debate, eval.Single), nil, bearer("bob"))
	if rec.Code != http.StatusCreated {
		t.Fatalf("bob's POST /v1/evals: %d %s", rec.Code, rec.Body)
	}
	var bobs api.EvalInfo
	_ = json.Unmarshal(rec.Body.Bytes(), &bobs)
	if len(bobs.Summaries) != 2 || bobs.Summaries[0].Cost != 0 || bobs.Summaries[1].Strategy != eval.Single || bobs.Simulated || len(bobs.Models) != 0 {
		t.Fatalf("bob's summary: %+v", bobs)
	}

	for who, want := range map[string]string{"alice": mine.ID, "bob": bobs.ID} {
		rec = send(h, "GET", "/v1/evals", "", nil, bearer(who))
		var list struct {
			Account string         `json:"account"`
			Evals   []api.EvalInfo `json:"evals"`
		}
		if rec.Code != 200 || json.Unmarshal(rec.Body.Bytes(), &list) != nil || list.Account != who || len(list.Evals) != 1 || list.Evals[0].ID != want {
			t.Fatalf("GET /v1/evals as %s: %d %s", who, rec.Code, rec.Body)
		}
		session := signIn(t, h, tokens[who])
		page := send(h, "GET", "/", "", []*http.Cookie{session}, nil).Body.String()
		other := bobs.ID
		if who == "bob" {
			other = mine.ID
		}
		var d api.Dashboard
		dj := send(h, "GET", "/v1/dashboard", "", []*http.Cookie{session}, nil).Body.String()
		if err := json.Unmarshal([]byte(dj), &d); err != nil || len(d.Evals) != 1 || d.Evals[0].ID != want || strings.Contains(dj, other) {
			t.Fatalf("%s's /v1/dashboard evals: %v %s", who, err, dj)
		}
		if !strings.Contains(page, `id="evals"`) || !strings.Contains(page, `aria-label="accuracy per strategy"`) || !strings.Contains(page, `aria-label="cost per question per strategy"`) {
			t.Fatalf("%s's dashboard has no evaluation chart:\n%s", who, page)
		}
		if who == "alice" && (!strings.Contains(page, "3/4 (75%)") || strings.Contains(page, "<td>single</td>") || !strings.Contains(page, `id="eval-simulated"`)) {
			t.Fatalf("alice's dashboard shows another's evaluation or not hers:\n%s", page)
		}
	}
}

// A report that does not add up is refused with the field at fault.
func TestEvalRequestIsValidated(t *testing.T) {
	st := harness.Store(t)
	harness.EnsureAccount(t, st, "carol")
	tok, err := st.CreateAPIToken(context.Background(), "carol", "")
	if err != nil {
		t.Fatal(err)
	}
	h := (&api.Server{Store: st}).Handler()
	good := evalBody(2, 1, "consensus-carol", 0, eval.Vote)
	for name, c := range map[string]struct{ body, param string }{
		"dataset":        {strings.Replace(good, `"arithmetic"`, `"gsm8k"`, 1), "dataset"},
		"budget":         {strings.Replace(good, `"budget":3072`, `"budget":5`, 1), "budget"},
		"questions":      {strings.Replace(good, `"questions":2`, `"questions":3`, 1), "results"},
		"strategy":       {strings.ReplaceAll(good, `"vote"`, `"majority"`), "results[0].strategy"},
		"correct":        {strings.Replace(good, `"correct":true`, `"correct":false`, 1), "results[0].correct"},
		"repeated":       {strings.Replace(good, `arithmetic-1-2`, `arithmetic-1-1`, 1), "results[1]"},
		"tokens":         {strings.Replace(good, `"tokens":100`, `"tokens":-1`, 1), "results[0]"},
		"same run":       {strings.Replace(good, `consensus-carol-vote-1`, `consensus-carol-vote-0`, 1), "results[1].workflow_id"},
		"no run":         {strings.Replace(good, `"workflow_id":"consensus-carol-vote-1",`, ``, 1), "results[1].workflow_id"},
		"answer, no run": {strings.Replace(good, `"workflow_id":"consensus-carol-vote-0",`, `"error":"x",`, 1), "results[0].workflow_id"},
		"empty":          {`{"dataset":"arithmetic","questions":1,"budget":3072,"results":[]}`, "results"},
		"unknown field":  {strings.Replace(good, `{"dataset"`, `{"account":"alice","dataset"`, 1), ""},
	} {
		rec := send(h, "POST", "/v1/evals", c.body, nil, map[string]string{"Authorization": "Bearer " + tok})
		var e struct {
			Error struct {
				Param string `json:"param"`
			} `json:"error"`
		}
		_ = json.Unmarshal(rec.Body.Bytes(), &e)
		if rec.Code != http.StatusBadRequest || (c.param != "" && e.Error.Param != c.param) {
			t.Errorf("%s: %d %s", name, rec.Code, rec.Body)
		}
	}
	if rec := send(h, "POST", "/v1/evals", good, nil, map[string]string{"Authorization": "Bearer " + tok}); rec.Code != http.StatusCreated {
		t.Fatalf("the good body: %d %s", rec.Code, rec.Body)
	}
	if rec := send(h, "POST", "/v1/evals", good, nil, nil); rec.Code != http.StatusUnauthorized {
		t.Fatalf("no token: %d", rec.Code)
	}
}

// FuzzEvalRequest: any body is a 200 or a JSON 4xx, and one that passes
// holds every question once per strategy it names.
func FuzzEvalRequest(f *testing.F) {
	f.Add([]byte(evalBody(2, 1, "consensus-x", 0, eval.Debate, eval.Vote)))
	f.Add([]byte(`{"dataset":"arithmetic","questions":1,"budget":3072,"results":[{"question":"q","strategy":"single","expected":1,"got":1,"correct":true}]}`))
	f.Add([]byte(`{"results":null}`))
	h := api.ValidateEvalOnly()
	f.Fuzz(func(t *testing.T, body []byte) {
		rec := send(h, "POST", "/v1/evals", string(body), nil, nil)
		switch {
		case rec.Code == http.StatusOK:
			var ok struct {
				Strategies []string `json:"strategies"`
				Results    int      `json:"results"`
			}
			var req api.EvalRequest
			if json.Unmarshal(rec.Body.Bytes(), &ok) != nil || json.Unmarshal(body, &req) != nil || ok.Results != req.Questions*len(ok.Strategies) {
				t.Fatalf("passed %s -> %s", body, rec.Body)
			}
		case rec.Code >= 400 && rec.Code < 500 && strings.Contains(rec.Body.String(), `"error"`):
		default:
			t.Fatalf("%d %s for %q", rec.Code, rec.Body, body)
		}
	})
}

// A guest of alice's project neither reads nor records her evaluations,
// and a page on another origin cannot record one with her session cookie.
func TestEvalsRefuseGuestsAndOtherOrigins(t *testing.T) {
	m := harness.StartMesh(t, simulator.Options{})
	m.Account(t, "alice")
	a := harness.SeedDashboard(t, m, "alice")
	h := (&api.Server{Store: m.Store, Temporal: m.Client}).Handler()
	session := signInAccount(t, m, h, "alice")
	if rec := send(h, "POST", "/v1/evals", evalBody(1, 1, "consensus-a", 0, eval.Single), []*http.Cookie{session}, nil); rec.Code != http.StatusCreated {
		t.Fatalf("alice's own POST: %d %s", rec.Code, rec.Body)
	}
	guest := &http.Cookie{Name: api.GuestCookie, Value: a.GuestSecret}
	for _, method := range []string{"GET", "POST"} {
		rec := send(h, method, "/v1/evals", evalBody(1, 1, "consensus-g", 0, eval.Single), []*http.Cookie{guest}, nil)
		if rec.Code != http.StatusForbidden || strings.Contains(rec.Body.String(), "eval-") {
			t.Errorf("%s /v1/evals as alice's guest: %d %s", method, rec.Code, rec.Body)
		}
	}
	rec := send(h, "POST", "/v1/evals", evalBody(1, 1, "consensus-x", 0, eval.Single), []*http.Cookie{session},
		map[string]string{"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"})
	if rec.Code != http.StatusForbidden {
		t.Errorf("a cross-origin POST with alice's cookie: %d %s", rec.Code, rec.Body)
	}
	if evals, err := m.Store.Evals(context.Background(), "alice", 10); err != nil || len(evals) != 1 {
		t.Fatalf("alice holds %d evaluations, want her own one: %v", len(evals), err)
	}
}

// An auditor's view of a report's numbers: each run's tokens, like its
// cost, are what the ledger holds, not what the client claims, and a
// result that failed without a run costs nothing.
func TestEvalTokensComeFromTheLedger(t *testing.T) {
	st := harness.Store(t)
	ctx := context.Background()
	harness.EnsureAccount(t, st, "dana")
	tok, err := st.CreateAPIToken(ctx, "dana", "")
	if err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		for _, step := range []string{"a", "b"} {
			if _, err := st.LogUsage(ctx, store.Usage{EventID: fmt.Sprintf("consensus-dana-single-%d/%s", i, step), Account: "dana",
				Project: "default", Model: "si-simulator-small", PromptTokens: 1000, CompletionTokens: 500}); err != nil {
				t.Fatal(err)
			}
		}
	}
	h := (&api.Server{Store: st}).Handler()
	body := strings.ReplaceAll(evalBody(2, 2, "consensus-dana", 0, eval.Single), `"tokens":100`, `"tokens":9223372036854775807`)
	rec := send(h, "POST", "/v1/evals", body, nil, map[string]string{"Authorization": "Bearer " + tok})
	var info api.EvalInfo
	if rec.Code != http.StatusCreated || json.Unmarshal(rec.Body.Bytes(), &info) != nil || len(info.Summaries) != 1 {
		t.Fatalf("POST /v1/evals: %d %s", rec.Code, rec.Body)
	}
	if s := info.Summaries[0]; s.Tokens != 2*2*1500 || s.TokensPerQuestion != 2*1500 || s.Cost <= 0 {
		t.Fatalf("the summary's tokens are the client's, not the ledger's: %+v", s)
	}
	usage, err := st.RunsUsage(ctx, "dana", []string{"consensus-dana-single-0", "consensus-dana-single-1", "consensus-other"}, time.Now().Add(-time.Hour))
	if err != nil || len(usage) != 2 || usage["consensus-dana-single-0"].Tokens != 3000 || len(usage["consensus-dana-single-1"].Models) != 1 {
		t.Fatalf("RunsUsage: %v %+v", err, usage)
	}
}

// An attacker's token records evaluations as fast as it can: the eleventh
// within a minute is 429, and the account keeps only its newest
// store.EvalsKept evaluations.
func TestEvalRecordingIsBounded(t *testing.T) {
	st := harness.Store(t)
	ctx := context.Background()
	harness.EnsureAccount(t, st, "eve")
	tok, err := st.CreateAPIToken(ctx, "eve", "")
	if err != nil {
		t.Fatal(err)
	}
	h := (&api.Server{Store: st}).Handler()
	body := evalBody(1, 1, "consensus-eve", 0, eval.Single)
	for i := range store.EvalsPerMinute + 1 {
		rec := send(h, "POST", "/v1/evals", body, nil, map[string]string{"Authorization": "Bearer " + tok})
		want := http.StatusCreated
		if i == store.EvalsPerMinute {
			want = http.StatusTooManyRequests
		}
		if rec.Code != want || (want == http.StatusTooManyRequests && rec.Header().Get("Retry-After") == "") {
			t.Fatalf("POST %d: %d %s", i+1, rec.Code, rec.Body)
		}
	}
	// Older evaluations, more than the account keeps.
	if _, err := st.Pool.Exec(ctx, `INSERT INTO eval_runs (id, account_id, created_at, dataset, seed, questions, budget, summaries, results, models)
		SELECT 'eval-old-' || g, 'eve', now() - g * interval '1 hour', 'arithmetic', 1, 1, 3072, '[]', '[]', '{}' FROM generate_series(1, $1) g`,
		store.EvalsKept); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Pool.Exec(ctx, `UPDATE eval_runs SET created_at = created_at - interval '2 minutes' WHERE account_id = 'eve'`); err != nil {
		t.Fatal(err)
	}
	if rec := send(h, "POST", "/v1/evals", body, nil, map[string]string{"Authorization": "Bearer " + tok}); rec.Code != http.StatusCreated {
		t.Fatalf("a POST a minute later: %d %s", rec.Code, rec.Body)
	}
	var n int
	var oldest string
	if err := st.Pool.QueryRow(ctx, `SELECT count(*), min(created_at)::text FROM eval_runs WHERE account_id = 'eve'`).Scan(&n, &oldest); err != nil || n != store.EvalsKept {
		t.Fatalf("eve keeps %d evaluations (%v), not %d", n, err, store.EvalsKept)
	}
	var old int
	if err := st.Pool.QueryRow(ctx, `SELECT count(*) FROM eval_runs WHERE id = 'eval-old-200' OR id = 'eval-old-199'`).Scan(&old); err != nil || old != 0 {
		t.Fatalf("the oldest evaluations were kept: %d %v", old, err)
	}
}
