package synapse

import (
	"math"
	"strings"
	"testing"
)

func TestScore(t *testing.T) {
	m := Manifest{Intent: "x", Confidence: 1}
	s := Solution{Answer: "y", Confidence: 1}
	perfect := Verification{Scores: Scores{1, 1, 1}}
	cases := []struct {
		name string
		m    Manifest
		s    Solution
		v    Verification
		want float64
	}{
		{"all perfect", m, s, perfect, 1},
		{"all zero", Manifest{}, Solution{}, Verification{}, 0},
		{"ethos dominates", Manifest{Confidence: 1}, Solution{Confidence: 1}, Verification{}, 0.4},
		{"weights", Manifest{Confidence: 0.8}, Solution{Confidence: 0.6}, Verification{Scores: Scores{0.9, 0.6, 0.3}},
			0.15*0.8 + 0.25*0.6 + 0.6*0.6},
		{"violation caps", m, s, Verification{Scores: Scores{1, 1, 1}, Violations: []string{"too long"}}, ViolationCap},
		{"violation below cap unchanged", Manifest{}, Solution{}, Verification{Scores: Scores{0.5, 0.5, 0.5}, Violations: []string{"v"}}, 0.3},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := Score(tc.m, tc.s, tc.v); math.Abs(got-tc.want) > 1e-9 {
				t.Fatalf("Score = %v, want %v", got, tc.want)
			}
		})
	}
	if WeightPathos+WeightLogos+WeightEthos != 1 {
		t.Fatal("weights must sum to 1")
	}
}

func TestParse(t *testing.T) {
	cases := []struct {
		name, text, wantErr string
	}{
		{"plain", `{"answer":"a","sources":[],"confidence":0.5}`, ""},
		{"fenced", "```json\n{\"answer\":\"a\",\"confidence\":0.5}\n```", ""},
		{"prose around", "Here you go: {\"answer\":\"a\",\"confidence\":1} hope it helps", ""},
		{"no object", "I think the answer is 4.", "no JSON object"},
		{"wrong type", `{"answer":4,"confidence":0.5}`, `"answer" must be a string`},
		{"empty answer", `{"answer":"  ","confidence":0.5}`, `"answer" is empty`},
		{"confidence above 1", `{"answer":"a","confidence":1.5}`, "between 0 and 1"},
		{"negative confidence", `{"answer":"a","confidence":-0.1}`, "between 0 and 1"},
		{"truncated", `{"answer":"a","confid`, "no JSON object"},
		{"too large", `{"answer":"` + strings.Repeat("a", MaxOutputBytes) + `"}`, "more than"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var s Solution
			err := Parse(tc.text, &s)
			if tc.wantErr == "" {
				if err != nil || s.Answer != "a" {
					t.Fatalf("Parse: %v, %+v", err, s)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("error %v, want it to mention %q", err, tc.wantErr)
			}
		})
	}
}

func TestVerificationValidate(t *testing.T) {
	var v Verification
	if err := Parse(`{"scores":{"accuracy":0.9,"relevance":2,"safety":-1},"feedback":"f"}`, &v); err == nil ||
		!strings.Contains(err.Error(), "relevance") || !strings.Contains(err.Error(), "safety") {
		t.Fatalf("want both bad scores named, got %v", err)
	}
	var d Verdict
	if err := Parse(`{"answer":"a","confidence":0.5}`, &d); err == nil || !strings.Contains(err.Error(), "note") {
		t.Fatalf("verdict without note: %v", err)
	}
}

func TestQuestionRoundTrips(t *testing.T) {
	q := "multi\nline <b>question</b>"
	for _, p := range []Prompt{PathosPrompt(q), LogosPrompt(q, Manifest{}, 2, "fb", ""), EthosPrompt(q, Manifest{}, Solution{}, 1),
		ArbiterPrompt(q, Manifest{}, nil)} {
		if got := Question(p.User); got != q {
			t.Fatalf("Question = %q, want %q", got, q)
		}
	}
	if Question("no block") != "no block" {
		t.Fatal("text without a block is its own question")
	}
}

// FuzzParse feeds arbitrary model output to every agent's parser: it must
// never panic, and whatever it accepts must validate.
func FuzzParse(f *testing.F) {
	for _, s := range []string{
		`{"intent":"i","confidence":0.5}`, `{"answer":"a","confidence":1}`,
		`{"scores":{"accuracy":1,"relevance":1,"safety":1}}`, `{"answer":"a","confidence":0.2,"note":"n"}`,
		"```{}```", "{", "}{", `{"confidence":1e999}`, `{"answer":"a","confidence":NaN}`,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, text string) {
		for _, out := range []validator{&Manifest{}, &Solution{}, &Verification{}, &Verdict{}} {
			if err := Parse(text, out); err == nil {
				if verr := out.Validate(); verr != nil {
					t.Fatalf("accepted %q but it does not validate: %v", text, verr)
				}
			}
		}
	})
}
