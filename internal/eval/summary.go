package eval

import (
	"slices"

	"github.com/superinstance/mesh/internal/money"
)

// Result is one question run with one strategy.
type Result struct {
	Question   string `json:"question"` // the question's id
	Strategy   string `json:"strategy"`
	WorkflowID string `json:"workflow_id,omitempty"`
	Expected   int64  `json:"expected"`
	// Got is the integer read from the final answer (FinalInteger); nil
	// when there was none.
	Got     *int64 `json:"got"`
	Correct bool   `json:"correct"`
	// Rounds is how many rounds the run took (a debate's).
	Rounds int `json:"rounds"`
	// Tokens are the run's prompt and completion tokens, all its calls.
	Tokens    int64        `json:"tokens"`
	Cost      money.Micros `json:"cost_micros"`
	LatencyMS int64        `json:"latency_ms"`
	Error     string       `json:"error,omitempty"`
	Answer    string       `json:"answer,omitempty"`
}

// Summary is one strategy's row of the report.
type Summary struct {
	Strategy  string  `json:"strategy"`
	Questions int     `json:"questions"`
	Correct   int     `json:"correct"`
	Accuracy  float64 `json:"accuracy"`
	Failed    int     `json:"failed"`
	// TokensPerQuestion is the mean of every run's tokens, rounded down.
	TokensPerQuestion int64 `json:"tokens_per_question"`
	Tokens            int64 `json:"tokens"`
	// CostPerQuestion is Cost shared among the questions (money.Per).
	CostPerQuestion money.Micros `json:"cost_per_question_micros"`
	Cost            money.Micros `json:"cost_micros"`
	// P50LatencyMS is the median latency (the lower middle of an even count).
	P50LatencyMS int64 `json:"p50_latency_ms"`
}

// Summarize adds results up per strategy, in the order given.
func Summarize(strategies []string, results []Result) []Summary {
	out := make([]Summary, 0, len(strategies))
	for _, s := range strategies {
		row := Summary{Strategy: s}
		var lat []int64
		for _, r := range results {
			if r.Strategy != s {
				continue
			}
			row.Questions++
			if r.Correct {
				row.Correct++
			}
			if r.Error != "" {
				row.Failed++
			}
			row.Tokens += r.Tokens
			row.Cost += r.Cost
			lat = append(lat, r.LatencyMS)
		}
		if row.Questions > 0 {
			row.Accuracy = float64(row.Correct) / float64(row.Questions)
			row.TokensPerQuestion = row.Tokens / int64(row.Questions)
			row.CostPerQuestion = money.Per(row.Cost, int64(row.Questions))
			slices.Sort(lat)
			row.P50LatencyMS = lat[(len(lat)-1)/2]
		}
		out = append(out, row)
	}
	return out
}
