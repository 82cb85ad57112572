package workflows

import (
	"cmp"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"

	"go.temporal.io/sdk/workflow"

	"github.com/superinstance/mesh/activities"
	"github.com/superinstance/mesh/internal/synapse"
)

// Strategy is how a run reaches its answer.
type Strategy string

// Strategies.
const (
	// StrategyDebate is Pathos, then rounds of Logos and Ethos until the
	// score reaches the threshold, then the Arbiter.
	StrategyDebate Strategy = "debate"
	// StrategyVote draws Samples answers from Logos at Temperature (sample
	// i with seed i), takes the majority (MajorityKey), and has Ethos check
	// the winner once.
	StrategyVote Strategy = "vote"
	// StrategySingle is one Logos answer.
	StrategySingle Strategy = "single"
)

// Bounds and defaults of the vote and single strategies.
const (
	DefaultSamples     = 5
	MaxSamples         = 15
	DefaultTemperature = 0.7
	MaxTemperature     = 2.0
)

// ParseStrategy accepts debate, vote or single; "" is debate.
func ParseStrategy(s string) (Strategy, error) {
	switch st := Strategy(strings.ToLower(strings.TrimSpace(s))); st {
	case StrategyDebate, StrategyVote, StrategySingle:
		return st, nil
	case "":
		return StrategyDebate, nil
	}
	return "", fmt.Errorf("invalid strategy %q: use debate, vote or single", s)
}

// normalizeStrategy applies the strategy's defaults to in and validates
// its samples and temperature.
func (in *ConsensusInput) normalizeStrategy() error {
	st, err := ParseStrategy(string(in.Strategy))
	if err != nil {
		return err
	}
	in.Strategy = st
	if t := in.Temperature; t != nil && !(*t >= 0 && *t <= MaxTemperature) {
		return fmt.Errorf("temperature %v is outside 0..%v", *t, MaxTemperature)
	}
	switch st {
	case StrategyDebate:
		if in.Samples != 0 || in.Temperature != nil {
			return fmt.Errorf("samples and temperature apply to the vote and single strategies, not %s", st)
		}
	case StrategyVote:
		if in.Samples == 0 {
			in.Samples = DefaultSamples
		}
		if in.Samples < 1 || in.Samples > MaxSamples {
			return fmt.Errorf("samples %d is outside 1..%d", in.Samples, MaxSamples)
		}
		if in.Temperature == nil {
			t := DefaultTemperature
			in.Temperature = &t
		}
	case StrategySingle:
		if in.Samples == 0 {
			in.Samples = 1
		}
		if in.Samples != 1 {
			return fmt.Errorf("samples %d: a single run takes one answer (use strategy vote for more)", in.Samples)
		}
		if in.Temperature == nil {
			t := 0.0
			in.Temperature = &t
		}
	}
	return nil
}

// Vote is one of a vote's samples as the state shows it.
type Vote struct {
	// Sample is the sample's index, 1 to Samples; it is also its seed.
	Sample     int     `json:"sample"`
	Answer     string  `json:"answer"`
	Confidence float64 `json:"confidence"`
	// Key is the answer as the majority compares it (MajorityKey).
	Key string `json:"key"`
}

// MajorityKey is answer as a vote compares it: surrounding white space
// trimmed, inner runs of white space made one space, lower case, one
// trailing period dropped; an answer that is then a finite decimal number
// (thousands commas allowed) compares as that number, so "42", "42.0" and
// "4.2e1" are one answer.
func MajorityKey(answer string) string {
	k := strings.ToLower(strings.Join(strings.Fields(answer), " "))
	k = strings.TrimSuffix(k, ".")
	if n, ok := number(k); ok {
		return strconv.FormatFloat(n, 'g', -1, 64)
	}
	return k
}

// number parses a plain decimal number: digits, an optional sign, point,
// exponent and thousands commas; not hex, inf or nan.
func number(s string) (float64, bool) {
	if s == "" || strings.ContainsFunc(s, func(r rune) bool { return !strings.ContainsRune("0123456789+-.,e", r) }) {
		return 0, false
	}
	n, err := strconv.ParseFloat(strings.ReplaceAll(s, ",", ""), 64)
	if err != nil || math.IsInf(n, 0) || math.IsNaN(n) {
		return 0, false
	}
	if n == 0 {
		n = 0 // -0 is 0
	}
	return n, true
}

// Majority is the index in votes of the winning vote: the answer most
// votes share (by Key), ties broken by the lowest sample index; and how many
// votes it has. votes must be in sample order.
func Majority(votes []Vote) (winner, count int) {
	counts := make(map[string]int, len(votes))
	for _, v := range votes {
		counts[v.Key]++
	}
	winner = -1
	for i, v := range votes { // in sample order: the first of a tied count wins
		if n := counts[v.Key]; n > count {
			winner, count = i, n
		}
	}
	return winner, count
}

// VoteScore is the score of a vote's winner s as Ethos checked it: the
// mean of Ethos's scores, capped at ViolationCap when Ethos reports a
// violated constraint, rounded to four decimals as synapse.Score is. (No
// Pathos confidence: a vote has no Pathos.)
func VoteScore(v synapse.Verification) float64 {
	score := v.Scores.Mean()
	if len(v.Violations) > 0 && score > synapse.ViolationCap {
		score = synapse.ViolationCap
	}
	return math.Round(score*1e4) / 1e4
}

// sampleSeed is sample i's seed; a reproducible backend answers a rerun
// of the same vote the same.
func sampleSeed(i int) *int64 {
	s := int64(i)
	return &s
}

// runSamples is the vote and single strategies: Samples answers from
// Logos (one for single), side by side, the majority among them, and for
// vote Ethos's check of the winner. Every sample is a step of its own
// (r<round>-logos-s<i> for a vote), billed with the others. The run waits
// for every sample, even after one failed, so that each call that ran is
// billed before the run ends; then it fails with the lowest sample's error.
func (c *consensus) runSamples(ctx workflow.Context, round int, feedback, earlier string) error {
	var inf *activities.Inference
	c.state.Round, c.state.LastRound = round, round
	c.state.Rounds = append(c.state.Rounds, RoundState{Round: round})
	vote := c.in.Strategy == StrategyVote
	k := c.in.Samples
	sols := make([]*synapse.Solution, k)
	errs := make([]error, k)
	wg := workflow.NewWaitGroup(ctx)
	for i := 1; i <= k; i++ {
		li := c.logosInput(round, synapse.Manifest{}, feedback, earlier)
		li.Temperature = *c.in.Temperature
		if vote {
			li.Seed = sampleSeed(i)
		}
		wg.Add(1)
		workflow.Go(ctx, func(ctx workflow.Context) {
			defer wg.Done()
			if vote {
				c.sample = i // read by step before it first blocks
			}
			var lo activities.LogosOutput
			if err := c.step(ctx, round, "logos", inf.Logos, li, li.Budget, &lo); err != nil {
				errs[i-1] = err
				return
			}
			c.done(ctx, lo.Usage)
			sols[i-1] = &lo.Solution
			if vote { // shown as each sample ends; in sample order below
				c.state.Votes = append(c.state.Votes, Vote{Sample: i, Answer: lo.Solution.Answer, Confidence: lo.Solution.Confidence,
					Key: MajorityKey(lo.Solution.Answer)})
			}
		})
	}
	wg.Wait(ctx)
	c.sample = 0
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	rs := &c.state.Rounds[len(c.state.Rounds)-1]
	if !vote {
		rs.Solution = sols[0]
		rs.Score = sols[0].Confidence
		c.state.Score = rs.Score
		c.state.Answer = sols[0].Answer
		if err := c.bill(ctx); err != nil {
			return err
		}
		c.state.Status = StatusConsensus
		return nil
	}
	slices.SortFunc(c.state.Votes, func(a, b Vote) int { return cmp.Compare(a.Sample, b.Sample) })
	w, n := Majority(c.state.Votes)
	c.state.Winner, c.state.WinnerVotes = c.state.Votes[w].Sample, n
	win := *sols[w]
	rs.Solution = &win
	if err := c.bill(ctx); err != nil {
		return err
	}
	var eo activities.EthosOutput
	ei := activities.EthosInput{Question: c.in.Prompt, Solution: win, Round: round}
	ei.Budget = c.budget(synapse.EthosPrompt(ei.Question, ei.Manifest, ei.Solution, ei.Round))
	if err := c.step(ctx, round, "ethos", inf.Ethos, ei, ei.Budget, &eo); err != nil {
		return err
	}
	rs.Verification = &eo.Verification
	rs.Score = VoteScore(eo.Verification)
	c.state.Score = rs.Score
	c.done(ctx, eo.Usage)
	c.state.Answer = win.Answer
	if err := c.bill(ctx); err != nil {
		return err
	}
	c.state.Status = StatusConsensus
	return nil
}
