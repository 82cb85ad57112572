package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/superinstance/mesh/internal/eval"
	"github.com/superinstance/mesh/internal/httpjson"
	"github.com/superinstance/mesh/internal/money"
	"github.com/superinstance/mesh/internal/store"
)

// EvalRequest is POST /v1/evals's body: what si eval ran and each question's
// result per strategy. The mesh works out the summaries itself, and each
// run's cost from its own ledger (the account's usage events of the run's
// workflow), not from the body.
type EvalRequest struct {
	Dataset   string        `json:"dataset"`
	Seed      int64         `json:"seed"`
	Questions int           `json:"questions"`
	Budget    int           `json:"budget"`
	Results   []eval.Result `json:"results"`
}

// EvalInfo is one of the account's evaluations as GET /v1/evals lists it.
type EvalInfo struct {
	ID        string         `json:"id"`
	CreatedAt time.Time      `json:"created_at"`
	Dataset   string         `json:"dataset"`
	Seed      int64          `json:"seed"`
	Questions int            `json:"questions"`
	Budget    int            `json:"budget"`
	Summaries []eval.Summary `json:"summaries"`
	// Models answered the runs, according to the ledger; Simulated is
	// true when one of them is the inference simulator's.
	Models    []string `json:"models"`
	Simulated bool     `json:"simulated"`
}

// simulated reports whether a model of models is the simulator's.
func simulated(models []string) bool {
	return slices.ContainsFunc(models, func(m string) bool { return strings.HasPrefix(m, "si-simulator-") })
}

// Bounds of an evaluation's record.
const (
	evalsListMax   = 20
	evalIDMax      = 64
	evalRunIDMax   = 128
	evalCostWindow = 7 * 24 * time.Hour
)

// validate checks r and returns the strategies it holds, in si eval's order.
func (r *EvalRequest) validate() ([]string, error) {
	if !slices.Contains(eval.Datasets, r.Dataset) {
		return nil, fieldErr("dataset", fmt.Sprintf("dataset must be one of %v, not %q", eval.Datasets, r.Dataset))
	}
	if r.Questions < 1 || r.Questions > eval.MaxQuestions {
		return nil, fieldErr("questions", fmt.Sprintf("questions must be 1 to %d", eval.MaxQuestions))
	}
	if r.Budget < eval.MinBudget || r.Budget > eval.MaxBudget {
		return nil, fieldErr("budget", fmt.Sprintf("budget must be %d to %d completion tokens", eval.MinBudget, eval.MaxBudget))
	}
	per := map[string]map[string]bool{}
	runs := map[string]bool{}
	for i, res := range r.Results {
		p := fmt.Sprintf("results[%d]", i)
		if !slices.Contains(eval.Strategies, res.Strategy) {
			return nil, fieldErr(p+".strategy", fmt.Sprintf("%s.strategy must be one of %v", p, eval.Strategies))
		}
		if res.Question == "" || len(res.Question) > evalIDMax || len(res.WorkflowID) > evalRunIDMax || len(res.Error) > 1000 || len(res.Answer) > 1000 {
			return nil, fieldErr(p, p+" has a question id of 1 to 64 bytes, a workflow id, error and answer of at most 128, 1000 and 1000")
		}
		if res.Tokens < 0 || res.LatencyMS < 0 || res.Rounds < 0 || res.Rounds > 1000 {
			return nil, fieldErr(p, p+"'s tokens, latency and rounds must not be negative")
		}
		if res.Correct != (res.Got != nil && *res.Got == res.Expected) {
			return nil, fieldErr(p+".correct", p+".correct must say whether got equals expected")
		}
		// Each run is one question's under one strategy: a run named twice
		// would count its cost twice, and a result with no run would cost
		// nothing though it answered.
		if res.WorkflowID == "" && (res.Error == "" || res.Got != nil) {
			return nil, fieldErr(p+".workflow_id", p+" has no workflow_id: name the run that answered it, or say its error and give no answer")
		}
		if res.WorkflowID != "" && runs[res.WorkflowID] {
			return nil, fieldErr(p+".workflow_id", fmt.Sprintf("%s names run %s again: each result has its own run", p, res.WorkflowID))
		}
		runs[res.WorkflowID] = true
		if per[res.Strategy] == nil {
			per[res.Strategy] = map[string]bool{}
		}
		if per[res.Strategy][res.Question] {
			return nil, fieldErr(p, fmt.Sprintf("%s repeats question %s for %s", p, res.Question, res.Strategy))
		}
		per[res.Strategy][res.Question] = true
	}
	var strategies []string
	for _, s := range eval.Strategies {
		if qs, ok := per[s]; ok {
			if len(qs) != r.Questions {
				return nil, fieldErr("results", fmt.Sprintf("results hold %d questions for %s, not %d", len(qs), s, r.Questions))
			}
			strategies = append(strategies, s)
		}
	}
	if len(strategies) == 0 {
		return nil, fieldErr("results", "results are empty: send each question's result per strategy")
	}
	return strategies, nil
}

type evalFieldError struct{ param, msg string }

func (e *evalFieldError) Error() string { return e.msg }

func fieldErr(param, msg string) error { return &evalFieldError{param, msg} }

// recordEval is POST /v1/evals.
func (s *Server) recordEval(w http.ResponseWriter, r *http.Request, c Caller) {
	if !accountOnly(w, c) {
		return
	}
	var req EvalRequest
	if !decode(w, r, &req) {
		return
	}
	strategies, err := req.validate()
	if err != nil {
		fe := err.(*evalFieldError)
		httpjson.FieldError(w, http.StatusBadRequest, "invalid_request", fe.msg, fe.param)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 30*time.Second)
	defer cancel()
	since := time.Now().Add(-evalCostWindow)
	var runs []string
	for _, res := range req.Results {
		if res.WorkflowID != "" {
			runs = append(runs, res.WorkflowID)
		}
	}
	// Only the caller's own usage events count: a run of another account
	// costs this one nothing, used no tokens and names no model. Cost and
	// tokens are the ledger's, never the body's.
	usage, err := s.Store.RunsUsage(ctx, c.Account, runs, since)
	if err != nil {
		httpjson.Error(w, http.StatusServiceUnavailable, "unavailable", "the ledger is unreachable")
		return
	}
	models := []string{}
	for i := range req.Results {
		res := &req.Results[i]
		u := usage[res.WorkflowID]
		res.Cost, res.Tokens = u.Cost, u.Tokens
		for _, m := range u.Models {
			if !slices.Contains(models, m) {
				models = append(models, m)
			}
		}
	}
	slices.Sort(models)
	sums := eval.Summarize(strategies, req.Results)
	sb, _ := json.Marshal(sums)
	rb, _ := json.Marshal(req.Results)
	rec, err := s.Store.RecordEval(ctx, store.EvalRun{Account: c.Account, Dataset: req.Dataset, Seed: req.Seed, Questions: req.Questions,
		Budget: req.Budget, Summaries: sb, Results: rb, Models: models})
	if errors.Is(err, store.ErrEvalRateLimited) {
		w.Header().Set("Retry-After", "60")
		httpjson.Error(w, http.StatusTooManyRequests, "rate_limited",
			fmt.Sprintf("this account recorded %d evaluations in the last minute; try again in a minute", store.EvalsPerMinute))
		return
	}
	if err != nil {
		httpjson.Error(w, http.StatusServiceUnavailable, "unavailable", "the evaluation could not be stored")
		return
	}
	httpjson.Write(w, http.StatusCreated, EvalInfo{ID: rec.ID, CreatedAt: rec.CreatedAt, Dataset: rec.Dataset, Seed: rec.Seed,
		Questions: rec.Questions, Budget: rec.Budget, Summaries: sums, Models: models, Simulated: simulated(models)})
}

// listEvals is GET /v1/evals: the account's own evaluations, newest first.
func (s *Server) listEvals(w http.ResponseWriter, r *http.Request, c Caller) {
	if !accountOnly(w, c) {
		return
	}
	limit := evalsListMax
	if v := r.URL.Query().Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 100 {
			httpjson.Error(w, http.StatusBadRequest, "invalid_request", "limit must be 1 to 100")
			return
		}
		limit = n
	}
	evals, err := s.evals(r.Context(), c.Account, limit)
	if err != nil {
		httpjson.Error(w, http.StatusServiceUnavailable, "unavailable", err.Error())
		return
	}
	httpjson.Write(w, http.StatusOK, map[string]any{"account": c.Account, "evals": evals})
}

// evals reads account's latest evaluations.
func (s *Server) evals(ctx context.Context, account string, limit int) ([]EvalInfo, error) {
	rows, err := s.Store.Evals(ctx, account, limit)
	if err != nil {
		return nil, dashUnavailable("the evaluation store is unreachable")
	}
	out := make([]EvalInfo, 0, len(rows))
	for _, e := range rows {
		info := EvalInfo{ID: e.ID, CreatedAt: e.CreatedAt, Dataset: e.Dataset, Seed: e.Seed, Questions: e.Questions, Budget: e.Budget,
			Models: e.Models, Simulated: simulated(e.Models)}
		if err := json.Unmarshal(e.Summaries, &info.Summaries); err != nil {
			return nil, dashUnavailable("an evaluation in the store cannot be read")
		}
		out = append(out, info)
	}
	return out, nil
}

// evalCharts draws the latest evaluation: accuracy and cost per question,
// a bar per strategy.
func evalCharts(e EvalInfo) (accuracy, cost barChart) {
	const w, h, top, bottom = 600, 150, 14, 22
	accuracy = barChart{W: w, H: h, Base: h - bottom, Label: "accuracy per strategy", Max: "100%"}
	cost = barChart{W: w, H: h, Base: h - bottom, Label: "cost per question per strategy"}
	var peak money.Micros
	for _, s := range e.Summaries {
		peak = max(peak, s.CostPerQuestion)
	}
	cost.Max = peak.Dollars()
	slot := float64(w) / float64(max(len(e.Summaries), 1))
	for i, s := range e.Summaries {
		x := float64(i) * slot
		colour := palette[min(i, len(palette)-1)]
		ah := s.Accuracy * float64(h-top-bottom)
		accuracy.Bars = append(accuracy.Bars, bar{X: x + slot*0.2, Y: float64(h-bottom) - ah, W: slot * 0.6, H: ah, Color: colour,
			Title: fmt.Sprintf("%s: %d of %d right (%.1f%%)", s.Strategy, s.Correct, s.Questions, 100*s.Accuracy)})
		accuracy.Axis = append(accuracy.Axis, axisLabel{X: x + slot/2, Text: fmt.Sprintf("%s %.0f%%", s.Strategy, 100*s.Accuracy)})
		ch := 0.0
		if peak > 0 {
			ch = float64(s.CostPerQuestion) / float64(peak) * float64(h-top-bottom)
		}
		cost.Bars = append(cost.Bars, bar{X: x + slot*0.2, Y: float64(h-bottom) - ch, W: slot * 0.6, H: ch, Color: colour,
			Title: fmt.Sprintf("%s: %s a question, %d tokens a question", s.Strategy, s.CostPerQuestion.Dollars(), s.TokensPerQuestion)})
		cost.Axis = append(cost.Axis, axisLabel{X: x + slot/2, Text: s.Strategy + " " + s.CostPerQuestion.Dollars()})
	}
	return accuracy, cost
}
