// Package synapse holds the Cloud Synapse's agents as data: what Pathos,
// Logos, Ethos and the Arbiter return, the prompts that ask for it, the
// validation of model output, and the consensus score. It does no I/O, so the
// workflow may use it.
package synapse

import (
	"errors"
	"fmt"
	"math"
	"strings"
)

// Role names an agent.
type Role string

// The agents.
const (
	Pathos  Role = "pathos"
	Logos   Role = "logos"
	Ethos   Role = "ethos"
	Arbiter Role = "arbiter"
)

// Manifest is Pathos's reading of the user's intent.
type Manifest struct {
	Intent          string   `json:"intent"`
	Domain          string   `json:"domain"`
	Constraints     []string `json:"constraints"`
	SuccessCriteria []string `json:"success_criteria"`
	Confidence      float64  `json:"confidence"`
}

// Solution is Logos's answer.
type Solution struct {
	Answer     string   `json:"answer"`
	Sources    []string `json:"sources"`
	Confidence float64  `json:"confidence"`
}

// Scores are Ethos's criterion scores, each in [0, 1].
type Scores struct {
	Accuracy  float64 `json:"accuracy"`
	Relevance float64 `json:"relevance"`
	Safety    float64 `json:"safety"`
}

// Mean is the unweighted mean of the criterion scores.
func (s Scores) Mean() float64 { return (s.Accuracy + s.Relevance + s.Safety) / 3 }

// Verification is Ethos's judgement of a solution.
type Verification struct {
	Scores     Scores   `json:"scores"`
	Violations []string `json:"violations"`
	Feedback   string   `json:"feedback"`
}

// Verdict is the Arbiter's decision after the last round.
type Verdict struct {
	Answer     string  `json:"answer"`
	Confidence float64 `json:"confidence"`
	Note       string  `json:"note"`
}

// Score weights. They sum to 1 so the score stays in [0, 1].
const (
	WeightPathos = 0.15
	WeightLogos  = 0.25
	WeightEthos  = 0.60
	// ViolationCap bounds the score of a solution that breaks a constraint.
	ViolationCap = 0.5
)

// Score is the consensus score of one round:
//
//	score = 0.15·Pathos.Confidence + 0.25·Logos.Confidence + 0.60·mean(Ethos.Scores)
//
// capped at 0.5 when Ethos reports any violated constraint, so a solution that
// breaks a stated constraint cannot reach consensus on confidence alone. Ethos
// carries most of the weight because it is the only agent judging another's
// work; the other two say how sure they are of their own. The result is
// rounded to four decimals so that it prints and compares the same everywhere.
func Score(m Manifest, s Solution, v Verification) float64 {
	score := WeightPathos*m.Confidence + WeightLogos*s.Confidence + WeightEthos*v.Scores.Mean()
	if len(v.Violations) > 0 && score > ViolationCap {
		score = ViolationCap
	}
	return math.Round(score*1e4) / 1e4
}

// Validate checks the fields the workflow depends on.
func (m Manifest) Validate() error {
	if strings.TrimSpace(m.Intent) == "" {
		return errors.New(`"intent" is empty`)
	}
	return unit("confidence", m.Confidence)
}

// Validate checks the fields the workflow depends on.
func (s Solution) Validate() error {
	if strings.TrimSpace(s.Answer) == "" {
		return errors.New(`"answer" is empty`)
	}
	return unit("confidence", s.Confidence)
}

// Validate checks the fields the workflow depends on.
func (v Verification) Validate() error {
	return errors.Join(unit("scores.accuracy", v.Scores.Accuracy), unit("scores.relevance", v.Scores.Relevance),
		unit("scores.safety", v.Scores.Safety))
}

// Validate checks the fields the workflow depends on.
func (v Verdict) Validate() error {
	if strings.TrimSpace(v.Answer) == "" {
		return errors.New(`"answer" is empty`)
	}
	if strings.TrimSpace(v.Note) == "" {
		return errors.New(`"note" is empty`)
	}
	return unit("confidence", v.Confidence)
}

func unit(name string, x float64) error {
	if math.IsNaN(x) || x < 0 || x > 1 {
		return fmt.Errorf("%q must be between 0 and 1, got %v", name, x)
	}
	return nil
}

// validator is implemented by every agent result.
type validator interface{ Validate() error }

// MaxOutputBytes bounds the model output Parse accepts.
const MaxOutputBytes = 256 << 10

// Parse decodes a model's reply into out and validates it. It drops the
// reasoning the reply leads with, or ends (replyParts), then takes the first
// balanced JSON object in what is left that holds every field the agent must return, in
// its kind, and validates; the object may stand alone or sit in prose or a
// Markdown code fence, as models often write. Anything else is an error fit
// for a repair prompt: the first candidate object's problem, or that there
// is no object. Unknown fields are ignored; missing ones are errors, never
// zeros.
func Parse(text string, out validator) error {
	if len(text) > MaxOutputBytes {
		return fmt.Errorf("reply is %d bytes, more than %d", len(text), MaxOutputBytes)
	}
	var first error
	for _, part := range replyParts(text) {
		for _, obj := range objects(part) {
			err := decodeInto(obj, out)
			if err == nil {
				return nil
			}
			if first == nil {
				first = err
			}
		}
	}
	if first == nil {
		return errors.New("reply contains no JSON object")
	}
	return first
}

// replyParts is where Parse looks for the answer, in order. A reply that
// does not lead with a reasoning tag may still end one the chat template
// opened, and a model drafts JSON while it reasons: what follows the
// reply's last closing tag comes first, then the reply as StripReasoning
// leaves it (a closing tag inside the answer's own strings leaves nothing
// valid after it).
func replyParts(text string) []string {
	stripped := StripReasoning(text)
	if _, _, ok := leadingTag(strings.TrimLeft(text, " \t\r\n")); ok {
		return []string{stripped}
	}
	cut := -1
	for _, tag := range reasoningTags {
		if j := strings.LastIndex(text, tag[1]); j >= 0 {
			cut = max(cut, j+len(tag[1]))
		}
	}
	if cut < 0 {
		return []string{stripped}
	}
	return []string{text[cut:], stripped}
}
