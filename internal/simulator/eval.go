package simulator

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"strings"

	"github.com/superinstance/mesh/internal/eval"
	"github.com/superinstance/mesh/internal/synapse"
)

// The simulator does not pretend to be accurate on si eval's data sets.
//
// Arithmetic (eval.ArithmeticPrompt, a+b*c+d-e*f): Logos's answer in round r
// of a request with seed s and temperature t (both 0 when the request
// leaves them out; a vote's samples carry seed = sample index) is right iff
//
//	H("si-sim-arithmetic", q, s, r) mod 100 < p
//	p = clamp(60 + 10·(r−1) + 5·[feedback given] − ⌊10·t⌋, 0, 95)
//
// where H is the first 8 bytes, big-endian, of SHA-256 of the fields
// (decimal numbers) joined by NUL bytes, and q the question. So p is 60 in
// round 1, 75 in round 2 (with Ethos's feedback), 85 in round 3, and 53 for
// a sample at 0.7. A wrong answer is the right one plus an offset d − 5 for
// d = H("si-sim-arithmetic-offset", q, s, r) mod 10, moved up by one when
// it is 0 or more: −5..−1 or 1..5, never 0. Ethos's scores follow the
// simulator's usual rule and do not look at the answer; the Arbiter keeps
// the last round's answer. The figures si eval reports on the simulator
// therefore measure the plumbing and this rule, not a model.
//
// Word problems (eval.WordProblemLead): the simulator cannot read them.
// Logos answers −1 − (H("si-sim-word", q) mod 1000), a negative number;
// gsm-mini's answers are all positive, so its accuracy there is 0.

// arithmeticP is the documented probability, in percent, that Logos is right.
func arithmeticP(round int, feedback bool, temperature float64) int {
	p := 60 + 10*(round-1)
	if feedback {
		p += 5
	}
	if temperature > 0 && !math.IsInf(temperature, 1) {
		p -= int(math.Min(10*temperature, 1000))
	}
	return max(0, min(p, 95))
}

// ruleHash is H of the rule above.
func ruleHash(parts ...string) uint64 {
	sum := sha256.Sum256([]byte(strings.Join(parts, "\x00")))
	return binary.BigEndian.Uint64(sum[:8])
}

// sampling is what a request says about how to sample.
type sampling struct {
	seed        int64
	temperature float64
}

// evalSolution is Logos's solution to a question of si eval's data sets;
// ok is false for any other question.
func evalSolution(q string, round int, feedback bool, sp sampling) (synapse.Solution, bool) {
	seed, r := fmt.Sprint(sp.seed), fmt.Sprint(round)
	if _, value, ok := eval.ParseArithmetic(q); ok {
		got := value
		if int(ruleHash("si-sim-arithmetic", q, seed, r)%100) >= arithmeticP(round, feedback, sp.temperature) {
			off := int64(ruleHash("si-sim-arithmetic-offset", q, seed, r)%10) - 5
			if off >= 0 {
				off++
			}
			got += off
		}
		return synapse.Solution{
			Answer:     fmt.Sprintf("Simulated arithmetic (round %d): working through the expression in order of operations. The answer is %d.", round, got),
			Sources:    []string{"simulator://arithmetic-rule"},
			Confidence: 0.8 + 0.15*frac(hash(q+seed), 2),
		}, true
	}
	if strings.HasPrefix(q, eval.WordProblemLead) {
		return synapse.Solution{
			Answer:     fmt.Sprintf("The simulator cannot read word problems; this is a placeholder number. The answer is %d.", -1-int64(ruleHash("si-sim-word", q)%1000)),
			Sources:    []string{"simulator://no-reading"},
			Confidence: 0.5,
		}, true
	}
	return synapse.Solution{}, false
}

// evalVerdict is the Arbiter's decision on a question of si eval's data
// sets: the last round's answer stands.
func evalVerdict(q, user string) (synapse.Verdict, bool) {
	if _, _, ok := eval.ParseArithmetic(q); !ok && !strings.HasPrefix(q, eval.WordProblemLead) {
		return synapse.Verdict{}, false
	}
	last := "no round gave an answer"
	if _, rest, ok := strings.Cut(user, "<rounds>\n"); ok {
		if body, _, ok := strings.Cut(rest, "\n</rounds>"); ok {
			var rounds []synapse.RoundRecord
			if json.Unmarshal([]byte(body), &rounds) == nil && len(rounds) > 0 {
				last = rounds[len(rounds)-1].Solution.Answer
			}
		}
	}
	return synapse.Verdict{
		Answer:     "The simulated Arbiter cannot check the work and keeps the last round's answer: " + last,
		Confidence: 0.6,
		Note:       "The simulator's Arbiter adopts the solver's last answer.",
	}, true
}
