package simulator

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/superinstance/mesh/internal/eval"
	"github.com/superinstance/mesh/internal/llm"
	"github.com/superinstance/mesh/internal/synapse"
)

// ruleH is the documented rule's hash, written out here apart from the
// simulator's code: SHA-256 of the fields joined by NUL, first 8 bytes.
func ruleH(parts ...string) uint64 {
	sum := sha256.Sum256([]byte(strings.Join(parts, "\x00")))
	return binary.BigEndian.Uint64(sum[:8])
}

// ruleAnswer is Logos's documented answer to an arithmetic question.
func ruleAnswer(q string, value int64, seed int64, round int, feedback bool, temperature float64) int64 {
	p := 60 + 10*(round-1)
	if feedback {
		p += 5
	}
	p -= int(10 * temperature)
	p = max(0, min(p, 95))
	s, r := fmt.Sprint(seed), fmt.Sprint(round)
	if int(ruleH("si-sim-arithmetic", q, s, r)%100) < p {
		return value
	}
	off := int64(ruleH("si-sim-arithmetic-offset", q, s, r)%10) - 5
	if off >= 0 {
		off++
	}
	return value + off
}

// logosAt asks Logos, with a raw body so seed and temperature are sent as
// a vote's samples send them.
func logosAt(t *testing.T, s *Server, q string, round int, feedback string, seed *int64, temperature *float64) string {
	t.Helper()
	p := synapse.LogosPrompt(q, synapse.Manifest{Intent: "x"}, round, feedback, "")
	body := map[string]any{"model": ModelSmall, "messages": []llm.Message{{Role: "system", Content: p.System}, {Role: "user", Content: p.User}}}
	if seed != nil {
		body["seed"] = *seed
	}
	if temperature != nil {
		body["temperature"] = *temperature
	}
	b, _ := json.Marshal(body)
	rec := httptest.NewRecorder()
	s.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/v1/chat/completions", bytes.NewReader(b)))
	var out struct {
		Choices []struct {
			Message llm.Message `json:"message"`
		} `json:"choices"`
	}
	if rec.Code != 200 || json.Unmarshal(rec.Body.Bytes(), &out) != nil || len(out.Choices) != 1 {
		t.Fatalf("%d %s", rec.Code, rec.Body)
	}
	var sol synapse.Solution
	if err := synapse.Parse(out.Choices[0].Message.Content, &sol); err != nil {
		t.Fatal(err)
	}
	return sol.Answer
}

// The simulator's arithmetic answers follow the documented rule, computed
// here independently; right and wrong both occur, and p rises with rounds
// and falls with temperature as documented.
func TestArithmeticAnswersFollowTheRule(t *testing.T) {
	s := New(Options{})
	qs := eval.ArithmeticSet(7, 150)
	f64 := func(v float64) *float64 { return &v }
	i64 := func(v int64) *int64 { return &v }
	type setting struct {
		round    int
		feedback string
		seed     *int64
		temp     *float64
	}
	rightAt := map[int]int{}
	for i, c := range []setting{{1, "", nil, nil}, {2, "check it", nil, nil}, {3, "check it", nil, f64(0)}, {1, "", i64(3), f64(0.7)}, {1, "", i64(4), f64(0.7)}} {
		name := fmt.Sprintf("setting %d (round %d, feedback %v)", i, c.round, c.feedback != "")
		for _, q := range qs {
			seed, temp := int64(0), 0.0
			if c.seed != nil {
				seed = *c.seed
			}
			if c.temp != nil {
				temp = *c.temp
			}
			want := ruleAnswer(q.Prompt, q.Answer, seed, c.round, c.feedback != "", temp)
			ans := logosAt(t, s, q.Prompt, c.round, c.feedback, c.seed, c.temp)
			got, ok := eval.FinalInteger(ans)
			if !ok || got != want {
				t.Fatalf("%s: %q answered %q (read %d), the rule says %d", name, q.Prompt, ans, got, want)
			}
			if d := got - q.Answer; d != 0 && (d < -5 || d > 5) {
				t.Fatalf("%s: wrong by %d", name, d)
			}
			if got == q.Answer {
				rightAt[i]++
			}
		}
	}
	// Rounds 1, 2, 3 are right with p = 60, 75, 85; samples at 0.7, 53.
	if r := rightAt; r[0] == 0 || r[2] == len(qs) || !(r[0] < r[1] && r[1] < r[2]) || r[3] >= r[2] || r[3] == r[4] && r[3] == r[0] {
		t.Fatalf("right answers of %d per setting: %v", len(qs), r)
	}
}

// A word problem is beyond the simulator: its answer is a negative number,
// always wrong for gsm-mini, whose answers are all positive.
func TestWordProblemsAreAnsweredWrong(t *testing.T) {
	s := New(Options{})
	for _, q := range eval.GSMMiniSet() {
		ans := logosAt(t, s, q.Prompt, 1, "", nil, nil)
		got, ok := eval.FinalInteger(ans)
		if !ok || got >= 0 || got == q.Answer {
			t.Fatalf("%s answered %q", q.ID, ans)
		}
	}
}

// The Arbiter cannot check arithmetic either: it keeps the last round's
// answer.
func TestArbiterKeepsTheLastRoundsAnswer(t *testing.T) {
	_, c := serve(t, Options{})
	q := eval.ArithmeticSet(1, 1)[0]
	rounds := []synapse.RoundRecord{{Round: 1, Solution: synapse.Solution{Answer: "The answer is 5."}}, {Round: 2, Solution: synapse.Solution{Answer: "The answer is -12."}}}
	var v synapse.Verdict
	if err := synapse.Parse(chat(t, c, ModelLarge, synapse.ArbiterPrompt(q.Prompt, synapse.Manifest{}, rounds)).Text, &v); err != nil {
		t.Fatal(err)
	}
	if got, ok := eval.FinalInteger(v.Answer); !ok || got != -12 {
		t.Fatalf("arbiter: %q", v.Answer)
	}
}
