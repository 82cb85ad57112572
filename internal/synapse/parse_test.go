package synapse

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

// Replies as real models write them: reasoning first, prose with braces,
// two objects, fields left out.
func TestParseRealReplies(t *testing.T) {
	const sol = `{"answer":"4","sources":[],"confidence":0.9}`
	ok := []struct{ name, text string }{
		{"think block with braces", "<think>The user wants {x}. Maybe {\"answer\":\"5\"}? No.</think>\n" + sol},
		{"thinking block", "<thinking>hmm {</thinking>" + sol},
		{"opening tag in the template", "so 2+2 is 4 {not json}\n</think>\n\n" + sol},
		{"prose brace before the object", "In set notation {4} is the answer: " + sol},
		{"object then a trailing example", sol + "\nFormat was {\"answer\": string}"},
		{"brace inside a string", `{"answer":"4 } {","sources":[],"confidence":0.9}`},
		{"first object lacks fields, second is the answer", `{"note":"draft"} then ` + sol},
		{"extra fields are ignored", `{"answer":"4","confidence":0.9,"reasoning":"2+2"}`},
	}
	for _, tc := range ok {
		t.Run(tc.name, func(t *testing.T) {
			var s Solution
			if err := Parse(tc.text, &s); err != nil || !strings.HasPrefix(s.Answer, "4") || s.Confidence != 0.9 {
				t.Fatalf("Parse: %v, %+v", err, s)
			}
		})
	}
	bad := []struct {
		name, text, want string
		out              validator
	}{
		{"unclosed think hides a draft", "<think>draft " + sol, "no JSON object", &Solution{}},
		{"ethos without a score", `{"scores":{"accuracy":0.9,"relevance":0.8},"violations":[],"feedback":"f"}`, `"scores.safety" is missing`, &Verification{}},
		{"ethos with no scores at all", `{"violations":[],"feedback":"f"}`, `"scores.accuracy" is missing`, &Verification{}},
		{"ethos score as a string", `{"scores":{"accuracy":"high","relevance":0.8,"safety":1},"violations":[],"feedback":"f"}`, `"scores.accuracy" must be a number`, &Verification{}},
		{"ethos score null", `{"scores":{"accuracy":null,"relevance":0.8,"safety":1},"violations":[],"feedback":"f"}`, `"scores.accuracy" must be a number`, &Verification{}},
		{"ethos without feedback", `{"scores":{"accuracy":1,"relevance":1,"safety":1},"violations":[]}`, `"feedback" is missing`, &Verification{}},
		{"logos without confidence", `{"answer":"4"}`, `"confidence" is missing`, &Solution{}},
		{"pathos without domain", `{"intent":"i","constraints":[],"success_criteria":[],"confidence":0.5}`, `"domain" is missing`, &Manifest{}},
		{"arbiter without confidence", `{"answer":"a","note":"n"}`, `"confidence" is missing`, &Verdict{}},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			err := Parse(tc.text, tc.out)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want it to mention %s", err, tc.want)
			}
		})
	}
}

// A failed candidate leaves nothing behind in out.
func TestParseLeavesOutUntouchedOnFailure(t *testing.T) {
	v := Verification{Feedback: "keep"}
	if err := Parse(`{"scores":{"accuracy":0.9},"feedback":"x"}`, &v); err == nil {
		t.Fatal("accepted a verification with scores missing")
	}
	if v.Feedback != "keep" || v.Scores.Accuracy != 0 {
		t.Fatalf("out changed by a rejected reply: %+v", v)
	}
}

// Many unbalanced braces are scanned in bounded time.
func TestParseManyBraces(t *testing.T) {
	var s Solution
	if err := Parse(strings.Repeat("{", MaxOutputBytes-1), &s); err == nil {
		t.Fatal("accepted braces")
	}
}

// Every schema is valid JSON and requires at least what Parse requires.
func TestSchemasRequireWhatParseRequires(t *testing.T) {
	for _, out := range []requirer{&Manifest{}, &Solution{}, &Verification{}, &Verdict{}} {
		_, s, ok := SchemaOf(out)
		if !ok || !json.Valid([]byte(s)) {
			t.Fatalf("%T: schema %v %s", out, ok, s)
		}
		for _, f := range out.required() {
			leaf := f.path[strings.LastIndex(f.path, ".")+1:]
			if !strings.Contains(s, `"`+leaf+`"]`) && !strings.Contains(s, `"`+leaf+`",`) {
				t.Errorf("%T: schema does not require %s", out, f.path)
			}
		}
	}
}

// Reasoning tags inside the answer are the answer's: only a reasoning block
// that leads the reply (or closes before its first '{', its opening tag in
// the chat template) is dropped, and a stray closing tag after the object
// drops nothing.
func TestReasoningTagsInTheAnswerAreKept(t *testing.T) {
	for _, tc := range []struct{ name, text, answer string }{
		{"open tag in a string", `{"answer":"Wrap the draft in a <think> tag","confidence":0.9}`, "Wrap the draft in a <think> tag"},
		{"whole block in a string", `{"answer":"use <think>x</think> here","confidence":0.9}`, "use <think>x</think> here"},
		{"closing tag in a string", `{"answer":"end it with </thinking>","confidence":0.9}`, "end it with </thinking>"},
		{"stray closing tag after the object", `{"answer":"4","confidence":0.9}` + "\n</think>", "4"},
		{"leading block, tag in the answer", `<think>draft {"answer":"5","confidence":0.1}</think>{"answer":"say <think>","confidence":0.9}`, "say <think>"},
		{"template-opened block, tag in the answer", `reasoning here</think>{"answer":"a </think> b","confidence":0.9}`, "a </think> b"},
		{"template-opened block drafting JSON", "A first draft: {\"answer\":\"42\",\"confidence\":0.9} hmm, wrong.</think>\n{\"answer\":\"43\",\"confidence\":0.8}", "43"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var s Solution
			if err := Parse(tc.text, &s); err != nil || s.Answer != tc.answer {
				t.Fatalf("Parse: %v, answer %q, want %q", err, s.Answer, tc.answer)
			}
		})
	}
}

// Stripping reasoning is one linear pass: a reply of the largest size made
// of empty blocks is parsed at once, not in quadratic time.
func TestStripReasoningIsLinear(t *testing.T) {
	text := strings.Repeat("a<think></think>", MaxOutputBytes/len("a<think></think>"))
	start := time.Now()
	var s Solution
	_ = Parse(text, &s)
	_ = StripReasoning(text)
	if d := time.Since(start); d > 50*time.Millisecond {
		t.Fatalf("%d bytes of empty blocks took %v", len(text), d)
	}
}
