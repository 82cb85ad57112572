// Package eval holds what `si eval` measures with: its data sets (generated
// or committed, never downloaded), how an answer is read from a run's final
// text, how each strategy is given the same token budget, and how results
// add up to a row per strategy. It does no I/O beyond its embedded files;
// the command that runs questions through the mesh is in internal/cli.
package eval

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	_ "embed"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// Data sets.
const (
	Arithmetic = "arithmetic"
	GSMMini    = "gsm-mini"
)

// Datasets lists the data set names `si eval --dataset` takes.
var Datasets = []string{Arithmetic, GSMMini}

// Question is one item of a data set: the prompt a run is started with and
// the integer its final answer must be.
type Question struct {
	ID     string `json:"id"`
	Prompt string `json:"prompt"`
	Answer int64  `json:"answer"`
}

// Bounds of a data set request.
const (
	MaxQuestions = 1000
	// ArithmeticMax is the largest number in an arithmetic expression (the
	// smallest is 0), as in Du et al. (2023).
	ArithmeticMax = 30
)

// The arithmetic prompt is Du et al.'s: "What is the result of
// a+b*c+d-e*f? Make sure to state your answer at the end of the response."
const (
	arithmeticLead  = "What is the result of "
	arithmeticTrail = "? Make sure to state your answer at the end of the response."
)

var arithmeticRE = regexp.MustCompile(`^What is the result of (\d{1,2})\+(\d{1,2})\*(\d{1,2})\+(\d{1,2})-(\d{1,2})\*(\d{1,2})\? Make sure to state your answer at the end of the response\.$`)

// ArithmeticPrompt is the prompt for a+b*c+d-e*f.
func ArithmeticPrompt(n [6]int) string {
	return fmt.Sprintf("%s%d+%d*%d+%d-%d*%d%s", arithmeticLead, n[0], n[1], n[2], n[3], n[4], n[5], arithmeticTrail)
}

// ParseArithmetic reads the six numbers of an arithmetic prompt and the
// expression's value; ok is false for any other text.
func ParseArithmetic(prompt string) (n [6]int, value int64, ok bool) {
	m := arithmeticRE.FindStringSubmatch(prompt)
	if m == nil {
		return n, 0, false
	}
	for i := range n {
		n[i], _ = strconv.Atoi(m[i+1])
		if n[i] > ArithmeticMax {
			return n, 0, false
		}
	}
	return n, ArithmeticValue(n), true
}

// ArithmeticValue is a+b*c+d-e*f.
func ArithmeticValue(n [6]int) int64 {
	return int64(n[0]) + int64(n[1])*int64(n[2]) + int64(n[3]) - int64(n[4])*int64(n[5])
}

// ArithmeticSet is the arithmetic task's first n questions for seed. The
// j-th number of question i (both from 0) is
//
//	SHA-256("si-eval-arithmetic\x00<seed>\x00<i>\x00<j>")[0:8] as a big-endian uint64, mod 31
//
// so the same seed gives the same questions on every machine and version,
// and question i does not depend on n.
func ArithmeticSet(seed int64, n int) []Question {
	out := make([]Question, 0, n)
	for i := range n {
		var nums [6]int
		for j := range nums {
			sum := sha256.Sum256(fmt.Appendf(nil, "si-eval-arithmetic\x00%d\x00%d\x00%d", seed, i, j))
			nums[j] = int(binary.BigEndian.Uint64(sum[:8]) % (ArithmeticMax + 1))
		}
		out = append(out, Question{ID: fmt.Sprintf("arithmetic-%d-%d", seed, i+1), Prompt: ArithmeticPrompt(nums), Answer: ArithmeticValue(nums)})
	}
	return out
}

// WordProblemLead starts the prompt of a word problem (after Du et al.'s
// GSM8K prompt); the simulator knows the task by it.
const WordProblemLead = "Can you solve the following math problem? "

const wordProblemTrail = " Explain your reasoning. Your final answer should be a single integer, at the end of your response."

// WordProblemPrompt is the prompt for one word problem.
func WordProblemPrompt(problem string) string { return WordProblemLead + problem + wordProblemTrail }

//go:embed datasets/gsm-mini.jsonl
var gsmMini []byte

// GSMMiniSet is the committed word problems, in file order: grade-school
// problems with positive integer answers, written for this project.
func GSMMiniSet() []Question {
	qs, err := ParseJSONL(gsmMini)
	if err != nil {
		panic("eval: the committed gsm-mini set does not parse: " + err.Error())
	}
	return qs
}

// Load returns the first n questions of the named data set (seed is the
// arithmetic generator's; gsm-mini has no more than it holds).
func Load(name string, n int, seed int64) ([]Question, error) {
	if n < 1 || n > MaxQuestions {
		return nil, fmt.Errorf("--n %d is outside 1..%d", n, MaxQuestions)
	}
	switch name {
	case Arithmetic:
		return ArithmeticSet(seed, n), nil
	case GSMMini:
		qs := GSMMiniSet()
		if n > len(qs) {
			return nil, fmt.Errorf("gsm-mini holds %d questions, not %d: pass --n %d or less", len(qs), n, len(qs))
		}
		return qs[:n], nil
	}
	return nil, fmt.Errorf("unknown data set %q: use %s", name, strings.Join(Datasets, " or "))
}

// Bounds of a JSONL data set.
const (
	maxLineBytes     = 8 << 10
	maxProblemBytes  = 4 << 10
	maxJSONLBytes    = 4 << 20
	maxAnswerMagnitu = 1 << 53
)

// ParseJSONL reads word problems, one JSON object a line:
//
//	{"id": "gsm-mini-01", "question": "...", "answer": 12}
//
// Blank lines are skipped; any other field, a missing or repeated id, an
// empty question, an answer that is not an integer (or beyond ±2^53) or a
// line over 8 KiB is an error naming the line. Prompts are WordProblemPrompt
// of the question.
func ParseJSONL(data []byte) ([]Question, error) {
	if len(data) > maxJSONLBytes {
		return nil, fmt.Errorf("the data set is %d bytes; the limit is %d", len(data), maxJSONLBytes)
	}
	var out []Question
	seen := map[string]bool{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 4096), maxLineBytes)
	for line := 1; sc.Scan(); line++ {
		b := bytes.TrimSpace(sc.Bytes())
		if len(b) == 0 {
			continue
		}
		var rec struct {
			ID       string          `json:"id"`
			Question string          `json:"question"`
			Answer   json.RawMessage `json:"answer"`
		}
		dec := json.NewDecoder(bytes.NewReader(b))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&rec); err != nil {
			return nil, fmt.Errorf("line %d: %v", line, err)
		}
		if dec.More() {
			return nil, fmt.Errorf("line %d: more than one JSON value", line)
		}
		if rec.ID == "" || len(rec.ID) > 64 {
			return nil, fmt.Errorf("line %d: id must be 1 to 64 characters", line)
		}
		if seen[rec.ID] {
			return nil, fmt.Errorf("line %d: id %q appears twice", line, rec.ID)
		}
		seen[rec.ID] = true
		if strings.TrimSpace(rec.Question) == "" || len(rec.Question) > maxProblemBytes {
			return nil, fmt.Errorf("line %d: question must be 1 to %d bytes", line, maxProblemBytes)
		}
		a, err := strconv.ParseInt(string(rec.Answer), 10, 64)
		if err != nil || a > maxAnswerMagnitu || a < -maxAnswerMagnitu {
			return nil, fmt.Errorf("line %d: answer must be an integer, not %.20s", line, rec.Answer)
		}
		out = append(out, Question{ID: rec.ID, Prompt: WordProblemPrompt(rec.Question), Answer: a})
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return nil, fmt.Errorf("a line is longer than %d bytes", maxLineBytes)
		}
		return nil, err
	}
	return out, nil
}
