// Package workflows holds the mesh's deterministic Temporal workflows.
package workflows

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"github.com/superinstance/mesh/activities"
	"github.com/superinstance/mesh/internal/money"
	"github.com/superinstance/mesh/internal/store"
	"github.com/superinstance/mesh/internal/synapse"
)

// Consensus statuses.
const (
	StatusRunning   = "running"
	StatusConsensus = "consensus"
	StatusArbiter   = "arbiter_resolved"
	StatusFailed    = "failed"
)

// QueryState is the query that returns a ConsensusState.
const QueryState = "state"

// Defaults and bounds of ConsensusInput.
const (
	DefaultThreshold   = 0.8
	DefaultMaxRounds   = 3
	MaxRounds          = 10
	DefaultProject     = activities.DefaultProject
	DefaultStepTimeout = 2 * time.Minute
	// DefaultMaxTokens bounds each agent call's completion.
	DefaultMaxTokens = activities.DefaultMaxTokens
	MaxMaxTokens     = 32768
	// stepRetries is how often a step whose call ran and then failed in a
	// way a retry may mend is run again under a new id.
	stepRetries = 2
	// StepHeartbeatTimeout is how long an agent step may go without a
	// heartbeat (activities.HeartbeatEvery while its model call runs) before
	// it is retried, on another worker when the first one died.
	StepHeartbeatTimeout = 5 * time.Second
	// hubStartTimeout is how long a step waits for a hub to pick it up before
	// the workflow moves inference to the cloud queue.
	hubStartTimeout = 10 * time.Second
)

// Error types of the workflow's non-retryable failures.
const (
	ErrInvalidInput   = "InvalidInput"
	ErrHubUnavailable = "HubUnavailable"
	ErrRoundFailed    = "RoundFailed"
)

// Placement says where inference may run.
type Placement string

// Placements.
const (
	PlacementAuto  Placement = "auto"  // the hub when it is healthy, else the cloud
	PlacementHub   Placement = "hub"   // the hub only; fail if it is unavailable
	PlacementCloud Placement = "cloud" // the cloud only
)

// ParsePlacement accepts auto, hub or cloud.
func ParsePlacement(s string) (Placement, error) {
	switch p := Placement(strings.ToLower(strings.TrimSpace(s))); p {
	case PlacementAuto, PlacementHub, PlacementCloud:
		return p, nil
	case "":
		return PlacementAuto, nil
	}
	return "", fmt.Errorf("invalid placement %q: use auto, hub or cloud", s)
}

// Resume continues a conversation from an earlier consensus: its last round,
// Ethos's feedback from that round, its answer, and Pathos's manifest (with
// a manifest Pathos does not run; without one it reads the new prompt).
type Resume struct {
	From     string            `json:"from,omitempty"` // the earlier workflow's id
	Round    int               `json:"round"`
	Feedback string            `json:"feedback,omitempty"`
	Manifest *synapse.Manifest `json:"manifest,omitempty"`
	// Answer is the earlier run's answer (its last solution when it failed),
	// which Logos reads beside the new prompt.
	Answer string `json:"answer,omitempty"`
}

// ErrRunInProgress says a run to continue from has not finished.
var ErrRunInProgress = errors.New("the run is still in progress: continue from it once it has finished")

// ResumeFrom is the Resume of a new request that continues from the run id
// whose state is st: any finished run, a failed one too. Pathos reads the
// new prompt; Logos reads the earlier answer and Ethos's last feedback.
func ResumeFrom(id string, st ConsensusState) (*Resume, error) {
	if st.Status == StatusRunning || st.Status == "" {
		return nil, ErrRunInProgress
	}
	return &Resume{From: id, Round: st.Round, Feedback: st.Feedback(), Answer: st.LastAnswer()}, nil
}

// ConsensusInput starts a ConsensusWorkflow. Zero fields take their defaults.
type ConsensusInput struct {
	Prompt string
	// Project groups runs. Default "default".
	Project string
	// Account is billed for the run; the bridge sets it from the device certificate.
	Account string
	// Threshold is the score at or above which a round reaches consensus, in (0, 1]. Default 0.8.
	Threshold float64
	// MaxRounds is how many rounds run before the Arbiter decides, 1 to 10. Default 3.
	MaxRounds int
	// Placement: auto (default), hub or cloud.
	Placement Placement
	// HubQueue is the task queue of the hub to prefer (hub.<device-id>); empty means none.
	HubQueue string
	// CloudQueue runs inference off the hub. Default: the workflow's own task queue.
	CloudQueue string
	// LoRA is an adapter id for Logos; empty uses the base model.
	LoRA string
	// GuestSession, when set, runs the consensus for a guest of Account's
	// project: Account pays, up to the session's remaining quota.
	GuestSession string
	// Resume continues from an earlier state.
	Resume *Resume
	// StepTimeout bounds one agent call. Default 2 minutes.
	StepTimeout time.Duration
	// MaxTokens bounds each agent call's completion (max_tokens), 16 to
	// 32768; admission prices the run's worst case with it. Default 1024.
	MaxTokens int
	// Strategy is debate (default), vote or single.
	Strategy Strategy `json:",omitempty"`
	// Samples is how many answers a vote draws, 1 to 15 (default 5); single
	// takes 1; debate none.
	Samples int `json:",omitempty"`
	// Temperature samples Logos in a vote (default 0.7) or single run
	// (default 0), 0 to 2; debate calls run at 0 and take none.
	Temperature *float64 `json:",omitempty"`
}

// Normalize applies defaults and validates the input.
func (in ConsensusInput) Normalize() (ConsensusInput, error) {
	if strings.TrimSpace(in.Prompt) == "" {
		return in, errors.New("prompt is empty")
	}
	if len(in.Prompt) > 64<<10 {
		return in, fmt.Errorf("prompt is %d bytes; the limit is 65536", len(in.Prompt))
	}
	if in.Project == "" {
		in.Project = DefaultProject
	}
	if err := store.ValidProjectID(in.Project); err != nil {
		return in, err
	}
	if in.Threshold == 0 {
		in.Threshold = DefaultThreshold
	}
	if !(in.Threshold > 0 && in.Threshold <= 1) {
		return in, fmt.Errorf("threshold %v is outside (0, 1]", in.Threshold)
	}
	if in.MaxRounds == 0 {
		in.MaxRounds = DefaultMaxRounds
	}
	if in.MaxRounds < 1 || in.MaxRounds > MaxRounds {
		return in, fmt.Errorf("max rounds %d is outside 1..%d", in.MaxRounds, MaxRounds)
	}
	p, err := ParsePlacement(string(in.Placement))
	if err != nil {
		return in, err
	}
	in.Placement = p
	if in.Placement == PlacementHub && in.HubQueue == "" {
		return in, errors.New("placement hub needs a hub")
	}
	if in.StepTimeout == 0 {
		in.StepTimeout = DefaultStepTimeout
	}
	if in.MaxTokens == 0 {
		in.MaxTokens = DefaultMaxTokens
	}
	if in.MaxTokens < 16 || in.MaxTokens > MaxMaxTokens {
		return in, fmt.Errorf("max tokens %d is outside 16..%d", in.MaxTokens, MaxMaxTokens)
	}
	if in.Resume != nil && in.Resume.Round < 0 {
		return in, fmt.Errorf("resume round %d is negative", in.Resume.Round)
	}
	if err := in.normalizeStrategy(); err != nil {
		return in, err
	}
	return in, nil
}

// RoundState is one round's outputs so far.
type RoundState struct {
	Round        int                   `json:"round"`
	Solution     *synapse.Solution     `json:"solution,omitempty"`
	Verification *synapse.Verification `json:"verification,omitempty"`
	Score        float64               `json:"score"`
}

// ConsensusState is the live and final state of a consensus.
type ConsensusState struct {
	Status   string `json:"status"`
	Question string `json:"question"`
	// Strategy is how the run answers (debate, vote or single); Samples and
	// Temperature how a vote or single run samples Logos.
	Strategy    Strategy `json:"strategy"`
	Samples     int      `json:"samples,omitempty"`
	Temperature *float64 `json:"temperature,omitempty"`
	// Votes are a vote's samples, as they end while the samples run and in
	// sample order once they all have; Winner is the winning sample's index
	// and WinnerVotes how many samples gave its answer.
	Votes       []Vote `json:"votes,omitempty"`
	Winner      int    `json:"winner,omitempty"`
	WinnerVotes int    `json:"winner_votes,omitempty"`
	// ContinuedFrom is the run this one continues.
	ContinuedFrom string  `json:"continued_from,omitempty"`
	Project       string  `json:"project"`
	Account       string  `json:"account,omitempty"`
	Threshold     float64 `json:"threshold"`
	// Round is the round in progress, or the last one.
	Round     int    `json:"round"`
	LastRound int    `json:"last_round"`
	Placement string `json:"placement"` // the task queue inference runs on
	// PlacementNote says why inference runs where it does.
	PlacementNote string            `json:"placement_note,omitempty"`
	Manifest      *synapse.Manifest `json:"manifest,omitempty"`
	Rounds        []RoundState      `json:"rounds"`
	Arbiter       *synapse.Verdict  `json:"arbiter,omitempty"`
	Answer        string            `json:"answer,omitempty"`
	// Score is the consensus score of the last round.
	Score float64                 `json:"score"`
	Usage []activities.AgentUsage `json:"usage"`
	// Tokens is the prompt and completion tokens of every step that ran;
	// Gross what the ledger priced the steps billed so far at (cost basis
	// times the tier multiplier, before credits) and Charged what it
	// charged for them (after credits), in micro-dollars.
	Tokens  int64        `json:"tokens"`
	Gross   money.Micros `json:"gross_micros"`
	Charged money.Micros `json:"charged_micros"`
	// Error is the failure in one sentence (no activity or task internals);
	// ErrorType is its type (CreditCeiling, RoundFailed, ...).
	Error     string `json:"error,omitempty"`
	ErrorType string `json:"error_type,omitempty"`
	// StepLog is every agent step that ended, in order: where it ran, its
	// model or adapter, tokens and duration. Current is the step in
	// progress, nil between steps and at the end.
	StepLog []StepRecord `json:"step_log"`
	Current *StepRecord  `json:"current,omitempty"`
	// Steps counts completed agent steps; watchers poll it to see progress.
	Steps int `json:"steps"`
	// UpdatedAt is when the workflow recorded the last step.
	UpdatedAt time.Time `json:"updated_at"`
	// Final is set once the run succeeded and all that is left is to
	// return (every step billed, the admission hold released, the run
	// recorded): a watcher may take this state as the result without
	// waiting for the close to reach it.
	Final bool `json:"final,omitempty"`
}

// StepRecord is one agent step as the live page shows it.
type StepRecord struct {
	// ID is the step's activity id (r<round>-<agent>[-retryN|-cloud]); the
	// ledger's event for it is <workflow id>/<ID>.
	ID    string `json:"id"`
	Round int    `json:"round"`
	Agent string `json:"agent"`
	// Queue is the task queue the step was sent to; RanOn the worker's
	// queue that answered (hub.<device> or the cloud's), Hub the device id
	// when that was a hub.
	Queue string `json:"queue"`
	// Why is the placement's reason when the step was sent (the least
	// loaded healthy hub, or why the cloud).
	Why   string `json:"why,omitempty"`
	RanOn string `json:"ran_on,omitempty"`
	Hub   string `json:"hub,omitempty"`
	// Model is the model that answered; Adapter the LoRA Logos used, if any.
	Model            string `json:"model,omitempty"`
	Adapter          string `json:"adapter,omitempty"`
	PromptTokens     int    `json:"prompt_tokens"`
	CompletionTokens int    `json:"completion_tokens"`
	// UsageEstimated marks tokens the server did not report, estimated
	// (and billed) at four bytes a token.
	UsageEstimated bool `json:"usage_estimated,omitempty"`
	// UsageClipped marks a step whose worker reported more tokens than
	// the step's bound: it is billed (and shows) the bound.
	UsageClipped bool      `json:"usage_clipped,omitempty"`
	StartedAt    time.Time `json:"started_at"`
	// DurationMS is how long the step took, in workflow time.
	DurationMS int64 `json:"duration_ms"`
	// Failed marks a call that ran in a step that failed (it is billed).
	Failed bool `json:"failed,omitempty"`
	// Sample is a vote's sample index (1 to Samples), 0 for other steps.
	Sample int `json:"sample,omitempty"`
	// Charged is what the ledger charged for the step, once billed.
	Charged money.Micros `json:"charged_micros,omitempty"`
}

// hubOf is the device id of a hub task queue, or "".
func hubOf(queue string) string {
	d, ok := strings.CutPrefix(queue, "hub.")
	if !ok {
		return ""
	}
	return d
}

// Feedback is Ethos's feedback from the last verified round, for Resume.
func (s *ConsensusState) Feedback() string {
	for i := len(s.Rounds) - 1; i >= 0; i-- {
		if v := s.Rounds[i].Verification; v != nil {
			return v.Feedback
		}
	}
	return ""
}

// LastAnswer is the run's answer, or for a run that failed the last
// solution it reached, for Resume.
func (s *ConsensusState) LastAnswer() string {
	if s.Answer != "" {
		return s.Answer
	}
	for i := len(s.Rounds) - 1; i >= 0; i-- {
		if sol := s.Rounds[i].Solution; sol != nil {
			return sol.Answer
		}
	}
	return ""
}

// ConsensusWorkflow is the Cloud Synapse: Pathos reads the intent, then each
// round Logos answers and Ethos verifies, until the score reaches the
// threshold or the rounds run out and the Arbiter decides.
func ConsensusWorkflow(ctx workflow.Context, in ConsensusInput) (*ConsensusState, error) {
	in, err := in.Normalize()
	if err != nil {
		return nil, temporal.NewNonRetryableApplicationError(err.Error(), ErrInvalidInput, nil)
	}
	c := &consensus{in: in, cloud: in.CloudQueue}
	if c.cloud == "" {
		c.cloud = workflow.GetInfo(ctx).TaskQueueName
	}
	c.state = ConsensusState{Status: StatusRunning, Question: in.Prompt, Project: in.Project, Account: in.Account, Threshold: in.Threshold,
		Rounds: []RoundState{}, Usage: []activities.AgentUsage{}, StepLog: []StepRecord{},
		Strategy: in.Strategy, Temperature: in.Temperature}
	if in.Strategy != StrategyDebate {
		c.state.Samples = in.Samples
	}
	if in.Resume != nil {
		c.state.ContinuedFrom = in.Resume.From
	}
	if err := workflow.SetQueryHandler(ctx, QueryState, func() (ConsensusState, error) { return c.state, nil }); err != nil {
		return nil, err
	}
	if err := c.run(ctx); err != nil {
		var ae *temporal.ApplicationError
		if errors.As(err, &ae) && ae.Type() == activities.ErrLedgerUnreachable && len(c.state.Usage) == 0 &&
			workflow.GetVersion(ctx, versionLedgerDownKey, workflow.DefaultVersion, versionLedgerDown) == versionLedgerDown {
			// Nothing ran and nothing can be billed; recording the failure
			// waits for PostgreSQL in a workflow of its own, so that this
			// run fails now with the reason.
			c.state.Status, c.state.Current = StatusFailed, nil
			c.state.Error, c.state.ErrorType = ae.Message(), ae.Type()
			c.recordLater(ctx)
			return nil, err
		}
		// Steps that ran are billed even when a later one failed, before
		// the status says the run is over.
		if berr := c.bill(ctx); berr != nil {
			workflow.GetLogger(ctx).Error("billing the steps that ran failed", "error", berr)
		}
		c.state.Status = StatusFailed
		c.state.Current = nil
		// The message alone: Error() would append the activity error's
		// chain (event ids, worker identity) and repeat the cause.
		c.state.Error, c.state.ErrorType = err.Error(), ""
		if errors.As(err, &ae) {
			c.state.Error, c.state.ErrorType = ae.Message(), ae.Type()
		}
		c.release(ctx)
		// A run whose guest check failed is no one's to record.
		if !c.refused || workflow.GetVersion(ctx, versionRefusedKey, workflow.DefaultVersion, versionRefused) != versionRefused {
			c.record(ctx)
		}
		return nil, err
	}
	c.release(ctx)
	c.record(ctx)
	c.state.Final = true
	return &c.state, nil
}

type consensus struct {
	in    ConsensusInput
	cloud string
	queue string
	state ConsensusState
	// stepIDs are the activity ids of the steps in state.Usage, in order.
	stepIDs []string
	stepID  string // the id of the step in progress
	billed  int    // steps already billed
	// refused marks a run whose guest check failed: it is not recorded.
	refused bool
	// stepIDs0 marks a run recorded before versionStepIDs: the SDK picks
	// activity ids and nothing is billed.
	stepIDs0 bool
	// admit marks a run from versionAdmission on: it reserves a hold before
	// inference, bounds every call, and bills failed calls too.
	admit bool
	// hold is the run's reservation (held is false without one); holdUsed
	// is the priced bound of every step started so far, which the hold
	// always covers before a step starts.
	hold     store.Hold
	held     bool
	holdUsed money.Micros
	// stepBudget and stepOnHub are the bound of the step in progress and
	// whether it ran on a hub's queue.
	stepBudget activities.Budget
	stepOnHub  bool
	// clampAll marks a run from versionClampCloud on: every step's usage,
	// a cloud backend's too, is billed at most the step's bound.
	clampAll bool
	// perStep marks a run from versionPerStep on that places each step
	// among its account's hubs.
	perStep bool
	// sample is the vote sample the step in progress draws, 0 for none.
	sample int
	// queueHeartbeats: placement said the hub behind queue heartbeats its
	// steps, so they get a heartbeat timeout. Without it (an older hub, a
	// hub the registry does not know, an older worker's result) a hub step
	// runs with none and StartToClose bounds it. Activity options are not
	// compared on replay: recorded histories keep their commands.
	queueHeartbeats bool
	// queueSampling: placement said the hub behind queue honours a call's
	// temperature and seed; without it a vote's samples run in the cloud.
	queueSampling bool
}

// versionAdmission is the workflow version that reserves the run's worst
// case before inference, gives each step a Budget (max_tokens and a prompt
// bound), tops the hold up when a step's exact bound needs it, bills the
// usage that failed steps carry, retries a step whose call ran and then
// failed under a new id, and releases the hold at the end.
//
// The bound on overshoot: every event a run bills is within its step's
// Budget.EventBound when the inference server honours max_tokens and counts
// at most one prompt token a byte plus activities.MessageOverhead a message,
// and the hold covers that bound priced at the most expensive model and the
// account's multiplier before the step starts. So, with such a server and
// prices and multipliers not raised during the run, concurrent runs never
// pass the credit ceiling or a guest's quota: the overshoot is zero. A
// server that reports more tokens is still billed what it reports; the
// overshoot is then what its events count beyond their bounds. Calls whose
// answer never came back (a step timed out, or a hub's abandoned step) are
// not billed: their usage is unknown.
const versionAdmission = 1

// versionClampCloud is the workflow version that bills every step, not
// only a hub's, at most its Budget.EventBound: a cloud backend or an
// agent's own server that over-reports is clipped too.
const versionClampCloud = 1

const versionClampCloudKey = "clamp-cloud-usage"

// versionLedgerDown is the workflow version that fails a run whose
// account check found PostgreSQL unreachable at once, and leaves recording
// it (and releasing a hold the API may have taken) to RecordRunWorkflow.
const versionLedgerDown = 1

const versionLedgerDownKey = "ledger-unreachable-record-later"

// versionRefused is the workflow version that records nothing of a run
// whose guest check failed.
const versionRefused = 1

const versionRefusedKey = "refused-unrecorded"

// versionStepIDs is the workflow version that names each step's activity
// (r<round>-<agent>) and bills it; runs recorded before it replay without.
const versionStepIDs = 1

// versionStrategies is the workflow version that runs the vote and single
// strategies. A worker from before it ran every input as a debate, so a
// history without the marker replays as a debate whatever its input says;
// a debate records no marker.
const versionStrategies = 1

const versionStrategiesKey = "strategies"

func (c *consensus) run(ctx workflow.Context) error {
	c.stepIDs0 = workflow.GetVersion(ctx, "step-ids-and-billing", workflow.DefaultVersion, versionStepIDs) == workflow.DefaultVersion
	c.admit = !c.stepIDs0 && workflow.GetVersion(ctx, "admission", workflow.DefaultVersion, versionAdmission) == versionAdmission
	c.clampAll = c.admit && workflow.GetVersion(ctx, versionClampCloudKey, workflow.DefaultVersion, versionClampCloud) == versionClampCloud
	if c.in.Strategy != StrategyDebate &&
		workflow.GetVersion(ctx, versionStrategiesKey, workflow.DefaultVersion, versionStrategies) == workflow.DefaultVersion {
		c.asDebate()
	}
	actx := workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
		TaskQueue:           c.cloud,
		StartToCloseTimeout: 10 * time.Second,
		RetryPolicy:         &temporal.RetryPolicy{InitialInterval: 200 * time.Millisecond, MaximumAttempts: 5},
	})
	var r *activities.Records
	if c.in.GuestSession != "" {
		// A guest runs on the host's account, which the session names.
		var g store.GuestSession
		if err := workflow.ExecuteActivity(actx, r.CheckGuest, c.in.GuestSession, c.in.Account).Get(ctx, &g); err != nil {
			c.refuse(true)
			return passType(err, "guest check")
		}
		c.in.Account, c.in.Project = g.Host, g.Project
		c.state.Account, c.state.Project = g.Host, g.Project
	}
	if c.in.Account != "" && !c.stepIDs0 {
		if err := workflow.ExecuteActivity(actx, r.CheckAccount, c.in.Account).Get(ctx, nil); err != nil {
			c.refuse(false)
			return passType(err, "account check")
		}
		// The caller must own or edit a named project (a new one becomes
		// theirs); a guest's role was checked with the session.
		if c.in.GuestSession == "" && workflow.GetVersion(ctx, "project-roles", workflow.DefaultVersion, 1) == 1 {
			if err := workflow.ExecuteActivity(actx, r.CheckProject, c.in.Account, c.in.Project).Get(ctx, nil); err != nil {
				c.refuse(false)
				return passType(err, "project check")
			}
		}
	}
	if err := c.place(ctx); err != nil {
		return err
	}
	var inf *activities.Inference
	first, feedback, earlier := 1, "", ""
	if r := c.in.Resume; r != nil {
		first, feedback, earlier = r.Round+1, r.Feedback, r.Answer
		if r.Manifest != nil {
			m := *r.Manifest
			c.state.Manifest = &m
		}
	}
	last := first + c.in.MaxRounds - 1
	c.state.LastRound = last
	if c.in.Strategy != StrategyDebate {
		c.state.LastRound = first
	}
	if err := c.admitRun(ctx); err != nil {
		return err
	}
	if c.in.Strategy != StrategyDebate {
		return c.runSamples(ctx, first, feedback, earlier)
	}
	if c.state.Manifest == nil {
		var out activities.PathosOutput
		pi := activities.PathosInput{Question: c.in.Prompt}
		pi.Budget = c.budget(synapse.PathosPrompt(pi.Question))
		if err := c.step(ctx, first, "pathos", inf.Pathos, pi, pi.Budget, &out); err != nil {
			return err
		}
		c.state.Manifest = &out.Manifest
		c.done(ctx, out.Usage)
	}
	m := *c.state.Manifest
	for round := first; round <= last; round++ {
		c.state.Round = round
		c.state.Rounds = append(c.state.Rounds, RoundState{Round: round})
		rs := &c.state.Rounds[len(c.state.Rounds)-1]

		var lo activities.LogosOutput
		li := c.logosInput(round, m, feedback, earlier)
		if err := c.step(ctx, round, "logos", inf.Logos, li, li.Budget, &lo); err != nil {
			return err
		}
		rs.Solution = &lo.Solution
		c.done(ctx, lo.Usage)

		var eo activities.EthosOutput
		ei := activities.EthosInput{Question: c.in.Prompt, Manifest: m, Solution: lo.Solution, Round: round}
		ei.Budget = c.budget(synapse.EthosPrompt(ei.Question, ei.Manifest, ei.Solution, ei.Round))
		if err := c.step(ctx, round, "ethos", inf.Ethos, ei, ei.Budget, &eo); err != nil {
			return err
		}
		rs.Verification = &eo.Verification
		rs.Score = synapse.Score(m, lo.Solution, eo.Verification)
		c.state.Score = rs.Score
		c.done(ctx, eo.Usage)
		if err := c.bill(ctx); err != nil {
			return err
		}

		if rs.Score >= c.in.Threshold {
			c.state.Status = StatusConsensus
			c.state.Answer = lo.Solution.Answer
			return nil
		}
		feedback = eo.Verification.Feedback
	}

	records := make([]synapse.RoundRecord, 0, len(c.state.Rounds))
	for _, r := range c.state.Rounds {
		records = append(records, synapse.RoundRecord{Round: r.Round, Solution: *r.Solution, Verification: *r.Verification, Score: r.Score})
	}
	var ao activities.ArbiterOutput
	ai := activities.ArbiterInput{Question: c.in.Prompt, Manifest: m, Rounds: records}
	ai.Budget = c.budget(synapse.ArbiterPrompt(ai.Question, ai.Manifest, ai.Rounds))
	if err := c.step(ctx, last, "arbiter", inf.Arbiter, ai, ai.Budget, &ao); err != nil {
		return err
	}
	c.state.Arbiter = &ao.Verdict
	c.state.Answer = ao.Verdict.Answer
	c.done(ctx, ao.Usage)
	if err := c.bill(ctx); err != nil {
		return err
	}
	// The status changes once the last step is billed: a viewer that stops
	// at the final state sees every step's charge.
	c.state.Status = StatusArbiter
	return nil
}

// asDebate runs the input as the debate a worker from before strategies
// ran it as.
func (c *consensus) asDebate() {
	c.in.Strategy, c.in.Samples, c.in.Temperature = StrategyDebate, 0, nil
	c.state.Strategy, c.state.Samples, c.state.Temperature = StrategyDebate, 0, nil
}

// logosInput asks Logos for round's answer.
func (c *consensus) logosInput(round int, m synapse.Manifest, feedback, earlier string) activities.LogosInput {
	li := activities.LogosInput{Question: c.in.Prompt, Manifest: m, Round: round, Feedback: feedback, LoRA: c.in.LoRA, Account: c.in.Account, Earlier: earlier}
	li.Budget = c.budget(li.Prompt())
	return li
}

// bill logs the usage of the steps since the last bill, one event a step,
// with event ids made of the workflow id and the step's activity id, so a
// retry of either activity never charges twice.
func (c *consensus) bill(ctx workflow.Context) error {
	if c.in.Account == "" || c.stepIDs0 || c.billed == len(c.state.Usage) {
		return nil
	}
	wid := workflow.GetInfo(ctx).WorkflowExecution.ID
	var events []store.Usage
	for i, u := range c.state.Usage[c.billed:] {
		ev := store.Usage{
			EventID: wid + "/" + c.stepIDs[c.billed+i], Account: c.in.Account, Project: c.in.Project, Model: u.Model,
			GuestSession: c.in.GuestSession,
			PromptTokens: int64(u.PromptTokens), CompletionTokens: int64(u.CompletionTokens),
		}
		if c.held {
			ev.Hold = c.hold.ID
		}
		events = append(events, ev)
	}
	actx := workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
		TaskQueue:           c.cloud,
		StartToCloseTimeout: 10 * time.Second,
		RetryPolicy:         &temporal.RetryPolicy{InitialInterval: 200 * time.Millisecond, MaximumInterval: 10 * time.Second},
	})
	var l *activities.Ledger
	var charges []store.Charge
	if err := workflow.ExecuteActivity(actx, l.LogUsage, events).Get(ctx, &charges); err != nil {
		return passType(err, "billing")
	}
	c.billed = len(c.state.Usage)
	c.priced(wid, charges)
	return nil
}

// priced adds what the ledger charged for the steps just billed to the
// state: the run's cost and each step's row. It issues no command.
func (c *consensus) priced(wid string, charges []store.Charge) {
	for _, ch := range charges {
		c.state.Gross += ch.Gross
		c.state.Charged += ch.Charged
		for i := range c.state.StepLog {
			if wid+"/"+c.state.StepLog[i].ID == ch.EventID {
				c.state.StepLog[i].Charged = ch.Charged
			}
		}
	}
}

// place picks the task queue inference runs on.
func (c *consensus) place(ctx workflow.Context) error {
	c.queue = c.cloud
	switch {
	case c.in.Placement == PlacementCloud:
		c.state.PlacementNote = "placement cloud"
	case c.in.HubQueue == "":
		c.state.PlacementNote = "no hub given"
	case c.in.Account != "" && workflow.GetVersion(ctx, versionPerStepKey, workflow.DefaultVersion, versionPerStep) == versionPerStep:
		// Each step picks among the account's hubs (pick); HubQueue only
		// asks for hub placement, and is not trusted to name the hub.
		c.perStep = true
		c.state.PlacementNote = "placed per step among account " + c.in.Account + "'s hubs"
	default:
		actx := workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
			TaskQueue:           c.cloud,
			StartToCloseTimeout: 5 * time.Second,
			RetryPolicy:         &temporal.RetryPolicy{InitialInterval: 200 * time.Millisecond, MaximumAttempts: 3},
		})
		var p *activities.Placement
		var st activities.HubStatus
		if err := workflow.ExecuteActivity(actx, p.HubAvailable, c.in.HubQueue).Get(ctx, &st); err != nil {
			st = activities.HubStatus{Reason: "hub check failed: " + err.Error()}
		}
		switch {
		case st.Healthy:
			c.queue = c.in.HubQueue
			c.queueHeartbeats, c.queueSampling = st.Heartbeats, st.Sampling
			c.state.PlacementNote = "hub is healthy"
		case c.in.Placement == PlacementHub:
			return temporal.NewNonRetryableApplicationError("hub unavailable: "+st.Reason, ErrHubUnavailable, nil)
		default:
			c.state.PlacementNote = "hub unavailable (" + st.Reason + "); running on " + c.cloud
		}
	}
	c.state.Placement = c.queue
	return nil
}

// versionPerStep is the workflow version that places each step on the
// least loaded healthy hub of the run's account (Placement.PickHub) instead
// of checking the one named hub once per run.
const versionPerStep = 1

const versionPerStepKey = "placement-per-step"

// pick places the next step among the account's hubs, or in the cloud; a
// vote's sample (sampling) only on a hub that honours temperature and seed.
func (c *consensus) pick(ctx workflow.Context, sampling bool) error {
	actx := workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
		TaskQueue:           c.cloud,
		StartToCloseTimeout: 5 * time.Second,
		RetryPolicy:         &temporal.RetryPolicy{InitialInterval: 200 * time.Millisecond, MaximumAttempts: 3},
	})
	var p *activities.Placement
	var ch activities.HubChoice
	if err := workflow.ExecuteActivity(actx, p.PickHub, activities.PickHubInput{Account: c.in.Account, Prefer: c.in.HubQueue, Sampling: sampling}).Get(ctx, &ch); err != nil {
		ch = activities.HubChoice{Note: "cloud: the hub check failed: " + cause(err)}
	}
	if ch.Queue == "" && c.in.Placement == PlacementHub {
		return temporal.NewNonRetryableApplicationError("hub unavailable: "+strings.TrimPrefix(ch.Note, "cloud: "), ErrHubUnavailable, nil)
	}
	c.queue, c.queueHeartbeats, c.queueSampling = ch.Queue, ch.Heartbeats, ch.Sampling
	if c.queue == "" {
		c.queue = c.cloud
	}
	c.state.Placement, c.state.PlacementNote = c.queue, ch.Note
	return nil
}

// step runs one agent activity, with the activity id round-agent. A hub
// that does not pick the step up in time loses it to the cloud queue when
// placement allows. From versionAdmission on, the hold covers the step's
// bound b before it starts, a failed step's usage is billed, and a step
// whose call ran and then failed is run again under a new id.
//
// A vote's samples run as steps side by side (in coroutines, which yield
// only where they block): the step keeps its own id, bound and record in
// locals and makes them the step in progress's again after every call that
// blocks, so that what it bills, and the done that follows its return
// (which does not block), are its own.
func (c *consensus) step(ctx workflow.Context, round int, agent string, fn, arg any, b activities.Budget, out any) error {
	sample := c.sample
	name := agent
	if sample > 0 {
		name = fmt.Sprintf("%s-s%d", agent, sample)
	}
	id := fmt.Sprintf("r%d-%s", round, name)
	c.stepID = id
	// A vote's sample, or a Logos call at a temperature, needs a backend
	// that honours temperature and seed.
	sampled := sample > 0 || (agent == "logos" && c.in.Strategy != StrategyDebate && c.in.Temperature != nil && *c.in.Temperature > 0)
	if c.perStep && !(agent == "logos" && c.in.LoRA != "") {
		if err := c.pick(ctx, sampled); err != nil {
			return err
		}
	}
	retries := 0
	for {
		if err := c.cover(ctx, b); err != nil {
			return err
		}
		queue, beats, why := c.queue, c.queueHeartbeats, c.state.PlacementNote
		if sampled && queue != c.cloud && !c.queueSampling {
			if c.in.Placement == PlacementHub {
				return temporal.NewNonRetryableApplicationError("hub "+hubOf(queue)+" does not sample: its version ignores temperature and seed, "+
					"so a vote's samples there would be copies; update the hub, or use placement auto to run the samples in the cloud", ErrHubUnavailable, nil)
			}
			why = hubOf(queue) + " does not sample (an older version ignores temperature and seed); this sample runs on " + c.cloud
			queue = c.cloud
		}
		if agent == "logos" && c.in.LoRA != "" {
			// Adapters live in the cloud registry and load into the cloud
			// backend; a hub serves base models.
			queue = c.cloud
		}
		opts := workflow.ActivityOptions{
			TaskQueue:           queue,
			StartToCloseTimeout: c.in.StepTimeout,
			HeartbeatTimeout:    StepHeartbeatTimeout,
			RetryPolicy: &temporal.RetryPolicy{
				InitialInterval:        time.Second,
				BackoffCoefficient:     2,
				MaximumInterval:        30 * time.Second,
				MaximumAttempts:        4,
				NonRetryableErrorTypes: []string{activities.ErrMalformedOutput, activities.ErrInferenceRejected},
			},
		}
		if !c.stepIDs0 {
			opts.ActivityID = id
		}
		onHub := queue != c.cloud
		if onHub {
			opts.ScheduleToStartTimeout = hubStartTimeout
			if !beats {
				// Only a hub that said so heartbeats its steps: with a
				// heartbeat timeout an older hub's every step longer than it
				// would fail. StartToClose bounds them, as before heartbeats.
				opts.HeartbeatTimeout = 0
			}
		}
		cur := &StepRecord{ID: id, Round: round, Agent: agent, Queue: queue, Why: why, Hub: hubOf(queue), StartedAt: workflow.Now(ctx),
			Sample: sample}
		if agent == "logos" {
			cur.Adapter = c.in.LoRA
		}
		c.stepID, c.stepBudget, c.stepOnHub, c.state.Current = id, b, onHub, cur
		err := workflow.ExecuteActivity(workflow.WithActivityOptions(ctx, opts), fn, arg).Get(ctx, out)
		c.stepID, c.stepBudget, c.stepOnHub, c.state.Current = id, b, onHub, cur
		if err == nil {
			return nil
		}
		var ae *temporal.ApplicationError
		if c.admit && errors.As(err, &ae) {
			var u activities.AgentUsage
			if ae.HasDetails() && ae.Details(&u) == nil && u.PromptTokens+u.CompletionTokens > 0 {
				// The call ran: it is billed with the steps, under this attempt's id.
				u.Failed = true
				c.recordUsage(ctx, u)
			}
			if ae.Type() == activities.ErrFailedAfterUse && retries < stepRetries {
				retries++
				id = fmt.Sprintf("r%d-%s-retry%d", round, name, retries)
				c.stepID = id
				continue
			}
		}
		var te *temporal.TimeoutError
		if onHub && c.in.Placement == PlacementAuto && errors.As(err, &te) &&
			te.TimeoutType() == enumspb.TIMEOUT_TYPE_SCHEDULE_TO_START {
			// A new activity id: the abandoned one may still run on the hub.
			id = fmt.Sprintf("r%d-%s-cloud", round, name)
			c.stepID = id
			c.queue = c.cloud
			c.state.Placement = c.cloud
			c.state.PlacementNote = "hub did not pick up work within " + hubStartTimeout.String() + "; moved to " + c.cloud
			continue
		}
		// An agent step's worker (a hub's, say) names its own error type:
		// only the entry checks may say the ledger is unreachable, which
		// skips billing.
		if errors.As(err, &ae) && ae.Type() == activities.ErrLedgerUnreachable {
			return temporal.NewNonRetryableApplicationError(fmt.Sprintf("round %d: ", round)+cause(err), ErrRoundFailed, err)
		}
		return passType(err, fmt.Sprintf("round %d", round))
	}
}

// passedTypes are the activity error types a consensus fails with as they are.
var passedTypes = []string{activities.ErrCreditCeiling, activities.ErrUnknownAccount, activities.ErrInsufficientHeadroom, activities.ErrLedgerUnreachable,
	activities.ErrLoRANotFound, activities.ErrLoRAUnavailable, activities.ErrLoRALoad, activities.ErrGuestQuota, activities.ErrProjectForbidden}

// passType fails the workflow with the activity's own error type when it is
// one callers act on (the credit ceiling, an unknown account), and as
// RoundFailed otherwise.
func passType(err error, where string) error {
	var ae *temporal.ApplicationError
	if errors.As(err, &ae) && slices.Contains(passedTypes, ae.Type()) {
		return temporal.NewNonRetryableApplicationError(ae.Message(), ae.Type(), err)
	}
	return temporal.NewNonRetryableApplicationError(where+": "+cause(err), ErrRoundFailed, err)
}

// budget bounds a step whose first prompt is p; runs before
// versionAdmission send no bounds.
func (c *consensus) budget(p synapse.Prompt) activities.Budget {
	if !c.admit {
		return activities.Budget{}
	}
	return activities.StepBudget(p, c.in.MaxTokens)
}

// WorstCase is what admission reserves for a run of normalized input in: a
// token bound per step it may take (for a debate every round's Logos and
// Ethos, Pathos unless resumed with a manifest, and the Arbiter; for a vote
// every sample and Ethos; for single the one Logos answer; each model output
// taken at four bytes a token of MaxTokens), and how long the hold lasts. The API
// reserves the same before it starts the workflow. A step whose exact bound
// turns out larger raises the hold before it starts.
func WorstCase(in ConsensusInput) ([]store.TokenBound, time.Duration) {
	first := 1
	m := synapse.Manifest{}
	resumed := false
	feedback, earlier := "", ""
	if r := in.Resume; r != nil {
		first, feedback, earlier = r.Round+1, r.Feedback, r.Answer
		if r.Manifest != nil {
			m, resumed = *r.Manifest, true
		}
	}
	last := first + in.MaxRounds - 1
	out := strings.Repeat("x", 4*in.MaxTokens)
	if !resumed {
		m = synapse.Manifest{Intent: out}
	}
	sol := synapse.Solution{Answer: out}
	ver := synapse.Verification{Feedback: out}
	var bs []store.TokenBound
	add := func(p synapse.Prompt) {
		pt, ct := activities.StepBudget(p, in.MaxTokens).EventBound()
		bs = append(bs, store.TokenBound{PromptTokens: pt, CompletionTokens: ct})
	}
	if in.Strategy == StrategyVote || in.Strategy == StrategySingle {
		for range in.Samples {
			add(synapse.LogosPrompt(in.Prompt, synapse.Manifest{}, first, feedback, in.LoRA).WithEarlier(earlier))
		}
		if in.Strategy == StrategyVote {
			add(synapse.EthosPrompt(in.Prompt, synapse.Manifest{}, sol, first))
		}
		return bs, holdTTL(in, len(bs))
	}
	if !resumed {
		add(synapse.PathosPrompt(in.Prompt))
	}
	var records []synapse.RoundRecord
	for round := first; round <= last; round++ {
		add(synapse.LogosPrompt(in.Prompt, m, round, longer(out, feedback), in.LoRA).WithEarlier(earlier))
		add(synapse.EthosPrompt(in.Prompt, m, sol, round))
		records = append(records, synapse.RoundRecord{Round: round, Solution: sol, Verification: ver})
	}
	add(synapse.ArbiterPrompt(in.Prompt, m, records))
	return bs, holdTTL(in, len(bs))
}

// longer is the longer of a and b.
func longer(a, b string) string {
	if len(b) > len(a) {
		return b
	}
	return a
}

// maxSteps is how many steps a run of in may take, retries aside.
func maxSteps(in ConsensusInput) int {
	switch in.Strategy {
	case StrategyVote:
		return in.Samples + 1
	case StrategySingle:
		return in.Samples
	}
	return 2*in.MaxRounds + 2
}

// holdTTL is how long a hold lasts: every step and its retries at their
// longest, and ten minutes more.
func holdTTL(in ConsensusInput, steps int) time.Duration {
	return time.Duration(steps*(1+stepRetries))*(4*in.StepTimeout+hubStartTimeout+time.Minute) + 10*time.Minute
}

func (c *consensus) ledgerCtx(ctx workflow.Context) workflow.Context {
	return workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
		TaskQueue:           c.cloud,
		StartToCloseTimeout: 10 * time.Second,
		RetryPolicy:         &temporal.RetryPolicy{InitialInterval: 200 * time.Millisecond, MaximumInterval: 10 * time.Second, MaximumAttempts: 10},
	})
}

// admitRun reserves the run's worst case before any inference; a run the
// account or the guest's session cannot cover fails with
// InsufficientHeadroom and nothing runs.
func (c *consensus) admitRun(ctx workflow.Context) error {
	if !c.admit || c.in.Account == "" {
		return nil
	}
	bs, ttl := WorstCase(c.in)
	in := activities.ReserveInput{Hold: workflow.GetInfo(ctx).WorkflowExecution.ID, Account: c.in.Account, GuestSession: c.in.GuestSession,
		Bounds: bs, TTL: ttl}
	var l *activities.Ledger
	if err := workflow.ExecuteActivity(c.ledgerCtx(ctx), l.Reserve, in).Get(ctx, &c.hold); err != nil {
		return passType(err, "admission")
	}
	c.held = true
	return nil
}

// holdRenew is the change id of renewing a hold near its expiry in cover.
const holdRenew = "hold-renew-near-expiry"

// cover makes the hold cover every step started so far and the next one
// (bound b) before it starts, raising it when the estimate fell short, and
// renewing it when it would lapse before the step can end (a run that
// stalled: a lapsed hold frees its headroom while the run bills against it).
func (c *consensus) cover(ctx workflow.Context, b activities.Budget) error {
	if !c.held {
		return nil
	}
	pt, ct := b.EventBound()
	p, err := c.hold.Price(store.TokenBound{PromptTokens: pt, CompletionTokens: ct})
	if err != nil {
		return temporal.NewNonRetryableApplicationError("pricing a step: "+err.Error(), ErrRoundFailed, err)
	}
	need := c.holdUsed + p
	renew := false
	if need <= c.hold.Amount && !c.hold.ExpiresAt.IsZero() && c.hold.ExpiresAt.Sub(workflow.Now(ctx)) < holdTTL(c.in, 1) {
		renew = workflow.GetVersion(ctx, holdRenew, workflow.DefaultVersion, 1) == 1
	}
	// Claimed before the reservation blocks, so that a sample side by side
	// prices its step on top of this one.
	c.holdUsed = need
	if need > c.hold.Amount || renew {
		in := activities.ReserveInput{Hold: c.hold.ID, Account: c.in.Account, GuestSession: c.in.GuestSession, Target: need,
			TTL: holdTTL(c.in, maxSteps(c.in))}
		var l *activities.Ledger
		var h store.Hold
		if err := workflow.ExecuteActivity(c.ledgerCtx(ctx), l.Reserve, in).Get(ctx, &h); err != nil {
			return passType(err, "raising the run's hold")
		}
		if h.Amount >= c.hold.Amount {
			c.hold = h
		}
	}
	return nil
}

// release frees what the hold did not settle; should it fail, the hold
// expires by itself. A run that failed before its own reservation releases
// too: the API may have taken the hold under the run's id.
func (c *consensus) release(ctx workflow.Context) {
	if !c.held && !(c.admit && c.in.Account != "") {
		return
	}
	id := c.hold.ID
	if id == "" {
		id = workflow.GetInfo(ctx).WorkflowExecution.ID
	}
	var l *activities.Ledger
	actx := workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
		TaskQueue:              c.cloud,
		StartToCloseTimeout:    10 * time.Second,
		ScheduleToCloseTimeout: 2 * time.Minute,
		RetryPolicy:            &temporal.RetryPolicy{InitialInterval: time.Second, MaximumInterval: 10 * time.Second},
	})
	if err := workflow.ExecuteActivity(actx, l.Release, id).Get(ctx, nil); err != nil {
		workflow.GetLogger(ctx).Error("releasing the run's hold failed; it expires by itself", "hold", id, "error", err)
	}
}

// trusted is the usage a step reported as the ledger may bill it: never
// negative, and never more than the step's bound: from a hub (which holds
// only its device certificate and reports its own counts) always, from the
// cloud's backend from versionClampCloud on, so no worker can bill an
// account past the run's hold. clipped says whether the bound cut it.
func (c *consensus) trusted(u activities.AgentUsage) (_ activities.AgentUsage, clipped bool) {
	if !c.admit {
		return u, false
	}
	u.PromptTokens, u.CompletionTokens = max(u.PromptTokens, 0), max(u.CompletionTokens, 0)
	if (c.stepOnHub || c.clampAll) && c.stepBudget.MaxTokens > 0 {
		pt, ct := c.stepBudget.EventBound()
		clipped = int64(u.PromptTokens) > pt || int64(u.CompletionTokens) > ct
		u.PromptTokens, u.CompletionTokens = min(u.PromptTokens, int(pt)), min(u.CompletionTokens, int(ct))
	}
	return u, clipped
}

// recordUsage adds a step's usage u, as trusted bills it, to the usage to bill
// and the step log; a clipped count is logged and marked on the step's row.
func (c *consensus) recordUsage(ctx workflow.Context, u activities.AgentUsage) {
	t, clipped := c.trusted(u)
	c.state.Usage = append(c.state.Usage, t)
	c.stepIDs = append(c.stepIDs, c.stepID)
	c.logStep(ctx, t)
	if clipped {
		workflow.GetLogger(ctx).Warn("a step reported more tokens than its bound; billed the bound", "step", c.stepID,
			"prompt_tokens", u.PromptTokens, "completion_tokens", u.CompletionTokens,
			"billed_prompt_tokens", t.PromptTokens, "billed_completion_tokens", t.CompletionTokens)
		c.state.StepLog[len(c.state.StepLog)-1].UsageClipped = true
	}
}

func (c *consensus) done(ctx workflow.Context, u activities.AgentUsage) {
	c.recordUsage(ctx, u)
	c.state.Current = nil
	c.state.Steps++
	c.state.UpdatedAt = workflow.Now(ctx)
}

// logStep adds the step in progress, with the usage u it reported, to the
// step log. It only reads workflow time: no command, so replay is unchanged.
func (c *consensus) logStep(ctx workflow.Context, u activities.AgentUsage) {
	rec := StepRecord{ID: c.stepID, Agent: string(u.Role), StartedAt: workflow.Now(ctx)}
	if cur := c.state.Current; cur != nil {
		rec = *cur
	}
	// The hub is the one the workflow sent the step to (only that device
	// polls its queue), not whatever the reply claims.
	rec.RanOn, rec.Hub = u.RanOn, hubOf(rec.Queue)
	rec.Model, rec.Failed = u.Model, u.Failed
	rec.PromptTokens, rec.CompletionTokens, rec.UsageEstimated = u.PromptTokens, u.CompletionTokens, u.UsageEstimated
	c.state.Tokens += int64(u.PromptTokens) + int64(u.CompletionTokens)
	rec.DurationMS = workflow.Now(ctx).Sub(rec.StartedAt).Milliseconds()
	c.state.StepLog = append(c.state.StepLog, rec)
}

// recordLater starts RecordRunWorkflow, which outlives this run, to record
// the outcome and release the run's hold once PostgreSQL answers.
func (c *consensus) recordLater(ctx workflow.Context) {
	wid := workflow.GetInfo(ctx).WorkflowExecution.ID
	in := RecordRunInput{Run: c.run0(ctx)}
	if c.admit && c.in.Account != "" {
		in.Hold = c.hold.ID
		if in.Hold == "" {
			in.Hold = wid
		}
	}
	cctx := workflow.WithChildOptions(ctx, workflow.ChildWorkflowOptions{
		WorkflowID:        wid + "/record",
		TaskQueue:         c.cloud,
		ParentClosePolicy: enumspb.PARENT_CLOSE_POLICY_ABANDON,
	})
	f := workflow.ExecuteChildWorkflow(cctx, RecordRunWorkflow, in)
	if err := f.GetChildWorkflowExecution().Get(ctx, nil); err != nil {
		workflow.GetLogger(ctx).Error("starting the run's record failed", "error", err)
	}
}

// run0 is the run's outcome as the records store it.
func (c *consensus) run0(ctx workflow.Context) store.ConsensusRun {
	return store.ConsensusRun{
		WorkflowID: workflow.GetInfo(ctx).WorkflowExecution.ID, Project: c.in.Project, Prompt: c.in.Prompt,
		Status: c.state.Status, Score: c.state.Score, Rounds: len(c.state.Rounds), Answer: c.state.Answer,
		Placement: c.state.Placement, Account: c.in.Account, Strategy: string(c.state.Strategy),
	}
}

// refuse marks the run refused by a check (or one that could not be made).
// From then on it names no project, so that no member of the project it
// named reads it, and it is recorded, if at all, under the default project
// of the account it named: the caller's own. A refused guest's run is not
// recorded (it would land on the host's page with the guest's text).
func (c *consensus) refuse(guest bool) {
	c.refused = guest
	c.in.Project, c.state.Project = DefaultProject, DefaultProject
}

// record stores the outcome; the answer stands even if the database is down.
func (c *consensus) record(ctx workflow.Context) {
	actx := workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
		TaskQueue:              c.cloud,
		StartToCloseTimeout:    10 * time.Second,
		ScheduleToCloseTimeout: 2 * time.Minute,
		RetryPolicy:            &temporal.RetryPolicy{InitialInterval: time.Second, MaximumInterval: 10 * time.Second},
	})
	var r *activities.Records
	run := c.run0(ctx)
	if err := workflow.ExecuteActivity(actx, r.RecordConsensus, run).Get(ctx, nil); err != nil {
		workflow.GetLogger(ctx).Error("recording the consensus failed", "error", err)
	}
}

// cause is the innermost application error's message, without the SDK's
// activity-error wrapping.
func cause(err error) string {
	var ae *temporal.ApplicationError
	if errors.As(err, &ae) {
		return ae.Message()
	}
	var te *temporal.TimeoutError
	if errors.As(err, &te) {
		return "timed out (" + te.TimeoutType().String() + ")"
	}
	return err.Error()
}
