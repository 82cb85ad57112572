package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/superinstance/mesh/internal/client"
	"github.com/superinstance/mesh/internal/eval"
	"github.com/superinstance/mesh/internal/money"
	"github.com/superinstance/mesh/workflows"
)

// Bounds of si eval's flags.
const (
	evalDefaultConcurrency = 4
	evalMaxConcurrency     = 64
	evalAnswerMax          = 300
)

func evalCommand() *Command {
	var (
		api         apiFlags
		dataset     string
		n           int
		seed        int64
		strategies  string
		budget      int
		concurrency int
		project     string
		placement   string
		runTimeout  time.Duration
		noRecord    bool
		asJSON      bool
	)
	return &Command{
		Name:  "eval",
		Short: "measure debate, vote and single on a data set at a matched token budget",
		Long: `si eval runs each question of a data set with each strategy through the
mesh's API (billed to the account your token names, like si ask) and reports,
per strategy, the accuracy, the tokens and cost per question and the median
latency, as a table or --json. The report is recorded for the account and
charted on its dashboard (--no-record keeps it local).

  si eval                                        20 arithmetic questions, seed 1
  si eval --dataset gsm-mini --n 30 --strategies debate,single
  si eval --budget 6144 --concurrency 8 --json

Data sets (nothing is downloaded):
  arithmetic  Du et al.'s task a+b*c+d-e*f, numbers 0-30, generated from --seed
  gsm-mini    30 grade-school word problems with integer answers, committed
              with the mesh (--seed does not apply)

A question is right when the last number of the run's final answer is a whole
number equal to its answer ("The answer is 1,015." reads 1015; "3.5" is no
integer and scores wrong).

Matched budget: --budget is the completion tokens a question may use at worst,
the same for each strategy. debate runs 2 rounds, at most 6 agent calls, each
with max_tokens = budget/6; vote draws 5 samples at temperature 0.7 with that
max_tokens and Ethos checks the winner (6 calls); single makes one call with
max_tokens = budget. Prompt tokens are measured, not matched.

Against si dev the inference backend is the simulator: its answers follow a
documented rule (see the README), so the figures prove the plumbing, not a
model. Against a mesh with a real backend they are the model's.

A run the mesh refuses (no headroom, a strategy it does not know) stops the
evaluation with the API's reason; a run that fails counts as wrong and is
listed with its error.`,
		Flags: func(fs *flag.FlagSet) {
			api.register(fs)
			fs.StringVar(&dataset, "dataset", eval.Arithmetic, "data set: arithmetic or gsm-mini")
			fs.IntVar(&n, "n", 20, "how many questions (1-1000; gsm-mini holds 30)")
			fs.Int64Var(&seed, "seed", 1, "seed the arithmetic questions are generated from")
			fs.StringVar(&strategies, "strategies", strings.Join(eval.Strategies, ","), "strategies to compare, comma-separated: debate, vote, single")
			fs.IntVar(&budget, "budget", eval.DefaultBudget, fmt.Sprintf("completion tokens a question may use at worst, the same for each strategy (%d-%d)", eval.MinBudget, eval.MaxBudget))
			fs.IntVar(&concurrency, "concurrency", evalDefaultConcurrency, fmt.Sprintf("runs in flight at once (1-%d)", evalMaxConcurrency))
			fs.StringVar(&project, "project", "", "project the runs belong to (default: the account's default project)")
			fs.StringVar(&placement, "placement", "auto", "where inference runs: auto, hub or cloud")
			fs.DurationVar(&runTimeout, "run-timeout", 10*time.Minute, "longest one run may take before it counts as failed")
			fs.BoolVar(&noRecord, "no-record", false, "do not record the report for the account's dashboard")
			fs.BoolVar(&asJSON, "json", false, "print the report as JSON only (no progress lines)")
		},
		Run: func(ctx context.Context, env *Env, args []string) error {
			if len(args) > 0 {
				return fmt.Errorf("si eval takes no arguments (got %q): choose questions with --dataset and --n", args[0])
			}
			qs, err := eval.Load(dataset, n, seed)
			if err != nil {
				return err
			}
			strats, err := eval.ParseStrategies(strategies)
			if err != nil {
				return fmt.Errorf("--strategies: %w", err)
			}
			var settings []eval.Setting
			for _, s := range strats {
				set, err := eval.Plan(s, budget)
				if err != nil {
					return err
				}
				settings = append(settings, set)
			}
			if concurrency < 1 || concurrency > evalMaxConcurrency {
				return fmt.Errorf("--concurrency %d is outside 1..%d", concurrency, evalMaxConcurrency)
			}
			p, err := workflows.ParsePlacement(placement)
			if err != nil {
				return err
			}
			if runTimeout <= 0 {
				return errors.New("--run-timeout must be positive, e.g. 10m")
			}
			c, err := api.client()
			if err != nil {
				return err
			}
			if dataset == eval.GSMMini {
				seed = 0
			}
			e := &evaluator{c: c, project: project, placement: string(p), timeout: runTimeout, total: len(qs) * len(settings)}
			if !asJSON {
				e.progress = env.Stderr
				fmt.Fprintf(env.Stdout, "si eval  %s, %d questions%s, budget %d completion tokens a question, %d runs through %s\n",
					dataset, len(qs), seedNote(dataset, seed), budget, e.total, c.BaseURL)
			}
			results, err := e.run(ctx, qs, settings, concurrency)
			if err != nil {
				return err
			}
			rep := evalJSON{Dataset: dataset, Seed: seed, Questions: len(qs), Budget: budget, API: c.BaseURL, Settings: settings,
				Summaries: eval.Summarize(strats, results), Results: results, Models: e.modelList()}
			rep.Simulated = slices.ContainsFunc(rep.Models, func(m string) bool { return strings.HasPrefix(m, simulatorModelPrefix) })
			var recordErr error
			if !noRecord {
				sent := make([]eval.Result, len(results))
				for i, r := range results {
					r.Answer = "" // the figures are recorded, not the model's words
					sent[i] = r
				}
				rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
				rec, err := c.RecordEval(rctx, client.EvalReport{Dataset: dataset, Seed: seed, Questions: len(qs), Budget: budget, Results: sent})
				cancel()
				if err != nil {
					recordErr = fmt.Errorf("the report was not recorded for the dashboard: %w (the figures above stand; run again or pass --no-record)", err)
				} else {
					rep.Recorded = rec.ID
				}
			}
			if asJSON {
				if err := printJSON(env.Stdout, rep); err != nil {
					return err
				}
				return recordErr
			}
			printEvalTable(env.Stdout, rep)
			if rep.Recorded != "" {
				fmt.Fprintf(env.Stdout, "recorded  %s, on the dashboard at %s/\n", rep.Recorded, c.BaseURL)
			}
			return recordErr
		},
	}
}

func seedNote(dataset string, seed int64) string {
	if dataset != eval.Arithmetic {
		return ""
	}
	return fmt.Sprintf(" (seed %d)", seed)
}

// evalJSON is what si eval --json prints.
type evalJSON struct {
	Dataset   string         `json:"dataset"`
	Seed      int64          `json:"seed"`
	Questions int            `json:"questions"`
	Budget    int            `json:"budget"`
	API       string         `json:"api_url"`
	Settings  []eval.Setting `json:"settings"`
	Summaries []eval.Summary `json:"summaries"`
	Results   []eval.Result  `json:"results"`
	// Models answered the runs; Simulated is true when one of them is the
	// inference simulator's (its answers follow a rule, not a model).
	Models    []string `json:"models"`
	Simulated bool     `json:"simulated"`
	// Recorded is the report's id on the mesh; empty with --no-record.
	Recorded string `json:"recorded,omitempty"`
}

func printEvalTable(w io.Writer, rep evalJSON) {
	if rep.Simulated {
		fmt.Fprintln(w, "backend   the inference SIMULATOR: its answers follow a documented rule (README), so these figures measure the mesh, not a model")
	} else if len(rep.Models) > 0 {
		fmt.Fprintf(w, "models    %s\n", strings.Join(rep.Models, ", "))
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "strategy\tsetting\taccuracy\ttokens/q\tcost/q\tp50 latency\tfailed")
	for i, s := range rep.Summaries {
		set := rep.Settings[i]
		desc := fmt.Sprintf("%d calls x %d tokens", set.Calls, set.MaxTokens)
		switch set.Strategy {
		case eval.Debate:
			desc = fmt.Sprintf("%d rounds, %s", set.MaxRounds, desc)
		case eval.Vote:
			desc = fmt.Sprintf("%d samples at %.1f, %s", set.Samples, set.Temperature, desc)
		}
		fmt.Fprintf(tw, "%s\t%s\t%d/%d (%.1f%%)\t%d\t%s\t%s\t%d\n", s.Strategy, desc, s.Correct, s.Questions, 100*s.Accuracy,
			s.TokensPerQuestion, s.CostPerQuestion.Dollars(), (time.Duration(s.P50LatencyMS) * time.Millisecond).String(), s.Failed)
	}
	_ = tw.Flush()
	for _, r := range rep.Results {
		if r.Error != "" {
			fmt.Fprintf(w, "failed    %s %s (%s): %s\n", r.Strategy, r.Question, r.WorkflowID, oneLine(r.Error, 160))
		}
	}
}

// evaluator runs questions through the API.
type evaluator struct {
	c         *client.Client
	project   string
	placement string
	timeout   time.Duration
	progress  io.Writer // nil: none

	mu     sync.Mutex
	done   int
	total  int
	models map[string]bool
}

// simulatorModelPrefix starts the inference simulator's model names.
const simulatorModelPrefix = "si-simulator-"

func (e *evaluator) sawModels(st workflows.ConsensusState) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.models == nil {
		e.models = map[string]bool{}
	}
	for _, u := range st.Usage {
		if u.Model != "" {
			e.models[u.Model] = true
		}
	}
}

// modelList is every model that answered a run, sorted.
func (e *evaluator) modelList() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := []string{}
	for m := range e.models {
		out = append(out, m)
	}
	slices.Sort(out)
	return out
}

// errRefused is a run the mesh refused to start: every other run would be
// refused alike, so the evaluation stops.
type errRefused struct {
	strategy string
	err      error
}

func (e *errRefused) Error() string {
	var ae *client.Error
	if errors.As(e.err, &ae) && ae.Status == http.StatusBadRequest &&
		(strings.Contains(ae.Message, "strategy") || strings.Contains(ae.Message, "samples") || strings.Contains(ae.Message, "temperature")) {
		return fmt.Sprintf("the mesh refused a %s run (%v): it may predate strategies; run si eval --strategies debate, or update the mesh", e.strategy, e.err)
	}
	return fmt.Sprintf("the mesh refused a %s run: %v", e.strategy, e.err)
}

func (e *errRefused) Unwrap() error { return e.err }

// run runs every question with every setting, concurrency at a time, and
// returns the results in question order, strategy by strategy.
func (e *evaluator) run(ctx context.Context, qs []eval.Question, settings []eval.Setting, concurrency int) ([]eval.Result, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	type job struct{ q, s int }
	jobs := make(chan job)
	results := make([]eval.Result, len(qs)*len(settings))
	var (
		wg       sync.WaitGroup
		firstErr error
		errOnce  sync.Once
	)
	for range concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range jobs {
				r, err := e.one(ctx, qs[j.q], settings[j.s])
				if err != nil {
					errOnce.Do(func() { firstErr = err; cancel() })
					continue
				}
				results[j.s*len(qs)+j.q] = r
				e.report(r)
			}
		}()
	}
feed:
	for qi := range qs {
		for si := range settings {
			select {
			case jobs <- job{qi, si}:
			case <-ctx.Done():
				break feed
			}
		}
	}
	close(jobs)
	wg.Wait()
	if firstErr != nil {
		return nil, firstErr
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return results, nil
}

func (e *evaluator) report(r eval.Result) {
	if e.progress == nil {
		return
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	e.done++
	verdict := "wrong"
	switch {
	case r.Error != "":
		verdict = "failed"
	case r.Correct:
		verdict = "right"
	}
	got := "no integer"
	if r.Got != nil {
		got = fmt.Sprint(*r.Got)
	}
	fmt.Fprintf(e.progress, "  [%d/%d] %-6s %-22s %-6s %s (expected %d) %d tokens %s\n", e.done, e.total, r.Strategy, r.Question, verdict,
		got, r.Expected, r.Tokens, (time.Duration(r.LatencyMS) * time.Millisecond).String())
}

// one runs question q with setting s. A refused start is an error; a
// failed run is a wrong result with its error.
func (e *evaluator) one(ctx context.Context, q eval.Question, s eval.Setting) (eval.Result, error) {
	res := eval.Result{Question: q.ID, Strategy: s.Strategy, Expected: q.Answer}
	req := client.ConsensusRequest{Prompt: q.Prompt, Project: e.project, Placement: e.placement, MaxTokens: s.MaxTokens}
	switch s.Strategy {
	case eval.Debate:
		// Debate is the API's default strategy: the request names none,
		// and runs on a mesh of any version.
		req.MaxRounds = s.MaxRounds
	case eval.Vote:
		t := s.Temperature
		req.Strategy, req.Samples, req.Temperature = eval.Vote, s.Samples, &t
	case eval.Single:
		req.Strategy = eval.Single
	}
	start := time.Now()
	sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	started, err := e.c.StartConsensus(sctx, req)
	cancel()
	var ae *client.Error
	switch {
	case errors.As(err, &ae) && ae.Status >= 400 && ae.Status < 500:
		return res, &errRefused{s.Strategy, err}
	case err != nil && ctx.Err() != nil:
		return res, ctx.Err()
	case err != nil:
		res.Error = "starting the run: " + err.Error()
		res.LatencyMS = time.Since(start).Milliseconds()
		return res, nil
	}
	res.WorkflowID = started.WorkflowID
	rctx, cancel := context.WithTimeout(ctx, e.timeout)
	defer cancel()
	st, err := e.c.Follow(rctx, started.WorkflowID, func(workflows.ConsensusState) {})
	res.LatencyMS = time.Since(start).Milliseconds()
	if ctx.Err() != nil {
		return res, ctx.Err()
	}
	if err == nil && st.Status == workflows.StatusFailed {
		err = errors.New(failureText(st.Error))
	}
	if errors.Is(rctx.Err(), context.DeadlineExceeded) {
		err = fmt.Errorf("the run did not finish within --run-timeout %v; it may still be running (si ask --follow %s)", e.timeout, started.WorkflowID)
	}
	if err != nil {
		res.Error = err.Error()
	}
	// The ledger's cost and the tokens of every call, a failed run's too.
	vctx, vcancel := context.WithTimeout(ctx, 30*time.Second)
	defer vcancel()
	if v, verr := e.c.Run(vctx, started.WorkflowID); verr == nil {
		res.Cost = money.Micros(v.CostMicros)
		st = v.ConsensusState
	}
	for _, u := range st.Usage {
		res.Tokens += int64(u.PromptTokens + u.CompletionTokens)
	}
	e.sawModels(st)
	res.Rounds = len(st.Rounds)
	if res.Error == "" {
		res.Answer = truncateWidth(oneLine(st.Answer, evalAnswerMax), evalAnswerMax)
		if v, ok := eval.FinalInteger(st.Answer); ok {
			res.Got = &v
			res.Correct = v == q.Answer
		}
	}
	return res, nil
}
