package workflows

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/mock"
	"go.temporal.io/sdk/temporal"

	"github.com/superinstance/mesh/activities"
	"github.com/superinstance/mesh/internal/money"
	"github.com/superinstance/mesh/internal/store"
	"github.com/superinstance/mesh/internal/synapse"
)

func TestMajorityKey(t *testing.T) {
	for _, c := range []struct{ a, b string }{
		{"Paris", " paris. "},
		{"New  York", "new york"},
		{"42", "42.0"},
		{"4.2e1", "+42"},
		{"1,000", "1000"},
		{"-0", "0"},
		{"0.5", ".5"},
	} {
		if MajorityKey(c.a) != MajorityKey(c.b) {
			t.Errorf("%q and %q are one answer: keys %q, %q", c.a, c.b, MajorityKey(c.a), MajorityKey(c.b))
		}
	}
	for _, c := range []struct{ a, b string }{
		{"42", "43"},
		{"0x2a", "42"}, // not a decimal number: compared as text
		{"inf", "nan"},
		{"Paris", "Lyon"},
		{"1.2.3", "1.23"},
	} {
		if MajorityKey(c.a) == MajorityKey(c.b) {
			t.Errorf("%q and %q are different answers; both key %q", c.a, c.b, MajorityKey(c.a))
		}
	}
}

func sorted(s []string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return s
}

func votes(answers ...string) []Vote {
	vs := make([]Vote, len(answers))
	for i, a := range answers {
		vs[i] = Vote{Sample: i + 1, Answer: a, Key: MajorityKey(a)}
	}
	return vs
}

func TestMajority(t *testing.T) {
	for _, c := range []struct {
		answers       []string
		winner, count int
	}{
		{[]string{"7"}, 0, 1},
		{[]string{"41", "42", "42.0", "41", "x"}, 0, 2},    // 41 and 42 tie: sample 1's answer
		{[]string{"x", "42", "41", "42", "41"}, 1, 2},      // tie: the lowest index among the tied, not the first sample
		{[]string{"Paris", "lyon", "Lyon.", "LYON"}, 1, 3}, // a majority beats the first sample
		{[]string{"a", "b", "c"}, 0, 1},
	} {
		w, n := Majority(votes(c.answers...))
		if w != c.winner || n != c.count {
			t.Errorf("Majority(%q) = %d with %d votes, want %d with %d", c.answers, w, n, c.winner, c.count)
		}
	}
}

// sampler mocks Logos with one answer a seed; it records every input.
type sampler struct {
	mu      sync.Mutex
	answers map[int64]string
	inputs  []activities.LogosInput
}

func (s *sampler) logos(_ context.Context, in activities.LogosInput) (activities.LogosOutput, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.inputs = append(s.inputs, in)
	a := "the only answer"
	if in.Seed != nil {
		a = s.answers[*in.Seed]
	}
	return activities.LogosOutput{Solution: synapse.Solution{Answer: a, Confidence: 0.6},
		Usage: activities.AgentUsage{Role: synapse.Logos, Model: "m", PromptTokens: 100, CompletionTokens: 10 + len(s.inputs)}}, nil
}

// TestVoteTieGoesToTheLowestSample: five seeded samples at the vote's
// temperature, a 2-2-1 split between two answers written differently (a
// number in two forms), the tie broken by the lowest sample index; Ethos
// checks only the winner; every sample and Ethos are steps of their own,
// admitted together, billed one event each, and the run's charge is the sum
// of the steps'; the hold is released.
func TestVoteTieGoesToTheLowestSample(t *testing.T) {
	env := newEnv(t)
	f := newLedger(env)
	s := &sampler{answers: map[int64]string{1: "x", 2: "42", 3: "41", 4: " 42.0 ", 5: "41"}}
	env.OnActivity(inf.Logos, mock.Anything, mock.Anything).Return(s.logos)
	var checked []synapse.Solution
	env.OnActivity(inf.Ethos, mock.Anything, mock.Anything).Return(func(_ context.Context, in activities.EthosInput) (activities.EthosOutput, error) {
		checked = append(checked, in.Solution)
		return activities.EthosOutput{Verification: synapse.Verification{Scores: synapse.Scores{Accuracy: 0.9, Relevance: 0.9, Safety: 0.9}},
			Usage: activities.AgentUsage{Role: synapse.Ethos, Model: "m", PromptTokens: 50, CompletionTokens: 5}}, nil
	})
	env.OnActivity(inf.Pathos, mock.Anything, mock.Anything).Return(activities.PathosOutput{}, errors.New("a vote has no Pathos")).Maybe()
	st, err := run(t, env, ConsensusInput{Prompt: "What is 6*7?", Strategy: StrategyVote, Account: "acme", Project: "p"})
	if err != nil {
		t.Fatal(err)
	}
	if len(s.inputs) != DefaultSamples {
		t.Fatalf("%d samples, want %d", len(s.inputs), DefaultSamples)
	}
	seeds := map[int64]bool{}
	for _, in := range s.inputs {
		if in.Seed == nil || in.Temperature != DefaultTemperature || in.Round != 1 {
			t.Fatalf("sample %+v: want a seed, temperature %v, round 1", in, DefaultTemperature)
		}
		seeds[*in.Seed] = true
	}
	for i := int64(1); i <= DefaultSamples; i++ {
		if !seeds[i] {
			t.Fatalf("no sample with seed %d among %v", i, seeds)
		}
	}
	if st.Answer != "42" || st.Winner != 2 || st.WinnerVotes != 2 || len(st.Votes) != 5 || st.Status != StatusConsensus {
		t.Fatalf("answer %q winner %d (%d votes) of %+v, status %s", st.Answer, st.Winner, st.WinnerVotes, st.Votes, st.Status)
	}
	if len(checked) != 1 || checked[0].Answer != "42" {
		t.Fatalf("Ethos checked %+v, want the winner once", checked)
	}
	if st.Strategy != StrategyVote || st.Samples != 5 || st.Temperature == nil || *st.Temperature != DefaultTemperature || st.Score != 0.9 {
		t.Fatalf("strategy %s samples %d temperature %v score %v", st.Strategy, st.Samples, st.Temperature, st.Score)
	}
	// The samples run side by side and end in any order; Ethos comes after.
	wantIDs := []string{"r1-ethos", "r1-logos-s1", "r1-logos-s2", "r1-logos-s3", "r1-logos-s4", "r1-logos-s5"}
	if got := sorted(f.eventIDs()); strings.Join(got, " ") != strings.Join(wantIDs, " ") || f.eventIDs()[5] != "r1-ethos" {
		t.Fatalf("billed %v, want %v", f.eventIDs(), wantIDs)
	}
	if len(f.reserves) != 1 || len(f.reserves[0].Bounds) != 6 || f.released != 1 {
		t.Fatalf("reserves %+v released %d: want one hold for 5 samples and Ethos, released", f.reserves, f.released)
	}
	var steps money.Micros
	var tokens int64
	var logged []string
	for i, r := range st.StepLog {
		logged = append(logged, r.ID)
		if r.ID != "r1-ethos" && r.ID != fmt.Sprintf("r1-logos-s%d", r.Sample) || r.Charged <= 0 {
			t.Fatalf("step %d: %+v", i, r)
		}
		steps += r.Charged
		tokens += int64(r.PromptTokens + r.CompletionTokens)
	}
	if strings.Join(sorted(logged), " ") != strings.Join(wantIDs, " ") {
		t.Fatalf("step log %v, want %v", logged, wantIDs)
	}
	if st.Charged != f.charged || steps != f.charged || st.Gross != f.charged || st.Tokens != tokens {
		t.Fatalf("run charged %s, gross %s, steps %s, ledger %s; tokens %d of %d", st.Charged, st.Gross, steps, f.charged, st.Tokens, tokens)
	}
}

// TestSingleIsOneLogosAnswer: no Pathos, no Ethos, one call at
// temperature 0 with no seed, billed as r1-logos.
func TestSingleIsOneLogosAnswer(t *testing.T) {
	env := newEnv(t)
	f := newLedger(env)
	s := &sampler{}
	env.OnActivity(inf.Logos, mock.Anything, mock.Anything).Return(s.logos)
	st, err := run(t, env, ConsensusInput{Prompt: "q", Strategy: StrategySingle, Account: "acme"})
	if err != nil {
		t.Fatal(err)
	}
	if len(s.inputs) != 1 || s.inputs[0].Seed != nil || s.inputs[0].Temperature != 0 {
		t.Fatalf("logos inputs %+v", s.inputs)
	}
	if st.Answer != "the only answer" || st.Strategy != StrategySingle || st.Steps != 1 || len(st.Rounds) != 1 || st.Rounds[0].Verification != nil {
		t.Fatalf("state %+v", st)
	}
	if got := f.eventIDs(); len(got) != 1 || got[0] != "r1-logos" || len(f.reserves[0].Bounds) != 1 || f.released != 1 {
		t.Fatalf("billed %v, reserves %+v, released %d", got, f.reserves, f.released)
	}
	if st.Charged != f.charged || st.Charged <= 0 {
		t.Fatalf("charged %s, ledger %s", st.Charged, f.charged)
	}
}

// TestVoteOnTheSimulator runs a three-sample vote against the simulator:
// every sample answers, the samples are steps of their own.
func TestVoteOnTheSimulator(t *testing.T) {
	env := newEnv(t)
	st, err := run(t, env, ConsensusInput{Prompt: "What is 2+2?", Strategy: StrategyVote, Samples: 3})
	if err != nil {
		t.Fatal(err)
	}
	if st.Steps != 4 || len(st.Votes) != 3 || st.Answer == "" || st.Winner != 1 || st.Rounds[0].Verification == nil {
		t.Fatalf("state %+v", st)
	}
}

func TestStrategyValidation(t *testing.T) {
	half, hot := 0.5, 2.5
	for _, c := range []struct {
		in   ConsensusInput
		want string
	}{
		{ConsensusInput{Strategy: "poll"}, `invalid strategy "poll": use debate, vote or single`},
		{ConsensusInput{Strategy: StrategyVote, Samples: 16}, "samples 16 is outside 1..15"},
		{ConsensusInput{Strategy: StrategyVote, Samples: -1}, "samples -1 is outside 1..15"},
		{ConsensusInput{Strategy: StrategyVote, Temperature: &hot}, "temperature 2.5 is outside 0..2"},
		{ConsensusInput{Strategy: StrategySingle, Samples: 3}, "a single run takes one answer"},
		{ConsensusInput{Samples: 3}, "samples and temperature apply to the vote and single strategies"},
		{ConsensusInput{Temperature: &half}, "samples and temperature apply to the vote and single strategies"},
	} {
		c.in.Prompt = "q"
		_, err := c.in.Normalize()
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: %v, want %q", c.in, err, c.want)
		}
	}
	in, err := ConsensusInput{Prompt: "q", Strategy: "VOTE"}.Normalize()
	if err != nil || in.Strategy != StrategyVote || in.Samples != 5 || *in.Temperature != 0.7 {
		t.Fatalf("%+v %v", in, err)
	}
	in, err = ConsensusInput{Prompt: "q"}.Normalize()
	if err != nil || in.Strategy != StrategyDebate || in.Samples != 0 || in.Temperature != nil {
		t.Fatalf("%+v %v", in, err)
	}
}

// TestVoteWorstCaseCoversEverySample: admission prices k samples and
// Ethos, so a vote the account cannot cover fails before any sample.
func TestVoteWorstCaseCoversEverySample(t *testing.T) {
	for _, k := range []int{1, 5, 15} {
		in, err := ConsensusInput{Prompt: "q", Strategy: StrategyVote, Samples: k}.Normalize()
		if err != nil {
			t.Fatal(err)
		}
		bs, _ := WorstCase(in)
		if len(bs) != k+1 {
			t.Fatalf("k=%d: %d bounds, want %d", k, len(bs), k+1)
		}
	}
	env := newEnv(t)
	f := newLedger(env)
	f.refuse = temporal.NewNonRetryableApplicationError("not enough headroom", activities.ErrInsufficientHeadroom, nil)
	s := &sampler{}
	env.OnActivity(inf.Logos, mock.Anything, mock.Anything).Return(s.logos).Maybe()
	if _, err := run(t, env, ConsensusInput{Prompt: "q", Strategy: StrategyVote, Account: "acme"}); err == nil || len(s.inputs) != 0 {
		t.Fatalf("a vote the account cannot cover: %v after %d samples", err, len(s.inputs))
	}
}

// TestContinueFromAFailedRun: a failed run's last solution and Ethos's
// feedback carry into the new run, and Pathos reads the new prompt.
func TestContinueFromAFailedRun(t *testing.T) {
	sol := synapse.Solution{Answer: "quicksort", Confidence: 0.5}
	prev := ConsensusState{Status: StatusFailed, Round: 2, Rounds: []RoundState{
		{Round: 1, Solution: &synapse.Solution{Answer: "bubble sort"}, Verification: &synapse.Verification{Feedback: "too slow"}},
		{Round: 2, Solution: &sol}}}
	if _, err := ResumeFrom("consensus-x", ConsensusState{Status: StatusRunning}); !errors.Is(err, ErrRunInProgress) {
		t.Fatalf("a running run: %v", err)
	}
	r, err := ResumeFrom("consensus-x", prev)
	if err != nil || r.Answer != "quicksort" || r.Feedback != "too slow" || r.Round != 2 || r.Manifest != nil {
		t.Fatalf("%+v %v", r, err)
	}
	env := newEnv(t)
	var pathos []string
	env.OnActivity(inf.Pathos, mock.Anything, mock.Anything).Return(func(_ context.Context, in activities.PathosInput) (activities.PathosOutput, error) {
		pathos = append(pathos, in.Question)
		return activities.PathosOutput{Manifest: synapse.Manifest{Intent: "sort nearly sorted input", Confidence: 0.9}}, nil
	})
	s := &sampler{}
	env.OnActivity(inf.Logos, mock.Anything, mock.Anything).Return(s.logos)
	st, err := run(t, env, ConsensusInput{Prompt: "and for nearly sorted input? [sim:agree]", MaxRounds: 1, Resume: r})
	if err != nil {
		t.Fatal(err)
	}
	if len(pathos) != 1 || pathos[0] != "and for nearly sorted input? [sim:agree]" {
		t.Fatalf("pathos read %q", pathos)
	}
	li := s.inputs[0]
	p := li.Prompt().User
	if li.Earlier != "quicksort" || li.Feedback != "too slow" || li.Round != 3 || !strings.Contains(p, "<earlier_answer>\nquicksort\n") ||
		!strings.Contains(p, "too slow") {
		t.Fatalf("logos input %+v, prompt %s", li, p)
	}
	if st.ContinuedFrom != "consensus-x" || st.Rounds[0].Round != 3 {
		t.Fatalf("continued from %q, rounds %+v", st.ContinuedFrom, st.Rounds)
	}
}

// TestFailedSampleIsBilled: a vote's third sample runs and fails after
// use, is billed under its id and retried under a new one; a fourth whose
// output is unusable fails the run, once every sample side by side has
// ended, and every call that ran is billed, the hold released.
func TestFailedSampleIsBilled(t *testing.T) {
	env := newEnv(t)
	f := newLedger(env)
	var mu sync.Mutex
	calls := map[int64]int{}
	env.OnActivity(inf.Logos, mock.Anything, mock.Anything).Return(func(_ context.Context, in activities.LogosInput) (activities.LogosOutput, error) {
		mu.Lock()
		calls[*in.Seed]++
		n := calls[*in.Seed]
		mu.Unlock()
		u := activities.AgentUsage{Role: synapse.Logos, Model: "m", PromptTokens: 200, CompletionTokens: 20}
		switch {
		case *in.Seed == 3 && n == 1:
			return activities.LogosOutput{}, temporal.NewNonRetryableApplicationError("inference server answered 503", activities.ErrFailedAfterUse, nil, u)
		case *in.Seed == 4:
			return activities.LogosOutput{}, temporal.NewNonRetryableApplicationError("logos's output is unusable after one repair attempt", activities.ErrMalformedOutput, nil, u)
		}
		return activities.LogosOutput{Solution: synapse.Solution{Answer: "7", Confidence: 0.5}, Usage: u}, nil
	})
	st, err := run(t, env, ConsensusInput{Prompt: "q", Strategy: StrategyVote, Account: "acme"})
	var ae *temporal.ApplicationError
	if !errors.As(err, &ae) || ae.Type() != ErrRoundFailed || st != nil {
		t.Fatalf("error %v, want %s", err, ErrRoundFailed)
	}
	want := []string{"r1-logos-s1", "r1-logos-s2", "r1-logos-s3", "r1-logos-s3-retry1", "r1-logos-s4", "r1-logos-s5"}
	if ids := sorted(f.eventIDs()); strings.Join(ids, " ") != strings.Join(want, " ") {
		t.Fatalf("billed %v, want %v", ids, want)
	}
	if f.released != 1 || calls[5] != 1 || !strings.Contains(ae.Message(), "logos's output is unusable") {
		t.Fatalf("released %d, sample 5 ran %d times, error %v", f.released, calls[5], err)
	}
}

// FuzzMajorityKey: model output of any bytes keys without a panic; case
// and white space around or inside an answer do not change its key; and the
// majority is the first sample of the most common key.
func FuzzMajorityKey(f *testing.F) {
	for _, s := range []string{"42", " Paris. ", "4.2E1", "1,000", "-0", "0x2a", "1e400", "nan", "a  b", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		k := MajorityKey(s)
		for _, r := range s {
			if r > 127 {
				return // case mapping of the rest of Unicode is not one to one
			}
		}
		if k2 := MajorityKey("  " + strings.ToUpper(strings.ReplaceAll(s, " ", "\t ")) + "\n"); k2 != k {
			t.Fatalf("%q keys %q, its upper case with more white space %q", s, k, k2)
		}
		vs := votes("other", s, s, "other")
		w, n := Majority(vs)
		if MajorityKey("other") == k {
			if w != 0 || n != 4 {
				t.Fatalf("one key: winner %d with %d", w, n)
			}
		} else if w != 0 || n != 2 {
			t.Fatalf("a 2-2 tie: winner %d with %d, want sample 1", w, n)
		}
	})
}

// TestHubCannotBillAVotePastItsBounds: a hub (which holds only its device
// certificate and reports its own counts) answers every sample of a vote
// side by side claiming 2^40 prompt tokens; each sample is billed at most
// its own step's bound, and all of them together within the hold.
func TestHubCannotBillAVotePastItsBounds(t *testing.T) {
	env := newEnv(t)
	f := newLedger(env)
	env.OnActivity(pl.PickHub, mock.Anything, mock.Anything).Return(activities.HubChoice{Queue: "hub.gpu1", Note: "gpu1: the only healthy hub of 1",
		Heartbeats: true, Sampling: true}, nil)
	var mu sync.Mutex
	bounds := map[int64]activities.Budget{}
	env.OnActivity(inf.Logos, mock.Anything, mock.Anything).Return(func(_ context.Context, in activities.LogosInput) (activities.LogosOutput, error) {
		mu.Lock()
		bounds[*in.Seed] = in.Budget
		mu.Unlock()
		return activities.LogosOutput{Solution: synapse.Solution{Answer: "a", Confidence: 0.9},
			Usage: activities.AgentUsage{Model: "m", PromptTokens: 1 << 40, CompletionTokens: 1 << 40, RanOn: "cloud"}}, nil
	})
	st, err := run(t, env, ConsensusInput{Prompt: "q", Strategy: StrategyVote, Samples: 4, Account: "acme", HubQueue: "hub.gpu1", CloudQueue: "cloud"})
	if err != nil {
		t.Fatal(err)
	}
	var charged money.Micros
	samples := 0
	for _, e := range f.events {
		c, _ := f.hold.Price(store.TokenBound{PromptTokens: e.PromptTokens, CompletionTokens: e.CompletionTokens})
		charged += c
		_, id, _ := strings.Cut(e.EventID, "/")
		var i int64
		if _, err := fmt.Sscanf(id, "r1-logos-s%d", &i); err != nil {
			continue
		}
		samples++
		pt, ct := bounds[i].EventBound()
		if e.PromptTokens != pt || e.CompletionTokens != ct {
			t.Fatalf("sample %d billed %d+%d tokens, its bound is %d+%d", i, e.PromptTokens, e.CompletionTokens, pt, ct)
		}
	}
	if samples != 4 || charged > f.hold.Amount || st.StepLog[0].Hub != "gpu1" {
		t.Fatalf("%d samples billed %s against a %s hold; step log %+v", samples, charged, f.hold.Amount, st.StepLog)
	}
}
