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
	// ErrInsufficientHeadroom: the account or the guest session cannot cover
	// the run's worst case; nothing ran.
	ErrInsufficientHeadroom = "InsufficientHeadroom"
	// ErrLedgerUnreachable: PostgreSQL, which holds the accounts and the
	// ledger, did not answer; nothing ran. Retryable: a short bounded retry
	// rides out a blip, and the caller may try again later.
	ErrLedgerUnreachable = "LedgerUnreachable"
	// ErrPromptTooLarge: the prompt is over the step's bound; nothing ran.
	ErrPromptTooLarge = "PromptTooLarge"
	// ErrFailedAfterUse: a call ran and a later one failed in a way a retry
	// may mend; the details carry the AgentUsage of what ran, which the
	// caller bills before it retries under a new id.
	ErrFailedAfterUse = "InferenceFailedAfterUse"
)

// Bounds of one agent call, which admission prices a step by.
const (
	// DefaultMaxTokens is the completion bound per call when a Budget names none.
	DefaultMaxTokens = 1024
	// MessageOverhead bounds the tokens a chat template adds per message.
	MessageOverhead = 8
	// RepairAllowance is the room a step's prompt bound leaves for the
	// repair call: the first reply (up to 8 bytes a token of MaxTokens) and
	// the repair message.
	RepairAllowance = 1024
)

// Budget bounds one agent call. The zero value bounds nothing (runs
// recorded before admission).
type Budget struct {
	// MaxPromptTokens bounds every chat call's prompt, counted as
	// PromptTokensBound does; a larger prompt is refused before it is sent.
	MaxPromptTokens int `json:"max_prompt_tokens,omitempty"`
	// MaxTokens is sent as max_tokens with every chat call.
	MaxTokens int `json:"max_tokens,omitempty"`
}

// PromptTokensBound is an upper bound on the prompt tokens of msgs: one
// token a byte (a byte-level tokenizer never makes more) plus
// MessageOverhead a message and one more for the reply's start.
func PromptTokensBound(msgs []llm.Message) int {
	n := MessageOverhead
	for _, m := range msgs {
		n += len(m.Role) + len(m.Content) + MessageOverhead
	}
	return n
}

// StepBudget is the budget of a step whose first prompt is p: p's bound
// plus room for a repair call, and maxTokens (DefaultMaxTokens when 0).
func StepBudget(p synapse.Prompt, maxTokens int) Budget {
	if maxTokens <= 0 {
		maxTokens = DefaultMaxTokens
	}
	first := PromptTokensBound(PromptMessages(p))
	return Budget{MaxPromptTokens: first + 8*maxTokens + RepairAllowance, MaxTokens: maxTokens}
}

// EventBound is the most tokens one step under b may use: two calls (the
// first and the repair), each within both bounds.
func (b Budget) EventBound() (prompt, completion int64) {
	return 2 * int64(b.MaxPromptTokens), 2 * int64(b.MaxTokens)
}

// PromptMessages are the chat messages of p.
func PromptMessages(p synapse.Prompt) []llm.Message {
	return []llm.Message{{Role: "system", Content: p.System}, {Role: "user", Content: p.User}}
}

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
	// Failed is true for a call that ran in a step that failed; it is billed all the same.
	Failed bool `json:"failed,omitempty"`
	// RanOn is the task queue of the worker that ran the call.
	RanOn string `json:"ran_on"`
}

// PathosInput asks for the intent manifest of Question.
type PathosInput struct {
	Question string
	Budget   Budget
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
	Budget  Budget
	// Earlier is the answer of the run this one continues, for context.
	Earlier string `json:",omitempty"`
	// Temperature and Seed sample the call (a vote's samples); zero values
	// ask for the most likely output with no seed, as every debate step does.
	Temperature float64 `json:",omitempty"`
	Seed        *int64  `json:",omitempty"`
}

// Prompt is the prompt in asks Logos.
func (in LogosInput) Prompt() synapse.Prompt {
	return synapse.LogosPrompt(in.Question, in.Manifest, in.Round, in.Feedback, in.LoRA).WithEarlier(in.Earlier)
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
	Budget   Budget
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
	Budget   Budget
}

// ArbiterOutput is the Arbiter's verdict.
type ArbiterOutput struct {
	Verdict synapse.Verdict
	Usage   AgentUsage
}

// Pathos extracts the intent manifest.
func (a *Inference) Pathos(ctx context.Context, in PathosInput) (PathosOutput, error) {
	var out PathosOutput
	u, err := a.ask(ctx, synapse.Pathos, a.Models.Pathos, synapse.PathosPrompt(in.Question), &out.Manifest, in.Budget, sampling{})
	out.Usage = u
	return out, err
}

// Logos synthesizes a solution.
func (a *Inference) Logos(ctx context.Context, in LogosInput) (LogosOutput, error) {
	// Loading an adapter (its download, then the backend's load) can take
	// longer than the step's heartbeat timeout too.
	defer heartbeat(ctx)()
	var out LogosOutput
	model := a.Models.Logos
	if in.LoRA != "" {
		model = in.LoRA
	}
	p := in.Prompt()
	smp := sampling{temperature: in.Temperature, seed: in.Seed}
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
	u, err := a.ask(ctx, synapse.Logos, model, p, &out.Solution, in.Budget, smp)
	if err != nil && u.tokens() == 0 && in.LoRA != "" && a.Adapters != nil && lora.IsNotLoaded(err) {
		// The backend lost the adapter (a restart, or another worker's
		// eviction): load it again and retry once.
		a.Adapters.Cache.Forget(in.LoRA)
		if err := use(); err != nil {
			return out, err
		}
		u, err = a.ask(ctx, synapse.Logos, model, p, &out.Solution, in.Budget, smp)
	}
	out.Usage = u
	return out, err
}

// Ethos verifies a solution.
func (a *Inference) Ethos(ctx context.Context, in EthosInput) (EthosOutput, error) {
	var out EthosOutput
	u, err := a.ask(ctx, synapse.Ethos, a.Models.Ethos, synapse.EthosPrompt(in.Question, in.Manifest, in.Solution, in.Round), &out.Verification, in.Budget, sampling{})
	out.Usage = u
	return out, err
}

// Arbiter decides after the last round.
func (a *Inference) Arbiter(ctx context.Context, in ArbiterInput) (ArbiterOutput, error) {
	var out ArbiterOutput
	u, err := a.ask(ctx, synapse.Arbiter, a.Models.Arbiter, synapse.ArbiterPrompt(in.Question, in.Manifest, in.Rounds), &out.Verdict, in.Budget, sampling{})
	out.Usage = u
	return out, err
}

type validated interface{ Validate() error }

// sampling is how a call samples; the zero value is temperature 0, no seed.
type sampling struct {
	temperature float64
	seed        *int64
}

// ask sends p, parses the reply into out, and on an unusable reply asks once
// more with a repair prompt. Usage covers both calls. Every error after a
// call ran carries the usage in its details (as an ApplicationError), so the
// caller can bill what ran; a failure that a retry may mend becomes a
// non-retryable ErrFailedAfterUse, because Temporal's own retry would hide
// the usage of the attempt that failed.
func (a *Inference) ask(ctx context.Context, role synapse.Role, model string, p synapse.Prompt, out validated, b Budget, smp sampling) (AgentUsage, error) {
	start := time.Now()
	defer func() { a.Metrics.Stage(string(role), time.Since(start)) }()
	defer heartbeat(ctx)()
	u := AgentUsage{Role: role, Model: model}
	if activity.IsActivity(ctx) {
		u.RanOn = activity.GetInfo(ctx).TaskQueue
	}
	msgs := PromptMessages(p)
	if n := PromptTokensBound(msgs); b.MaxPromptTokens > 0 && n > b.MaxPromptTokens {
		return u, temporal.NewNonRetryableApplicationError(
			fmt.Sprintf("%s's prompt may be %d tokens, over the step's bound of %d: shorten the prompt", role, n, b.MaxPromptTokens), ErrPromptTooLarge, nil)
	}
	resp, err := a.chat(ctx, model, msgs, b.MaxTokens, smp)
	if err != nil {
		return u, err
	}
	u.add(resp.Usage)
	perr := synapse.Parse(resp.Text, out)
	if perr == nil {
		return u, nil
	}
	msgs = append(msgs, llm.Message{Role: "assistant", Content: resp.Text}, llm.Message{Role: "user", Content: synapse.Repair(perr)})
	if n := PromptTokensBound(msgs); b.MaxPromptTokens > 0 && n > b.MaxPromptTokens {
		return u, temporal.NewNonRetryableApplicationError(
			fmt.Sprintf("%s's output is unusable and too long to repair within the step's bound: %v", role, perr), ErrMalformedOutput, perr, u)
	}
	resp, err = a.chat(ctx, model, msgs, b.MaxTokens, smp)
	if err != nil {
		return u, withUsage(err, u)
	}
	u.add(resp.Usage)
	u.Repaired = true
	if err := synapse.Parse(resp.Text, out); err != nil {
		return u, temporal.NewNonRetryableApplicationError(
			fmt.Sprintf("%s's output is unusable after one repair attempt: %v", role, err), ErrMalformedOutput, err, u)
	}
	return u, nil
}

// withUsage makes err, which came after calls that used u, carry u.
func withUsage(err error, u AgentUsage) error {
	var ae *temporal.ApplicationError
	if errors.As(err, &ae) && ae.NonRetryable() {
		return temporal.NewNonRetryableApplicationError(ae.Message(), ae.Type(), err, u)
	}
	return temporal.NewNonRetryableApplicationError(err.Error(), ErrFailedAfterUse, err, u)
}

func (a *Inference) chat(ctx context.Context, model string, msgs []llm.Message, maxTokens int, smp sampling) (llm.Response, error) {
	resp, err := a.LLM.Chat(ctx, llm.Request{Model: model, Messages: msgs, JSON: true, MaxTokens: maxTokens, Temperature: smp.temperature, Seed: smp.seed})
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

func (u AgentUsage) tokens() int { return u.PromptTokens + u.CompletionTokens }
