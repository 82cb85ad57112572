package integration

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/superinstance/mesh/internal/client"
	"github.com/superinstance/mesh/internal/eval"
	"github.com/superinstance/mesh/internal/simulator"
	"github.com/superinstance/mesh/test/harness"
)

// simAnswer is the simulator's documented arithmetic rule (README, package
// simulator), written out here from the documentation: Logos's answer to
// prompt q in round r, seed and temperature 0, with Ethos's feedback from
// round 2 on.
func simAnswer(q string, value int64, round int) int64 {
	return simSample(q, value, round, 0, round > 1, 0)
}

// simSample is the rule for a call with a seed and a temperature in tenths.
func simSample(q string, value int64, round int, seed int64, feedback bool, tempTenths int) int64 {
	h := func(parts ...string) uint64 {
		sum := sha256.Sum256([]byte(strings.Join(parts, "\x00")))
		return binary.BigEndian.Uint64(sum[:8])
	}
	p := 60 + 10*(round-1)
	if feedback {
		p += 5
	}
	p = max(0, min(p-tempTenths, 95))
	s, r := fmt.Sprint(seed), fmt.Sprint(round)
	if int(h("si-sim-arithmetic", q, s, r)%100) < p {
		return value
	}
	off := int64(h("si-sim-arithmetic-offset", q, s, r)%10) - 5
	if off >= 0 {
		off++
	}
	return value + off
}

// simVote is a vote's answer by the rule: k samples at 0.7 with seeds 1 to
// k in round 1, the most common answer, a tie going to the lowest sample.
func simVote(q string, value int64, k int) int64 {
	votes := make([]int64, k)
	count := map[int64]int{}
	for i := range k {
		votes[i] = simSample(q, value, 1, int64(i+1), false, 7)
		count[votes[i]]++
	}
	best := votes[0]
	for _, v := range votes {
		if count[v] > count[best] {
			best = v
		}
	}
	return best
}

// evalReport is si eval --json's output, as a script would read it.
type evalReport struct {
	Dataset   string `json:"dataset"`
	Seed      int64  `json:"seed"`
	Questions int    `json:"questions"`
	Budget    int    `json:"budget"`
	APIURL    string `json:"api_url"`
	Settings  []struct {
		Strategy    string  `json:"strategy"`
		MaxTokens   int     `json:"max_tokens"`
		Calls       int     `json:"calls"`
		MaxRounds   int     `json:"max_rounds"`
		Samples     int     `json:"samples"`
		Temperature float64 `json:"temperature"`
	} `json:"settings"`
	Summaries []struct {
		Strategy          string  `json:"strategy"`
		Questions         int     `json:"questions"`
		Correct           int     `json:"correct"`
		Accuracy          float64 `json:"accuracy"`
		Failed            int     `json:"failed"`
		TokensPerQuestion int64   `json:"tokens_per_question"`
		Tokens            int64   `json:"tokens"`
		CostPerQuestion   int64   `json:"cost_per_question_micros"`
		Cost              int64   `json:"cost_micros"`
		P50LatencyMS      int64   `json:"p50_latency_ms"`
	} `json:"summaries"`
	Results []struct {
		Question   string `json:"question"`
		Strategy   string `json:"strategy"`
		WorkflowID string `json:"workflow_id"`
		Expected   int64  `json:"expected"`
		Got        *int64 `json:"got"`
		Correct    bool   `json:"correct"`
		Rounds     int    `json:"rounds"`
		Tokens     int64  `json:"tokens"`
		Cost       int64  `json:"cost_micros"`
		LatencyMS  int64  `json:"latency_ms"`
		Error      string `json:"error"`
		Answer     string `json:"answer"`
	} `json:"results"`
	Models    []string `json:"models"`
	Simulated bool     `json:"simulated"`
	Recorded  string   `json:"recorded"`
}

func decodeReport(t *testing.T, out string) evalReport {
	t.Helper()
	dec := json.NewDecoder(strings.NewReader(out))
	dec.DisallowUnknownFields()
	var r evalReport
	if err := dec.Decode(&r); err != nil {
		t.Fatalf("si eval --json is not the documented shape: %v\n%s", err, out)
	}
	return r
}

// si eval on the simulator with a fixed seed gives the accuracy the
// simulator's documented rule gives, computed here from the rule and the
// round each debate ended in; it is recorded for the account alone, at the
// ledger's cost; the word problems score 0; and a strategy the mesh runs
// or refuses is reported as such.
func TestEvalOnTheSimulatorGivesTheDocumentedAccuracy(t *testing.T) {
	m := harness.StartMesh(t, simulator.Options{})
	alice, bob := harness.UniqueID("alice"), harness.UniqueID("bob")
	url, tokens := customerAPI(t, m, alice, bob)
	customerEnv(t)
	if out, err := si(t, "login", "--api-url", url, "--token", tokens[alice]); err != nil {
		t.Fatalf("si login: %v\n%s", err, out)
	}

	const n, seed = 12, 5
	out, err := si(t, "eval", "--json", "--dataset", "arithmetic", "--n", fmt.Sprint(n), "--seed", fmt.Sprint(seed), "--strategies", "debate")
	if err != nil {
		t.Fatalf("si eval: %v\n%s", err, out)
	}
	rep := decodeReport(t, out)
	if rep.Dataset != "arithmetic" || rep.Seed != seed || rep.Questions != n || len(rep.Summaries) != 1 || len(rep.Results) != n || rep.Recorded == "" || !rep.Simulated ||
		len(rep.Settings) != 1 || rep.Settings[0].Calls*rep.Settings[0].MaxTokens > rep.Budget {
		t.Fatalf("report: %+v", rep)
	}
	qs := eval.ArithmeticSet(seed, n)
	right, rounds := 0, map[int]int{}
	for i, r := range rep.Results {
		q := qs[i]
		if r.Question != q.ID || r.Expected != q.Answer || r.Error != "" || r.Rounds < 1 || r.Rounds > 2 || r.Tokens <= 0 || r.Cost <= 0 {
			t.Fatalf("result %d: %+v (question %+v)", i, r, q)
		}
		// The debate's final answer is Logos's in its last round (the
		// simulated Arbiter keeps it).
		want := simAnswer(q.Prompt, q.Answer, r.Rounds)
		if r.Got == nil || *r.Got != want || r.Correct != (want == q.Answer) {
			t.Fatalf("%s (%s) ended in round %d with %v; the rule says %d", q.ID, q.Prompt, r.Rounds, r.Got, want)
		}
		if want == q.Answer {
			right++
		}
		rounds[r.Rounds]++
	}
	s := rep.Summaries[0]
	if s.Strategy != "debate" || s.Correct != right || s.Accuracy != float64(right)/n || s.Questions != n || s.Failed != 0 || s.Cost <= 0 || s.TokensPerQuestion <= 0 {
		t.Fatalf("summary %+v; the rule gives %d of %d", s, right, n)
	}
	if right == 0 || right == n {
		t.Fatalf("the rule made every answer %s: the simulator pretends", map[bool]string{true: "right", false: "wrong"}[right == n])
	}
	t.Logf("debate on arithmetic seed %d: %d/%d right, rounds %v", seed, right, n, rounds)

	// Recorded for alice at the ledger's cost; bob sees none of it.
	ac, _ := client.New(client.Credentials{APIURL: url, Token: tokens[alice]})
	bc, _ := client.New(client.Credentials{APIURL: url, Token: tokens[bob]})
	ctx := context.Background()
	mine, err := ac.Evals(ctx, 10)
	if err != nil || len(mine) != 1 || mine[0].ID != rep.Recorded || mine[0].Summaries[0].Correct != right || int64(mine[0].Summaries[0].Cost) != s.Cost || !mine[0].Simulated {
		t.Fatalf("alice's evals: %+v %v (report cost %d)", mine, err, s.Cost)
	}
	if theirs, err := bc.Evals(ctx, 10); err != nil || len(theirs) != 0 {
		t.Fatalf("bob's evals: %+v %v", theirs, err)
	}

	// The table: a row per strategy, and where the report went.
	out, err = si(t, "eval", "--dataset", "gsm-mini", "--n", "3", "--strategies", "debate", "--no-record")
	if err != nil || !strings.Contains(out, "0/3 (0.0%)") || !strings.Contains(out, "the inference SIMULATOR") || !strings.Contains(out, "[3/3]") || strings.Contains(out, "recorded") {
		t.Fatalf("si eval on gsm-mini: %v\n%s", err, out)
	}

	// vote and single give the rule's answers too: a single answer is
	// Logos's first at temperature 0, a vote the majority of its samples.
	const vn = 6
	out, err = si(t, "eval", "--json", "--n", fmt.Sprint(vn), "--seed", fmt.Sprint(seed), "--strategies", "vote,single", "--no-record")
	if err != nil {
		t.Fatalf("si eval --strategies vote,single: %v\n%s", err, out)
	}
	r := decodeReport(t, out)
	if len(r.Summaries) != 2 || r.Summaries[0].Strategy != "vote" || r.Summaries[1].Strategy != "single" || len(r.Results) != 2*vn || len(r.Settings) != 2 {
		t.Fatalf("vote and single: %+v", r)
	}
	k := r.Settings[0].Samples
	wantRight := map[string]int{}
	for _, res := range r.Results {
		var q eval.Question
		for _, c := range qs[:vn] {
			if c.ID == res.Question {
				q = c
			}
		}
		want := simAnswer(q.Prompt, q.Answer, 1)
		if res.Strategy == "vote" {
			want = simVote(q.Prompt, q.Answer, k)
		}
		if q.ID == "" || res.Error != "" || res.Got == nil || *res.Got != want || res.Tokens <= 0 || res.Cost <= 0 {
			t.Fatalf("%s %s: %+v; the rule says %d", res.Strategy, res.Question, res, want)
		}
		if want == q.Answer {
			wantRight[res.Strategy]++
		}
	}
	for _, s := range r.Summaries {
		if s.Correct != wantRight[s.Strategy] || s.Questions != vn || s.Failed != 0 {
			t.Fatalf("%s: %+v; the rule gives %d of %d", s.Strategy, s, wantRight[s.Strategy], vn)
		}
	}
	if vote, single := r.Summaries[0], r.Summaries[1]; vote.TokensPerQuestion <= single.TokensPerQuestion {
		t.Fatalf("a vote of %d samples used %d tokens a question, a single answer %d", k, vote.TokensPerQuestion, single.TokensPerQuestion)
	}
	t.Logf("on arithmetic seed %d: vote %d/%d, single %d/%d", seed, wantRight["vote"], vn, wantRight["single"], vn)

	// Bad flags are told before any run.
	for _, args := range [][]string{{"--dataset", "gsm8k"}, {"--strategies", "debate,majority"}, {"--budget", "10"}, {"--n", "0"}, {"--dataset", "gsm-mini", "--n", "31"}} {
		if out, err := si(t, append([]string{"eval"}, args...)...); err == nil {
			t.Errorf("si eval %v: accepted\n%s", args, out)
		}
	}
}
