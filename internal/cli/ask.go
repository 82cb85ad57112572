package cli

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/superinstance/mesh/internal/client"
	"github.com/superinstance/mesh/workflows"
)

func askCommand() *Command {
	var (
		api       apiFlags
		req       client.ConsensusRequest
		guest     string
		placement string
		follow    string
		strategy  string
		temp      string
		asJSON    bool
	)
	return &Command{
		Name:  "ask",
		Args:  `"prompt"`,
		Short: "run a consensus (debate, vote or single) and print it as it happens",
		Long: `si ask starts a consensus for the prompt through the mesh's API, billed to the
account your token names, and prints each agent's step as it completes (from
the run's event stream), then the answer with its status, score, rounds and
workflow id.

  si ask "Why is the sky blue?"
  si ask --follow consensus-20261124-101500-1a2b3c4d   re-attach to a run
  si ask --continue consensus-... "and at sunset?"     continue from a finished run
  si ask --strategy vote --samples 7 "What is 17*23?"   majority of 7 sampled answers
  si ask --strategy single "What is 17*23?"            one Logos answer

Strategies: debate (the default) is Pathos, then rounds of Logos and Ethos
until the score reaches --threshold, then the Arbiter. vote draws --samples
answers from Logos at --temperature (sample i with seed i), takes the answer
most samples give (compared trimmed, in lower case, numbers as numbers; a
tie goes to the lowest sample), and has Ethos check it once. single is one
Logos answer. Every sample is a step of its own, billed as such.

--continue works from any finished run, a failed one too: Pathos reads the
new prompt, and Logos the earlier answer and Ethos's last feedback.

A run is admitted only when the account (and, for --guest, the session's
quota) can cover its worst case: every round's agent calls at --max-tokens,
priced at the most expensive model. Otherwise it is refused before any
inference with one line that says what to do (raise the ceiling, flush the
balance, or ask for fewer --max-rounds).

It needs si login (or SI_TOKEN) first; si dev logs you in to its own mesh.
Exits non-zero when the API cannot be reached or the consensus fails.`,
		Flags: func(fs *flag.FlagSet) {
			api.register(fs)
			fs.StringVar(&req.Project, "project", "", "project the run belongs to (default: the account's default project)")
			fs.StringVar(&placement, "placement", "auto", "where inference runs: auto (the mesh's hub when healthy), hub or cloud")
			fs.IntVar(&req.MaxRounds, "max-rounds", workflows.DefaultMaxRounds, "rounds before the Arbiter decides (1-10)")
			fs.Float64Var(&req.Threshold, "threshold", workflows.DefaultThreshold, "consensus score needed, in (0, 1]")
			fs.IntVar(&req.MaxTokens, "max-tokens", workflows.DefaultMaxTokens,
				"most tokens each agent call may generate (16-32768); the run starts only if the account can pay its worst case at this bound")
			fs.StringVar(&req.LoRA, "lora", "", "LoRA adapter id for Logos")
			fs.StringVar(&guest, "guest", "", "run as a guest with this session secret (si_gs_..., which si join prints once); the host pays")
			fs.StringVar(&follow, "follow", "", "re-attach to the consensus with this workflow id")
			fs.StringVar(&req.Continue, "continue", "", "continue from this finished run's workflow id (a failed one too)")
			fs.StringVar(&strategy, "strategy", string(workflows.StrategyDebate), "how the run answers: debate, vote (majority of sampled answers) or single (one answer)")
			fs.IntVar(&req.Samples, "samples", 0, fmt.Sprintf("answers a vote draws, 1-%d (default %d)", workflows.MaxSamples, workflows.DefaultSamples))
			fs.StringVar(&temp, "temperature", "", fmt.Sprintf("sampling temperature of a vote or single run, 0-%g (default %g for vote, 0 for single)",
				workflows.MaxTemperature, workflows.DefaultTemperature))
			fs.BoolVar(&asJSON, "json", false, "print the final state as JSON only")
		},
		Run: func(ctx context.Context, env *Env, args []string) error {
			if follow != "" && len(args) > 0 {
				return errors.New("--follow takes no prompt")
			}
			if follow == "" {
				req.Prompt = strings.Join(args, " ")
				if strings.TrimSpace(req.Prompt) == "" {
					return errors.New(`a prompt is required: si ask "your question"`)
				}
				p, err := workflows.ParsePlacement(placement)
				if err != nil {
					return err
				}
				req.Placement = string(p)
				if req.MaxRounds < 1 || req.MaxRounds > workflows.MaxRounds {
					return fmt.Errorf("max rounds %d is outside 1..%d", req.MaxRounds, workflows.MaxRounds)
				}
				if req.Threshold <= 0 || req.Threshold > 1 {
					return fmt.Errorf("threshold %v is outside (0, 1]", req.Threshold)
				}
				st, err := workflows.ParseStrategy(strategy)
				if err != nil {
					return err
				}
				req.Strategy = string(st)
				if temp != "" {
					t, err := strconv.ParseFloat(temp, 64)
					if err != nil {
						return fmt.Errorf("--temperature %q is not a number: give one from 0 to %g", temp, workflows.MaxTemperature)
					}
					req.Temperature = &t
				}
				// The server checks it again; bad input is told before a request.
				// (Which hub a run may use is the mesh's to say.)
				if _, err := (workflows.ConsensusInput{Prompt: req.Prompt, Project: req.Project, MaxRounds: req.MaxRounds,
					Threshold: req.Threshold, Placement: p, LoRA: req.LoRA, HubQueue: "hub.mesh",
					Strategy: st, Samples: req.Samples, Temperature: req.Temperature}).Normalize(); err != nil {
					return err
				}
			}
			c, err := api.client()
			if guest != "" {
				// The session names its host, who pays, and its project.
				c, err = client.NewGuest(api.url, guest)
			}
			if err != nil {
				return err
			}
			id := follow
			if id == "" {
				sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
				started, err := c.StartConsensus(sctx, req)
				cancel()
				if err != nil {
					return fmt.Errorf("starting the consensus: %w", err)
				}
				id = started.WorkflowID
			}
			p := &progress{w: env.Stdout, quiet: asJSON}
			if !asJSON {
				fmt.Fprintf(env.Stdout, "%s  %s/c/%s\n", id, c.BaseURL, url.PathEscape(id))
			}
			st, err := c.Follow(ctx, id, p.show)
			if err == nil && st.Status == workflows.StatusFailed {
				err = errors.New(failureText(st.Error))
			}
			if err != nil {
				if asJSON {
					_ = json.NewEncoder(env.Stdout).Encode(map[string]any{"workflow_id": id, "status": workflows.StatusFailed, "error": err.Error()})
				}
				if msg := err.Error(); strings.HasPrefix(msg, "credit ceiling") || strings.HasPrefix(msg, "guest quota") || strings.HasPrefix(msg, "not enough headroom") {
					return err // says what to do
				}
				return fmt.Errorf("consensus %s failed: %w", id, err)
			}
			if asJSON {
				return printJSON(env.Stdout, askJSON{id, st})
			}
			rounds := 0
			if len(st.Rounds) > 0 {
				rounds = st.Rounds[len(st.Rounds)-1].Round
			}
			fmt.Fprintf(env.Stdout, "\nstatus    %s\nstrategy  %s\nscore     %.4f (threshold %.2f)\nrounds    %d\n", st.Status, strategyLine(st), st.Score, st.Threshold, rounds)
			if st.Arbiter != nil {
				fmt.Fprintf(env.Stdout, "arbiter   confidence %.2f: %s\n", st.Arbiter.Confidence, printable(st.Arbiter.Note))
			}
			fmt.Fprintf(env.Stdout, "answer    %s\ntokens    %d (charged %s)\nworkflow  %s\n", printable(st.Answer), st.Tokens, st.Charged, id)
			fmt.Fprint(env.Stderr, estimatedWarning(st))
			return nil
		},
	}
}

// estimatedWarning is one line when the server reported no usage for some
// of st's steps (their tokens, and what they were charged, are estimates),
// else "".
func estimatedWarning(st workflows.ConsensusState) string {
	n := 0
	for _, s := range st.StepLog {
		if s.UsageEstimated {
			n++
		}
	}
	if n == 0 {
		return ""
	}
	return fmt.Sprintf("warning: the inference server reported no usage for %d of %d steps; their tokens and charge are estimated at four bytes a token\n", n, len(st.StepLog))
}

// strategyLine names a run's strategy and how it sampled.
func strategyLine(st workflows.ConsensusState) string {
	s := string(st.Strategy)
	if s == "" {
		s = string(workflows.StrategyDebate)
	}
	t := 0.0
	if st.Temperature != nil {
		t = *st.Temperature
	}
	switch st.Strategy {
	case workflows.StrategyVote:
		s += fmt.Sprintf(" (%d samples at temperature %.2f; sample %d won with %d of %d)", st.Samples, t, st.Winner, st.WinnerVotes, len(st.Votes))
	case workflows.StrategySingle:
		s += fmt.Sprintf(" (one answer at temperature %.2f)", t)
	}
	if st.ContinuedFrom != "" {
		s += ", continued from " + st.ContinuedFrom
	}
	return s
}

// askJSON is what si ask --json prints: the run's final state.
type askJSON struct {
	WorkflowID string `json:"workflow_id"`
	workflows.ConsensusState
}

// failureText is the innermost message of a run's error as Temporal wraps
// it ("activity error (type: ...): MESSAGE (type: T, retryable: false)").
func failureText(s string) string {
	for _, wrap := range []string{"activity error (", "child workflow execution error ("} {
		if strings.HasPrefix(s, wrap) {
			if i := strings.Index(s, "): "); i >= 0 {
				s = s[i+3:]
			}
		}
	}
	if i := strings.Index(s, " (type: "); i > 0 {
		s = s[:i]
	}
	if s == "" {
		s = "the run failed"
	}
	return s
}

// progress prints each agent step once, as it first appears in the state.
type progress struct {
	w         io.Writer
	quiet     bool
	placement string
	manifest  bool
	solutions map[int]bool
	verdicts  map[int]bool
	arbiter   bool
	samples   map[int]bool
}

func (p *progress) show(st workflows.ConsensusState) {
	if p.quiet {
		return
	}
	if p.solutions == nil {
		p.solutions, p.verdicts, p.samples = map[int]bool{}, map[int]bool{}, map[int]bool{}
	}
	if st.Placement != "" && st.Placement != p.placement {
		p.placement = st.Placement
		fmt.Fprintf(p.w, "  placement  %s (%s)\n", st.Placement, st.PlacementNote)
	}
	if st.Manifest != nil && !p.manifest {
		p.manifest = true
		fmt.Fprintf(p.w, "  pathos     intent: %s (domain %s, confidence %.2f)\n", oneLine(st.Manifest.Intent, 100), oneLine(st.Manifest.Domain, 40), st.Manifest.Confidence)
	}
	for _, v := range st.Votes {
		if !p.samples[v.Sample] {
			p.samples[v.Sample] = true
			fmt.Fprintf(p.w, "  sample %-2d  logos   %s (confidence %.2f)\n", v.Sample, oneLine(v.Answer, 100), v.Confidence)
		}
	}
	for _, r := range st.Rounds {
		if r.Solution != nil && !p.solutions[r.Round] {
			p.solutions[r.Round] = true
			fmt.Fprintf(p.w, "  round %-3d  logos   %s (confidence %.2f)\n", r.Round, oneLine(r.Solution.Answer, 100), r.Solution.Confidence)
		}
		if r.Verification != nil && !p.verdicts[r.Round] {
			p.verdicts[r.Round] = true
			v := r.Verification
			fmt.Fprintf(p.w, "  round %-3d  ethos   accuracy %.2f relevance %.2f safety %.2f -> score %.4f",
				r.Round, v.Scores.Accuracy, v.Scores.Relevance, v.Scores.Safety, r.Score)
			if len(v.Violations) > 0 {
				fmt.Fprintf(p.w, " violations: %s", strings.Join(v.Violations, "; "))
			}
			fmt.Fprintln(p.w)
			if r.Score < st.Threshold && v.Feedback != "" {
				fmt.Fprintf(p.w, "             feedback: %s\n", oneLine(v.Feedback, 100))
			}
		}
	}
	if st.Arbiter != nil && !p.arbiter {
		p.arbiter = true
		fmt.Fprintf(p.w, "  arbiter    %s (confidence %.2f)\n", oneLine(st.Arbiter.Answer, 100), st.Arbiter.Confidence)
	}
}

// oneLine is s on one line for a progress line: whitespace runs become one
// space, control characters are dropped, and past n columns it is cut
// between characters and ends in "...".
func oneLine(s string, n int) string {
	s = strings.Join(strings.Fields(strings.Map(dropControl, s)), " ")
	return truncateWidth(s, n)
}
