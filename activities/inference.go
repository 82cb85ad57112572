// Package activities holds the mesh's side effects as methods on structs that
// own their clients. Workflows call them through nil pointers of these types.
package activities

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/temporal"

	"github.com/superinstance/mesh/internal/llm"
	"github.com/superinstance/mesh/internal/lora"
	"github.com/superinstance/mesh/internal/synapse"
	"github.com/superinstance/mesh/internal/telemetry"
)

// Error types carried by non-retryable application errors.
const (
	ErrMalformedOutput   = "MalformedModelOutput"
	ErrInferenceRejected = "InferenceRejected"
	ErrCreditCeiling     = "CreditCeiling"
	ErrUnknownAccount    = "UnknownAccount"
	ErrGuestQuota        = "GuestQuotaExhausted"
	ErrProjectForbidden  = "ProjectForbidden"
)

// Models names the model each agent uses.
type Models struct {
	Pathos, Logos, Ethos, Arbiter string
}

// Inference runs the Cloud Synapse agents against an OpenAI-compatible server.
type Inference struct {
	LLM    *llm.Client
	Models Models
	// Adapters, when set, loads a LoRA on first use after checking the
	// account may use it (the cloud worker); without it the adapter is
	// taken as a model the backend already serves (a hub).
	Adapters *Adapters
	// Metrics records each step's latency; nil records nothing.
	Metrics *telemetry.Metrics
}

// AgentUsage is what one agent call consumed and where it ran.
type AgentUsage struct {
	Role             synapse.Role `json:"role"`
	Model            string       `json:"model"`
	PromptTokens     int          `json:"prompt_tokens"`
	CompletionTokens int          `json:"completion_tokens"`
	// Repaired is true when the first reply was unusable and the repair prompt's was used.
	Repaired bool `json:"repaired,omitempty"`
	// RanOn is the task queue of the worker that ran the call.
	RanOn string `json:"ran_on"`
}

// PathosInput asks for the intent manifest of Question.
type PathosInput struct {
	Question string
}

// PathosOutput is Pathos's manifest.
type PathosOutput struct {
	Manifest synapse.Manifest
	Usage    AgentUsage
}

// LogosInput asks for a solution in Round, addressing Feedback when set.
type LogosInput struct {
	Question string
	Manifest synapse.Manifest
	Round    int
	Feedback string
	// LoRA names an adapter the backend serves as a model; empty uses the base model.
	LoRA string
	// Account is who the consensus runs for; it must be allowed to use LoRA.
	Account string
}

// LogosOutput is Logos's solution.
type LogosOutput struct {
	Solution synapse.Solution
	Usage    AgentUsage
}

// EthosInput asks for a verification of Solution.
type EthosInput struct {
	Question string
	Manifest synapse.Manifest
	Solution synapse.Solution
	Round    int
}

// EthosOutput is Ethos's verification.
type EthosOutput struct {
	Verification synapse.Verification
	Usage        AgentUsage
}

// ArbiterInput is every round for the Arbiter to decide on.
type ArbiterInput struct {
	Question string
	Manifest synapse.Manifest
	Rounds   []synapse.RoundRecord
}

// ArbiterOutput is the Arbiter's verdict.
type ArbiterOutput struct {
	Verdict synapse.Verdict
	Usage   AgentUsage
}

// Pathos extracts the intent manifest.
func (a *Inference) Pathos(ctx context.Context, in PathosInput) (PathosOutput, error) {
	var out PathosOutput
	u, err := a.ask(ctx, synapse.Pathos, a.Models.Pathos, synapse.PathosPrompt(in.Question), &out.Manifest)
	out.Usage = u
	return out, err
}

// Logos synthesizes a solution.
func (a *Inference) Logos(ctx context.Context, in LogosInput) (LogosOutput, error) {
	var out LogosOutput
	model := a.Models.Logos
	if in.LoRA != "" {
		model = in.LoRA
	}
	p := synapse.LogosPrompt(in.Question, in.Manifest, in.Round, in.Feedback, in.LoRA)
	use := func() error {
		if in.LoRA == "" || a.Adapters == nil {
			return nil
		}
		_, err := a.Adapters.UseLoRA(ctx, UseLoRAInput{Account: in.Account, ID: in.LoRA})
		return err
	}
	if err := use(); err != nil {
		return out, err
	}
	u, err := a.ask(ctx, synapse.Logos, model, p, &out.Solution)
	if err != nil && in.LoRA != "" && a.Adapters != nil && lora.IsNotLoaded(err) {
		// The backend lost the adapter (a restart, or another worker's
		// eviction): load it again and retry once.
		a.Adapters.Cache.Forget(in.LoRA)
		if err := use(); err != nil {
			return out, err
		}
		u, err = a.ask(ctx, synapse.Logos, model, p, &out.Solution)
	}
	out.Usage = u
	return out, err
}

// Ethos verifies a solution.
func (a *Inference) Ethos(ctx context.Context, in EthosInput) (EthosOutput, error) {
	var out EthosOutput
	u, err := a.ask(ctx, synapse.Ethos, a.Models.Ethos, synapse.EthosPrompt(in.Question, in.Manifest, in.Solution, in.Round), &out.Verification)
	out.Usage = u
	return out, err
}

// Arbiter decides after the last round.
func (a *Inference) Arbiter(ctx context.Context, in ArbiterInput) (ArbiterOutput, error) {
	var out ArbiterOutput
	u, err := a.ask(ctx, synapse.Arbiter, a.Models.Arbiter, synapse.ArbiterPrompt(in.Question, in.Manifest, in.Rounds), &out.Verdict)
	out.Usage = u
	return out, err
}

type validated interface{ Validate() error }

// ask sends p, parses the reply into out, and on an unusable reply asks once
// more with a repair prompt. Usage covers both calls.
func (a *Inference) ask(ctx context.Context, role synapse.Role, model string, p synapse.Prompt, out validated) (AgentUsage, error) {
	start := time.Now()
	defer func() { a.Metrics.Stage(string(role), time.Since(start)) }()
	u := AgentUsage{Role: role, Model: model}
	if activity.IsActivity(ctx) {
		u.RanOn = activity.GetInfo(ctx).TaskQueue
	}
	msgs := []llm.Message{{Role: "system", Content: p.System}, {Role: "user", Content: p.User}}
	resp, err := a.chat(ctx, model, msgs)
	if err != nil {
		return u, err
	}
	u.add(resp.Usage)
	perr := synapse.Parse(resp.Text, out)
	if perr == nil {
		return u, nil
	}
	msgs = append(msgs, llm.Message{Role: "assistant", Content: resp.Text}, llm.Message{Role: "user", Content: synapse.Repair(perr)})
	resp, err = a.chat(ctx, model, msgs)
	if err != nil {
		return u, err
	}
	u.add(resp.Usage)
	u.Repaired = true
	if err := synapse.Parse(resp.Text, out); err != nil {
		return u, temporal.NewNonRetryableApplicationError(
			fmt.Sprintf("%s's output is unusable after one repair attempt: %v", role, err), ErrMalformedOutput, err, u)
	}
	return u, nil
}

func (a *Inference) chat(ctx context.Context, model string, msgs []llm.Message) (llm.Response, error) {
	resp, err := a.LLM.Chat(ctx, llm.Request{Model: model, Messages: msgs, JSON: true})
	var he *llm.HTTPError
	if errors.As(err, &he) && !he.Temporary() {
		return resp, temporal.NewNonRetryableApplicationError(he.Error(), ErrInferenceRejected, err)
	}
	return resp, err
}

func (u *AgentUsage) add(x llm.Usage) {
	u.PromptTokens += x.PromptTokens
	u.CompletionTokens += x.CompletionTokens
}
