package cli

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"strings"
	"time"

	"go.temporal.io/sdk/temporal"

	"github.com/superinstance/mesh/activities"
	"github.com/superinstance/mesh/internal/config"
	"github.com/superinstance/mesh/internal/runner"
	"github.com/superinstance/mesh/internal/telemetry"
	"github.com/superinstance/mesh/workers"
	"github.com/superinstance/mesh/workflows"
)

func askCommand() *Command {
	var (
		t         config.Temporal
		tr        telemetry.Tracing
		in        workflows.ConsensusInput
		placement string
		hub       string
		follow    string
		cont      string
		asJSON    bool
		uiURL     string
	)
	return &Command{
		Name:  "ask",
		Args:  `"prompt"`,
		Short: "run a consensus (Pathos, Logos, Ethos, Arbiter) and print it as it happens",
		Long: `si ask starts a ConsensusWorkflow for the prompt and prints each agent's step as
it completes, then the answer with its status, score, rounds and workflow id.

  si ask "Why is the sky blue?"
  si ask --follow consensus-20261124-101500-1a2b3c4d   re-attach to a run
  si ask --continue consensus-... "and at sunset?"     continue from a run's state

A run is admitted only when the account (and, for --guest, the session's
quota) can cover its worst case: every round's agent calls at --max-tokens,
priced at the most expensive model. Otherwise it is refused before any
inference with one line that says what to do (raise the ceiling, flush the
balance, or ask for fewer --max-rounds).

Exits non-zero when Temporal cannot be reached or the consensus fails.`,
		Flags: func(fs *flag.FlagSet) {
			t.Register(fs, "127.0.0.1:7233", "Temporal frontend host:port (si dev serves one here)")
			tr.Register(fs)
			fs.StringVar(&in.Project, "project", workflows.DefaultProject, "project the run belongs to")
			fs.StringVar(&in.Account, "account", "dev", "account billed for the run (si dev creates \"dev\")")
			fs.StringVar(&placement, "placement", "auto", "where inference runs: auto (the hub when healthy), hub or cloud")
			fs.StringVar(&hub, "hub", "local", `device id of the hub to prefer ("" for none)`)
			fs.IntVar(&in.MaxRounds, "max-rounds", workflows.DefaultMaxRounds, "rounds before the Arbiter decides (1-10)")
			fs.Float64Var(&in.Threshold, "threshold", workflows.DefaultThreshold, "consensus score needed, in (0, 1]")
			fs.IntVar(&in.MaxTokens, "max-tokens", workflows.DefaultMaxTokens,
				"most tokens each agent call may generate (16-32768); the run starts only if the account can pay its worst case at this bound")
			fs.StringVar(&in.LoRA, "lora", "", "LoRA adapter id for Logos")
			fs.StringVar(&in.GuestSession, "guest", "", "run as a guest with this session id (gs_..., which si join prints); the host pays")
			fs.StringVar(&follow, "follow", "", "re-attach to the consensus with this workflow id")
			fs.StringVar(&cont, "continue", "", "continue from the final state of this workflow id")
			fs.BoolVar(&asJSON, "json", false, "print the final state as JSON only")
			fs.StringVar(&uiURL, "ui-url", "http://127.0.0.1:8233", "Temporal Web UI base URL, for links")
		},
		Run: func(ctx context.Context, env *Env, args []string) error {
			if in.GuestSession != "" {
				// The session names its host, who pays, and its project.
				in.Account, in.Project = "", ""
			}
			if follow != "" && len(args) > 0 {
				return errors.New("--follow takes no prompt")
			}
			if follow == "" {
				in.Prompt = strings.Join(args, " ")
				if strings.TrimSpace(in.Prompt) == "" {
					return errors.New(`a prompt is required: si ask "your question"`)
				}
				p, err := workflows.ParsePlacement(placement)
				if err != nil {
					return err
				}
				in.Placement = p
				if hub != "" {
					in.HubQueue = workers.HubQueue(hub)
				}
				if in.MaxRounds < 1 || in.MaxRounds > workflows.MaxRounds {
					return fmt.Errorf("max rounds %d is outside 1..%d", in.MaxRounds, workflows.MaxRounds)
				}
				if in.Threshold <= 0 || in.Threshold > 1 {
					return fmt.Errorf("threshold %v is outside (0, 1]", in.Threshold)
				}
				if in.Placement == workflows.PlacementHub && hub == "" {
					return errors.New("--placement hub needs --hub")
				}
				if _, err := in.Normalize(); err != nil {
					return err
				}
			}
			ins, err := tr.Instrument(ctx, "si")
			if err != nil {
				return err
			}
			defer func() { _ = ins.Shutdown(context.Background()) }()
			t.Interceptors = append(t.Interceptors, ins.Interceptor)
			ctx, span := ins.Tracer.Tracer("github.com/superinstance/mesh").Start(ctx, "si ask")
			defer span.End()
			c, err := t.Dial(5 * time.Second)
			if err != nil {
				return err
			}
			defer c.Close()
			id := follow
			if id == "" {
				if cont != "" {
					r, prev, err := runner.Resume(ctx, c, cont)
					if err != nil {
						return err
					}
					in.Resume = r
					if in.Project == workflows.DefaultProject {
						in.Project = prev.Project
					}
				}
				id = runner.NewWorkflowID(time.Now())
				if _, err := runner.Start(ctx, c, id, in); err != nil {
					return fmt.Errorf("starting the consensus: %w", err)
				}
			}
			p := &progress{w: env.Stdout, quiet: asJSON}
			if !asJSON {
				fmt.Fprintf(env.Stdout, "%s  %s\n", id, workflowLink(uiURL, t.Namespace, id))
			}
			st, err := runner.Watch(ctx, c, id, 150*time.Millisecond, p.show)
			if err != nil {
				if asJSON {
					_ = json.NewEncoder(env.Stdout).Encode(map[string]any{"workflow_id": id, "status": workflows.StatusFailed, "error": err.Error()})
				}
				var ae *temporal.ApplicationError
				if errors.As(err, &ae) && oneLineTypes[ae.Type()] {
					// "credit ceiling reached: ...", "not enough headroom ...":
					// the message says what to do.
					return errors.New(ae.Message())
				}
				return fmt.Errorf("consensus %s failed: %w", id, err)
			}
			if asJSON {
				return printJSON(env.Stdout, struct {
					WorkflowID string `json:"workflow_id"`
					workflows.ConsensusState
				}{id, st})
			}
			rounds := 0
			if len(st.Rounds) > 0 {
				rounds = st.Rounds[len(st.Rounds)-1].Round
			}
			fmt.Fprintf(env.Stdout, "\nstatus    %s\nscore     %.4f (threshold %.2f)\nrounds    %d\n", st.Status, st.Score, st.Threshold, rounds)
			if st.Arbiter != nil {
				fmt.Fprintf(env.Stdout, "arbiter   confidence %.2f: %s\n", st.Arbiter.Confidence, st.Arbiter.Note)
			}
			fmt.Fprintf(env.Stdout, "answer    %s\nworkflow  %s\n", st.Answer, id)
			return nil
		},
	}
}

// oneLineTypes are the failures printed as their own message alone: each
// names the problem and what to do.
var oneLineTypes = map[string]bool{activities.ErrCreditCeiling: true, activities.ErrInsufficientHeadroom: true, activities.ErrGuestQuota: true}

func workflowLink(base, namespace, id string) string {
	return strings.TrimRight(base, "/") + "/namespaces/" + url.PathEscape(namespace) + "/workflows/" + url.PathEscape(id)
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
}

func (p *progress) show(st workflows.ConsensusState) {
	if p.quiet {
		return
	}
	if p.solutions == nil {
		p.solutions, p.verdicts = map[int]bool{}, map[int]bool{}
	}
	if st.Placement != "" && st.Placement != p.placement {
		p.placement = st.Placement
		fmt.Fprintf(p.w, "  placement  %s (%s)\n", st.Placement, st.PlacementNote)
	}
	if st.Manifest != nil && !p.manifest {
		p.manifest = true
		fmt.Fprintf(p.w, "  pathos     intent: %s (domain %s, confidence %.2f)\n", st.Manifest.Intent, st.Manifest.Domain, st.Manifest.Confidence)
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

func oneLine(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > n {
		s = s[:n] + "..."
	}
	return s
}
