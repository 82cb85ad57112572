package eval

import (
	"fmt"
	"strings"
)

// Strategies a run may use (POST /v1/consensus's "strategy").
const (
	Debate = "debate" // Pathos -> Logos <-> Ethos rounds -> Arbiter
	Vote   = "vote"   // samples from Logos at a temperature, the majority answer, Ethos checking it
	Single = "single" // one Logos answer
)

// Strategies lists the strategies in the order si eval runs and reports them.
var Strategies = []string{Debate, Vote, Single}

// Defaults and bounds of a plan.
const (
	// DefaultBudget is the completion tokens a question may use at worst.
	DefaultBudget = 3072
	// MinBudget gives every call of a debate the mesh's least max_tokens (16).
	MinBudget = 16 * debateCalls
	// MaxBudget gives single the mesh's largest max_tokens.
	MaxBudget = 32768
	// DebateRounds is how many rounds a debate may take, as in Du et al.'s
	// two rounds of debate.
	DebateRounds = 2
	// VoteTemperature is the temperature vote's samples are drawn at.
	VoteTemperature = 0.7
	// debateCalls is a debate's most agent calls: Pathos, Logos and Ethos in
	// each round, then the Arbiter.
	debateCalls = 1 + 2*DebateRounds + 1
)

// Setting is how one strategy runs every question of an evaluation.
type Setting struct {
	Strategy string `json:"strategy"`
	// MaxTokens is each agent call's max_tokens.
	MaxTokens int `json:"max_tokens"`
	// Calls is the most agent calls a run makes; Calls x MaxTokens is its
	// worst case in completion tokens.
	Calls int `json:"calls"`
	// MaxRounds is a debate's rounds; Samples and Temperature a vote's.
	MaxRounds   int     `json:"max_rounds,omitempty"`
	Samples     int     `json:"samples,omitempty"`
	Temperature float64 `json:"temperature,omitempty"`
}

// WorstCase is the most completion tokens a run of s may generate.
func (s Setting) WorstCase() int { return s.Calls * s.MaxTokens }

// Plan matches the strategies at a budget of completion tokens per
// question, so that each one's worst case is about the same (never above
// it):
//
//   - debate: DebateRounds rounds, at most 1 + 2·rounds + 1 = 6 calls,
//     each with max_tokens = budget/6;
//   - vote: the same max_tokens per call, and as many samples as leave
//     room for Ethos's check of the winner: budget/max_tokens − 1 (5 at
//     any budget, as 6 calls fit), at temperature 0.7;
//   - single: one call with max_tokens = budget.
//
// The budget bounds generated tokens, which the strategies control; prompt
// tokens (a debate's grow with each round) are measured and reported, not
// matched.
func Plan(strategy string, budget int) (Setting, error) {
	if budget < MinBudget || budget > MaxBudget {
		return Setting{}, fmt.Errorf("--budget %d is outside %d..%d completion tokens per question", budget, MinBudget, MaxBudget)
	}
	per := budget / debateCalls
	switch strategy {
	case Debate:
		return Setting{Strategy: Debate, MaxTokens: per, Calls: debateCalls, MaxRounds: DebateRounds}, nil
	case Vote:
		k := budget/per - 1
		return Setting{Strategy: Vote, MaxTokens: per, Calls: k + 1, Samples: k, Temperature: VoteTemperature}, nil
	case Single:
		return Setting{Strategy: Single, MaxTokens: budget, Calls: 1}, nil
	}
	return Setting{}, fmt.Errorf("unknown strategy %q: use %s", strategy, strings.Join(Strategies, ", "))
}

// ParseStrategies reads a comma-separated list of strategies, each once.
func ParseStrategies(s string) ([]string, error) {
	var out []string
	seen := map[string]bool{}
	for _, f := range strings.Split(s, ",") {
		f = strings.ToLower(strings.TrimSpace(f))
		if f == "" {
			continue
		}
		if _, err := Plan(f, DefaultBudget); err != nil {
			return nil, err
		}
		if seen[f] {
			return nil, fmt.Errorf("strategy %s is named twice", f)
		}
		seen[f] = true
		out = append(out, f)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no strategy given: use %s", strings.Join(Strategies, ","))
	}
	return out, nil
}
