// Package activities holds the mesh's side effects as methods on structs that
// own their clients. Workflows call them through nil pointers of these types.
package activities

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
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
	// ErrInferenceBusy: the backend answered 429 or 503 with a Retry-After;
	// the activity is retried after it (at most MaxRetryAfter).
	ErrInferenceBusy = "InferenceBusy"
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

// MaxRetryAfter bounds how long a backend's Retry-After delays a step's
// next attempt.
const MaxRetryAfter = 30 * time.Second

// Backend is one agent's inference backend and completion bound.
type Backend struct {
	// LLM is the agent's server; nil uses Inference.LLM.
	LLM *llm.Client
	// MaxTokens caps the agent's max_tokens below the run's; 0 leaves the run's.
	MaxTokens int
}

// Inference runs the Cloud Synapse agents against an OpenAI-compatible server.
type Inference struct {
	// LLM serves every agent that Backends gives no server of its own.
	LLM    *llm.Client
	Models Models
	// Backends gives an agent its own server or completion bound; a role
	// it leaves out uses LLM and the run's bound.
	Backends map[synapse.Role]Backend
	// NoStream asks for whole responses; by default completions stream, and
	// the step heartbeats as chunks arrive.
	NoStream bool
	// Adapters, when set, loads a LoRA on first use after checking the
	// account may use it (the cloud worker); without it the adapter is
	// taken as a model the backend already serves (a hub).
	Adapters *Adapters
	// Metrics records each step's latency; nil records nothing.
	Metrics *telemetry.Metrics
}

// Clients lists every distinct backend client of a: LLM and each agent's
// own. It is a function, not a method: every exported method of Inference
// is registered as an activity.
func Clients(a *Inference) []*llm.Client {
	var out []*llm.Client
	seen := map[*llm.Client]bool{}
	for _, c := range []*llm.Client{a.LLM, a.Backends[synapse.Pathos].LLM, a.Backends[synapse.Logos].LLM, a.Backends[synapse.Ethos].LLM, a.Backends[synapse.Arbiter].LLM} {
		if c != nil && !seen[c] {
			seen[c] = true
			out = append(out, c)
		}
	}
	return out
}

// WrapHTTP returns a copy of a whose every backend client sends through
// wrap of its http.Client (a tracing transport, say); a client that serves
// several roles is still one client.
func WrapHTTP(a *Inference, wrap func(*http.Client) *http.Client) *Inference {
	out := *a
	wrapped := map[*llm.Client]*llm.Client{}
	w := func(c *llm.Client) *llm.Client {
		if c == nil {
			return nil
		}
		if n, ok := wrapped[c]; ok {
			return n
		}
		n := c.WithHTTP(wrap(c.HTTPClient()))
		wrapped[c] = n
		return n
	}
	out.LLM = w(a.LLM)
	if a.Backends != nil {
		out.Backends = map[synapse.Role]Backend{}
		for role, b := range a.Backends {
			b.LLM = w(b.LLM)
			out.Backends[role] = b
		}
	}
	return &out
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
	// UsageEstimated is true when a server reported no usage for a call and
	// its tokens are llm.EstimateUsage's estimate, which is what is billed.
	UsageEstimated bool `json:"usage_estimated,omitempty"`
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
	call := a.call(ctx, role, model, out, b, smp)
	resp, err := call(msgs)
	if err != nil {
		if resp.Usage.PromptTokens+resp.Usage.CompletionTokens > 0 {
			// The call ran before it failed (a stream cut after chunks
			// arrived): bill it, and retry under a new id.
			u.add(ctx, resp)
			return u, withUsage(err, u)
		}
		return u, err
	}
	u.add(ctx, resp)
	perr := synapse.Parse(resp.Text, out)
	if perr == nil {
		return u, nil
	}
	msgs = append(msgs, llm.Message{Role: "assistant", Content: resp.Text}, llm.Message{Role: "user", Content: synapse.Repair(perr)})
	if n := PromptTokensBound(msgs); b.MaxPromptTokens > 0 && n > b.MaxPromptTokens {
		return u, temporal.NewNonRetryableApplicationError(
			fmt.Sprintf("%s's output is unusable and too long to repair within the step's bound: %v", role, perr), ErrMalformedOutput, perr, u)
	}
	resp, err = callWaitingOut(ctx, call, msgs)
	if err != nil {
		u.add(ctx, resp) // a repair call cut mid-stream ran too
		return u, withUsage(err, u)
	}
	u.add(ctx, resp)
	u.Repaired = true
	if err := synapse.Parse(resp.Text, out); err != nil {
		return u, temporal.NewNonRetryableApplicationError(
			fmt.Sprintf("%s's output is unusable after one repair attempt: %v", role, err), ErrMalformedOutput, err, u)
	}
	return u, nil
}

// RepairBusyTries bounds how many times a repair call answered busy (429
// or 503 with Retry-After) is sent within its step.
const RepairBusyTries = 4

// callWaitingOut sends msgs with call and, while the backend answers busy
// with a Retry-After, waits that long (at most MaxRetryAfter) and sends
// again, up to RepairBusyTries times, the step heartbeating meanwhile. It
// serves the repair call: the first call ran and is billed, and Temporal's
// retry would send it again under a new id. A wait that would pass ctx's
// deadline is not begun.
func callWaitingOut(ctx context.Context, call func([]llm.Message) (llm.Response, error), msgs []llm.Message) (llm.Response, error) {
	for try := 1; ; try++ {
		resp, err := call(msgs)
		var ae *temporal.ApplicationError
		if err == nil || try == RepairBusyTries || !errors.As(err, &ae) || ae.Type() != ErrInferenceBusy {
			return resp, err
		}
		wait := ae.NextRetryDelay()
		if dl, ok := ctx.Deadline(); ok && time.Until(dl) <= wait {
			return resp, err
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return resp, err
		case <-t.C:
		}
	}
}

// withUsage makes err, which came after calls that used u, carry u.
func withUsage(err error, u AgentUsage) error {
	var ae *temporal.ApplicationError
	if errors.As(err, &ae) && ae.NonRetryable() {
		return temporal.NewNonRetryableApplicationError(ae.Message(), ae.Type(), err, u)
	}
	return temporal.NewNonRetryableApplicationError(err.Error(), ErrFailedAfterUse, err, u)
}

// call returns the function that sends one chat call of role's step: to
// role's backend, with max_tokens the smaller of the step's and the
// role's, JSON mode with out's schema to fall back on, streamed unless
// NoStream, heartbeating as chunks arrive.
func (a *Inference) call(ctx context.Context, role synapse.Role, model string, out any, b Budget, smp sampling) func([]llm.Message) (llm.Response, error) {
	be := a.Backends[role]
	c := be.LLM
	if c == nil {
		c = a.LLM
	}
	maxTokens := b.MaxTokens
	if be.MaxTokens > 0 && (maxTokens == 0 || be.MaxTokens < maxTokens) {
		maxTokens = be.MaxTokens
	}
	var schema *llm.Schema
	if name, s, ok := synapse.SchemaOf(out); ok {
		schema = &llm.Schema{Name: name, Schema: json.RawMessage(s)}
	}
	return func(msgs []llm.Message) (llm.Response, error) {
		resp, err := c.Chat(ctx, llm.Request{Model: model, Messages: msgs, JSON: true, Schema: schema, MaxTokens: maxTokens,
			Temperature: smp.temperature, Seed: smp.seed, Stream: !a.NoStream, OnChunk: chunkHeartbeat(ctx)})
		var he *llm.HTTPError
		switch {
		case errors.As(err, &he) && he.Temporary() && he.RetryAfter > 0:
			return resp, temporal.NewApplicationErrorWithOptions(he.Error(), ErrInferenceBusy,
				temporal.ApplicationErrorOptions{NextRetryDelay: min(he.RetryAfter, MaxRetryAfter), Cause: err})
		case errors.As(err, &he) && !he.Temporary():
			return resp, temporal.NewNonRetryableApplicationError(he.Error(), ErrInferenceRejected, err)
		}
		return resp, err
	}
}

// StreamProgress is the heartbeat detail of a step whose completion is
// streaming: how many chunks have arrived.
type StreamProgress struct {
	Chunks int `json:"chunks"`
}

// chunkHeartbeat heartbeats, with the chunks so far, at most every
// HeartbeatEvery as a streamed completion's chunks arrive; outside an
// activity it is nil.
func chunkHeartbeat(ctx context.Context) func() {
	if !activity.IsActivity(ctx) {
		return nil
	}
	return throttled(HeartbeatEvery, time.Now, func(p StreamProgress) { activity.RecordHeartbeat(ctx, p) })
}

// throttled counts calls and passes the count to record on the first call
// and then at most once every interval.
func throttled(every time.Duration, now func() time.Time, record func(StreamProgress)) func() {
	var last time.Time
	n := 0
	return func() {
		n++
		if t := now(); n == 1 || t.Sub(last) >= every {
			last = t
			record(StreamProgress{Chunks: n})
		}
	}
}

// add counts resp's usage; an estimated one is marked and warned of.
func (u *AgentUsage) add(ctx context.Context, resp llm.Response) {
	u.PromptTokens += resp.Usage.PromptTokens
	u.CompletionTokens += resp.Usage.CompletionTokens
	if resp.UsageEstimated {
		u.UsageEstimated = true
		if activity.IsActivity(ctx) {
			activity.GetLogger(ctx).Warn("the inference server reported no usage; billing an estimate of four bytes a token, rounded up",
				"role", u.Role, "model", u.Model, "prompt_tokens", resp.Usage.PromptTokens, "completion_tokens", resp.Usage.CompletionTokens)
		}
	}
}

func (u AgentUsage) tokens() int { return u.PromptTokens + u.CompletionTokens }
