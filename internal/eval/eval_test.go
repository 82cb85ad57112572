package eval

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"strings"
	"testing"
)

func TestArithmeticSetIsDeterministicAndInRange(t *testing.T) {
	a, b := ArithmeticSet(1, 200), ArithmeticSet(1, 200)
	other := ArithmeticSet(2, 200)
	same, seen := 0, map[int]bool{}
	for i := range a {
		if a[i] != b[i] {
			t.Fatalf("question %d differs between two calls: %+v, %+v", i, a[i], b[i])
		}
		if a[i].Prompt == other[i].Prompt {
			same++
		}
		n, v, ok := ParseArithmetic(a[i].Prompt)
		if !ok || v != a[i].Answer {
			t.Fatalf("question %d does not parse back: %q (%v, %d)", i, a[i].Prompt, ok, v)
		}
		for _, x := range n {
			if x < 0 || x > ArithmeticMax {
				t.Fatalf("question %d has %d, outside 0..30", i, x)
			}
			seen[x] = true
		}
		// Computed here from the numbers, not by the package's own function.
		if want := int64(n[0] + n[1]*n[2] + n[3] - n[4]*n[5]); a[i].Answer != want {
			t.Fatalf("question %d: answer %d, want %d", i, a[i].Answer, want)
		}
	}
	if same > 5 {
		t.Fatalf("seeds 1 and 2 share %d of 200 questions", same)
	}
	if len(seen) != ArithmeticMax+1 {
		t.Fatalf("200 questions use %d of the 31 numbers 0..30", len(seen))
	}
	// A prefix does not depend on n, and the derivation is the documented one.
	if ArithmeticSet(1, 3)[2] != a[2] {
		t.Fatal("question 3 depends on n")
	}
	sum := sha256.Sum256([]byte("si-eval-arithmetic\x001\x000\x000"))
	if first := int(binary.BigEndian.Uint64(sum[:8]) % 31); !strings.HasPrefix(a[0].Prompt, fmt.Sprintf("What is the result of %d+", first)) {
		t.Fatalf("question 1 is %q, its first number should be %d", a[0].Prompt, first)
	}
}

func TestParseArithmeticRefusesOtherText(t *testing.T) {
	for _, p := range []string{"", "What is the result of 1+2*3+4-5*6?", ArithmeticPrompt([6]int{1, 2, 3, 4, 5, 6}) + " ",
		"What is the result of 31+2*3+4-5*6? Make sure to state your answer at the end of the response.",
		"What is the result of -1+2*3+4-5*6? Make sure to state your answer at the end of the response."} {
		if _, _, ok := ParseArithmetic(p); ok {
			t.Errorf("ParseArithmetic(%q) accepted it", p)
		}
	}
	if _, v, ok := ParseArithmetic(ArithmeticPrompt([6]int{30, 30, 30, 30, 30, 30})); !ok || v != 60 {
		t.Fatalf("30+30*30+30-30*30 = %d, %v", v, ok)
	}
}

func TestGSMMini(t *testing.T) {
	qs := GSMMiniSet()
	if len(qs) < 25 {
		t.Fatalf("gsm-mini holds %d problems", len(qs))
	}
	for _, q := range qs {
		if q.Answer <= 0 || !strings.HasPrefix(q.Prompt, WordProblemLead) {
			// The simulator's rule (a negative number) relies on positive answers.
			t.Fatalf("%s: answer %d, prompt %q", q.ID, q.Answer, q.Prompt)
		}
	}
	if _, err := Load(GSMMini, len(qs)+1, 1); err == nil || !strings.Contains(err.Error(), "--n") {
		t.Fatalf("more questions than the set holds: %v", err)
	}
	if got, err := Load(GSMMini, 3, 99); err != nil || len(got) != 3 || got[0] != qs[0] {
		t.Fatalf("Load gsm-mini: %v %v", got, err)
	}
	for _, bad := range []string{"gsm8k", ""} {
		if _, err := Load(bad, 3, 1); err == nil || !strings.Contains(err.Error(), "arithmetic or gsm-mini") {
			t.Fatalf("Load(%q): %v", bad, err)
		}
	}
	if _, err := Load(Arithmetic, 0, 1); err == nil {
		t.Fatal("--n 0 accepted")
	}
}

func TestParseJSONLRefuses(t *testing.T) {
	for name, in := range map[string]string{
		"unknown field":  `{"id":"a","question":"q","answer":1,"extra":2}`,
		"fraction":       `{"id":"a","question":"q","answer":1.5}`,
		"string answer":  `{"id":"a","question":"q","answer":"1"}`,
		"no answer":      `{"id":"a","question":"q"}`,
		"empty question": `{"id":"a","question":" ","answer":1}`,
		"no id":          `{"question":"q","answer":1}`,
		"repeated id":    `{"id":"a","question":"q","answer":1}` + "\n" + `{"id":"a","question":"q","answer":2}`,
		"two values":     `{"id":"a","question":"q","answer":1} {}`,
		"huge answer":    `{"id":"a","question":"q","answer":99999999999999999999}`,
		"long line":      `{"id":"a","question":"` + strings.Repeat("x", 9000) + `","answer":1}`,
		"not JSON":       `id,question,answer`,
	} {
		if _, err := ParseJSONL([]byte(in)); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	qs, err := ParseJSONL([]byte("\n" + `{"id":"a","question":"q","answer":-3}` + "\n\n"))
	if err != nil || len(qs) != 1 || qs[0].Answer != -3 {
		t.Fatalf("%v %v", qs, err)
	}
}

func FuzzParseJSONL(f *testing.F) {
	f.Add([]byte(`{"id":"a","question":"q","answer":1}`))
	f.Add(gsmMini)
	f.Fuzz(func(t *testing.T, b []byte) {
		qs, err := ParseJSONL(b)
		if err != nil {
			return
		}
		for _, q := range qs {
			if q.ID == "" || !strings.HasPrefix(q.Prompt, WordProblemLead) {
				t.Fatalf("accepted %+v", q)
			}
		}
	})
}

func TestFinalInteger(t *testing.T) {
	for _, c := range []struct {
		in   string
		want int64
		ok   bool
	}{
		{"The answer is 16.", 16, true},
		{"12+5*3+7-2*9 = 16", 16, true},
		{"x = -7", -7, true},
		{"(-7)", -7, true},
		{"−12 degrees", -12, true},
		{"12-7", 7, true},
		{"a-5", 5, true},
		{"-5", -5, true},
		{"1,015 books", 1015, true},
		{"1,234,567", 1234567, true},
		{"3,4", 4, true},
		{"16.0", 16, true},
		{"16.00 dollars.", 16, true},
		{"3.5", 0, false},
		{"2 then 3.5", 0, false},
		{"first 42, then none", 42, true},
		{`\boxed{270}`, 270, true},
		{"no number here", 0, false},
		{"", 0, false},
		{"99999999999999999999", 0, false},
		{"-9223372036854775808", -9223372036854775808, true},
		{"The answer is 26 (years old).", 26, true},
		{"৩", 0, false}, // digits of other scripts are not read
	} {
		got, ok := FinalInteger(c.in)
		if got != c.want || ok != c.ok {
			t.Errorf("FinalInteger(%q) = %d, %v; want %d, %v", c.in, got, ok, c.want, c.ok)
		}
	}
}

func FuzzFinalInteger(f *testing.F) {
	for _, s := range []string{"The answer is 16.", "-1,000.0", "3,4", "x-−5", "1e9"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		v, ok := FinalInteger(s)
		if !ok {
			return
		}
		// The value it read is in the text.
		abs := fmt.Sprint(v)
		abs = strings.TrimPrefix(abs, "-")
		if !strings.Contains(strings.ReplaceAll(s, ",", ""), abs) {
			t.Fatalf("FinalInteger(%q) = %d, not in the text", s, v)
		}
	})
}

func TestPlanMatchesWorstCases(t *testing.T) {
	for _, budget := range []int{MinBudget, 100, 1000, DefaultBudget, 4097, MaxBudget} {
		for _, s := range Strategies {
			p, err := Plan(s, budget)
			if err != nil {
				t.Fatal(err)
			}
			if w := p.WorstCase(); w > budget || w < budget-budget/6-6 {
				t.Errorf("%s at %d: worst case %d", s, budget, w)
			}
			if p.MaxTokens < 16 || p.MaxTokens > 32768 {
				t.Errorf("%s at %d: max_tokens %d", s, budget, p.MaxTokens)
			}
		}
		d, _ := Plan(Debate, budget)
		if d.Calls != 2+2*d.MaxRounds {
			t.Errorf("debate's calls %d for %d rounds", d.Calls, d.MaxRounds)
		}
		v, _ := Plan(Vote, budget)
		if v.Samples < 2 || v.Calls != v.Samples+1 || v.MaxTokens != d.MaxTokens {
			t.Errorf("vote at %d: %+v", budget, v)
		}
	}
	if _, err := Plan(Debate, MinBudget-1); err == nil {
		t.Fatal("a budget below 16 tokens a call accepted")
	}
	if _, err := Plan("majority", DefaultBudget); err == nil {
		t.Fatal("unknown strategy accepted")
	}
}

func TestParseStrategies(t *testing.T) {
	if got, err := ParseStrategies(" debate, VOTE ,single"); err != nil || strings.Join(got, ",") != "debate,vote,single" {
		t.Fatalf("%v %v", got, err)
	}
	for _, bad := range []string{"", ",", "debate,debate", "debate,majority"} {
		if _, err := ParseStrategies(bad); err == nil {
			t.Errorf("ParseStrategies(%q) accepted", bad)
		}
	}
}

func TestSummarize(t *testing.T) {
	i := func(v int64) *int64 { return &v }
	rs := []Result{
		{Strategy: Debate, Correct: true, Got: i(1), Tokens: 100, Cost: 10, LatencyMS: 30},
		{Strategy: Debate, Correct: false, Got: i(2), Tokens: 200, Cost: 11, LatencyMS: 10},
		{Strategy: Debate, Correct: true, Got: i(1), Tokens: 301, Cost: 11, LatencyMS: 20},
		{Strategy: Single, Error: "failed", LatencyMS: 5},
	}
	s := Summarize([]string{Debate, Vote, Single}, rs)
	if len(s) != 3 || s[0].Correct != 2 || s[0].Questions != 3 || s[0].Tokens != 601 || s[0].TokensPerQuestion != 200 ||
		s[0].Cost != 32 || s[0].CostPerQuestion != 11 || s[0].P50LatencyMS != 20 {
		t.Fatalf("debate: %+v", s[0])
	}
	if s[1].Questions != 0 || s[1].Accuracy != 0 || s[2].Failed != 1 || s[2].Accuracy != 0 || s[2].P50LatencyMS != 5 {
		t.Fatalf("vote %+v, single %+v", s[1], s[2])
	}
}
