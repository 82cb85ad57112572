package bridge

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"time"

	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/api/serviceerror"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/converter"

	"github.com/superinstance/mesh/hub/wire"
	"github.com/superinstance/mesh/internal/pki"
	"github.com/superinstance/mesh/internal/runner"
	"github.com/superinstance/mesh/internal/store"
	meshv1 "github.com/superinstance/mesh/proto/meshv1"
	"github.com/superinstance/mesh/workers"
	"github.com/superinstance/mesh/workflows"
)

// Temporal runs escalations and pre-warms as workflows on the cloud queue.
type Temporal struct {
	Client client.Client
	// Poll is how often an escalation's progress is read. Default 100ms.
	Poll time.Duration
	// Projects checks that a device's account may start runs in the
	// project a request names (a project new to the mesh becomes the
	// account's). Nil leaves the check to the consensus workflow alone,
	// which refuses such a run and records nothing of it.
	Projects ProjectClaimer
	// LoRAs checks that a device's account may use the adapters its
	// pre-warm signal names (its own, or one of a project it is a member
	// of: the rule an escalation's adapter meets). Nil leaves the check to
	// the warm-up workflow alone, which makes the same one before loading.
	LoRAs LoRAChecker
}

// LoRAChecker returns the adapter if account may use it, store.ErrNotFound
// if it may not (or no such adapter exists).
type LoRAChecker interface {
	LoRAFor(ctx context.Context, account, id string) (store.LoRA, error)
}

var _ LoRAChecker = (*store.Store)(nil)

// ProjectClaimer returns account's role in project, claiming a project new
// to the mesh for it; store.ErrNotFound for another account's project.
type ProjectClaimer interface {
	ClaimProject(ctx context.Context, project, account string) (string, error)
}

var _ ProjectClaimer = (*store.Store)(nil)

var (
	_ Escalator = (*Temporal)(nil)
	_ Prewarmer = (*Temporal)(nil)
)

var requestID = regexp.MustCompile(`^[A-Za-z0-9._-]{1,100}$`)

// EscalationWorkflowID is the workflow id of a device's request: the same
// request sent again (after a reconnect) names the same workflow, so it runs
// once. Device ids never contain ':' (pki.ValidID), so no two devices' ids
// meet: "gpu" asking "1-job7" and "gpu-1" asking "job7" are two workflows.
func EscalationWorkflowID(deviceID, requestID string) string {
	return "escalation-" + deviceID + ":" + requestID
}

// Memo keys naming the device and account an escalation was started for.
const (
	memoDevice  = "device"
	memoAccount = "account"
)

// RefusedError is a request the bridge will not run as sent; resending it
// unchanged gets the same answer.
type RefusedError struct{ Reason string }

func (e *RefusedError) Error() string { return e.Reason }

// Escalate starts the request's ConsensusWorkflow, billed to the device's
// account, or attaches to it if it already exists, and streams its progress
// and result.
func (t *Temporal) Escalate(ctx context.Context, id pki.Identity, req *meshv1.EscalationRequest, send func(*meshv1.EscalationResponse) error) error {
	if !requestID.MatchString(req.GetRequestId()) {
		return errors.New("request_id must be 1-100 letters, digits, '.', '_' or '-'")
	}
	in := workflows.ConsensusInput{
		Prompt: req.GetPrompt(), Project: req.GetProject(), Account: id.Account, MaxRounds: int(req.GetMaxRounds()),
		Threshold: req.GetThreshold(), LoRA: req.GetLora(), Placement: workflows.PlacementCloud, CloudQueue: workers.CloudQueue,
	}
	norm, err := in.Normalize()
	if err != nil {
		return err
	}
	if err := t.checkProject(ctx, id, norm.Project); err != nil {
		return err
	}
	wid := EscalationWorkflowID(id.DeviceID, req.GetRequestId())
	run, err := t.Client.ExecuteWorkflow(ctx, client.StartWorkflowOptions{
		ID: wid, TaskQueue: workers.CloudQueue,
		WorkflowIDConflictPolicy: enumspb.WORKFLOW_ID_CONFLICT_POLICY_USE_EXISTING,
		WorkflowIDReusePolicy:    enumspb.WORKFLOW_ID_REUSE_POLICY_REJECT_DUPLICATE,
		Memo:                     map[string]any{memoDevice: id.DeviceID, memoAccount: id.Account},
	}, workflows.ConsensusWorkflow, in)
	var started *serviceerror.WorkflowExecutionAlreadyStarted
	var runID string
	switch {
	case err == nil:
		runID = run.GetRunID()
	case errors.As(err, &started):
		runID = started.RunId
	default:
		return &UnavailableError{Err: fmt.Errorf("start consensus: %w", err)}
	}
	// USE_EXISTING attaches to whatever runs under wid: stream it only if
	// it is this device's own escalation.
	if err := t.checkOwner(ctx, wid, runID, req.GetRequestId(), id); err != nil {
		return err
	}
	poll := t.Poll
	if poll == 0 {
		poll = 100 * time.Millisecond
	}
	var sendErr error
	sent := 0
	st, err := runner.Watch(ctx, t.Client, wid, poll, func(s workflows.ConsensusState) {
		steps := Steps(s)
		for _, p := range steps[min(sent, len(steps)):] {
			if sendErr == nil {
				sendErr = send(&meshv1.EscalationResponse{Body: &meshv1.EscalationResponse_Progress{Progress: p}})
				sent++
			}
		}
	})
	if err != nil {
		var f *runner.Failure
		if errors.As(err, &f) {
			return err // the consensus itself failed: final
		}
		return &UnavailableError{Err: err}
	}
	if sendErr != nil {
		return sendErr
	}
	rounds := 0
	if n := len(st.Rounds); n > 0 {
		rounds = st.Rounds[n-1].Round
	}
	return send(&meshv1.EscalationResponse{Body: &meshv1.EscalationResponse_Result{Result: &meshv1.EscalationResult{
		WorkflowId: wid, Status: st.Status, Score: st.Score, Rounds: uint32(rounds), Answer: st.Answer,
	}}})
}

// checkProject refuses, before any workflow starts, a request that names a
// project the device's account may not start runs in: one of another
// account is as absent as one that never was.
func (t *Temporal) checkProject(ctx context.Context, id pki.Identity, project string) error {
	if t.Projects == nil || project == workflows.DefaultProject {
		return nil
	}
	role, err := t.Projects.ClaimProject(ctx, project, id.Account)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return &RefusedError{Reason: "no project " + project + " of account " + id.Account + ": name a project of yours, or ask its owner for editor access"}
	case err != nil:
		return &UnavailableError{Err: fmt.Errorf("check project %s: %w", project, err)}
	case !store.CanWrite(role):
		return &RefusedError{Reason: "a " + role + " of project " + project + " can watch its runs but not start one"}
	}
	return nil
}

// checkOwner reads the run's first event and refuses it unless it is a
// ConsensusWorkflow whose input bills id's account and whose memo names
// id's device and account.
func (t *Temporal) checkOwner(ctx context.Context, wid, runID, requestID string, id pki.Identity) error {
	it := t.Client.GetWorkflowHistory(ctx, wid, runID, false, enumspb.HISTORY_EVENT_FILTER_TYPE_ALL_EVENT)
	if !it.HasNext() {
		return &UnavailableError{Err: fmt.Errorf("escalation %s has no history yet", wid)}
	}
	ev, err := it.Next()
	if err != nil {
		return &UnavailableError{Err: fmt.Errorf("read escalation %s: %w", wid, err)}
	}
	refused := &RefusedError{Reason: fmt.Sprintf("request_id %q is already used by another run: send the request under a new request_id", requestID)}
	attrs := ev.GetWorkflowExecutionStartedEventAttributes()
	if attrs == nil || attrs.GetWorkflowType().GetName() != workflowName {
		return refused
	}
	dc := converter.GetDefaultDataConverter()
	var in workflows.ConsensusInput
	if err := dc.FromPayloads(attrs.GetInput(), &in); err != nil || in.Account != id.Account {
		return refused
	}
	var device, account string
	memo := attrs.GetMemo().GetFields()
	if dc.FromPayload(memo[memoDevice], &device) != nil || dc.FromPayload(memo[memoAccount], &account) != nil ||
		device != id.DeviceID || account != id.Account {
		return refused
	}
	return nil
}

// workflowName is the type the SDK registers workflows.ConsensusWorkflow under.
const workflowName = "ConsensusWorkflow"

// Steps lists the completed agent steps of s in order: Pathos, then Logos
// and Ethos of each round, then the Arbiter.
func Steps(s workflows.ConsensusState) []*meshv1.EscalationProgress {
	var out []*meshv1.EscalationProgress
	add := func(agent string, round int, text string, score float64) {
		out = append(out, &meshv1.EscalationProgress{Step: uint32(len(out) + 1), Agent: agent, Round: uint32(round), Text: text, Score: score})
	}
	if s.Manifest != nil {
		round := 1
		if len(s.Rounds) > 0 {
			round = s.Rounds[0].Round
		}
		add("pathos", round, s.Manifest.Intent, 0)
	}
	for _, r := range s.Rounds {
		if r.Solution != nil {
			add("logos", r.Round, r.Solution.Answer, 0)
		}
		if r.Verification != nil {
			add("ethos", r.Round, r.Verification.Feedback, r.Score)
		}
	}
	if s.Arbiter != nil {
		add("arbiter", s.Round, s.Arbiter.Answer, s.Arbiter.Confidence)
	}
	return out
}

// WarmupWorkflowID is the warm-up workflow of deviceID's pre-warm signals
// in the minute of at.
func WarmupWorkflowID(deviceID string, at time.Time) string {
	return "warmup-" + deviceID + "-" + at.UTC().Format("200601021504")
}

// Prewarm starts the device's warm-up workflow for this minute, loading the
// adapters the signal names that the device's account may use; more
// signals in the same minute find it already started. Adapters the account
// may not use are left out, and the error names them (the bridge logs it).
func (t *Temporal) Prewarm(ctx context.Context, id pki.Identity, sig *meshv1.PrewarmSignal) error {
	loras, refused, err := t.prewarmLoRAs(ctx, id, sig)
	if err != nil {
		return err
	}
	wid := WarmupWorkflowID(id.DeviceID, time.Now())
	in := workflows.WarmupInput{
		DeviceID: id.DeviceID, Account: id.Account, Reason: sig.GetReason(), GPULoad: sig.GetGpuLoad(),
		TempC: sig.GetTemperatureC(), LoRAs: loras,
	}
	if len(loras) > 0 {
		in.LoRA = loras[0]
	}
	_, err = t.Client.ExecuteWorkflow(ctx, client.StartWorkflowOptions{
		ID: wid, TaskQueue: workers.CloudQueue,
		WorkflowIDConflictPolicy: enumspb.WORKFLOW_ID_CONFLICT_POLICY_USE_EXISTING,
		WorkflowIDReusePolicy:    enumspb.WORKFLOW_ID_REUSE_POLICY_REJECT_DUPLICATE,
	}, workflows.WarmupWorkflow, in)
	var started *serviceerror.WorkflowExecutionAlreadyStarted
	if err != nil && !errors.As(err, &started) {
		return err
	}
	if len(refused) > 0 {
		return &RefusedError{Reason: fmt.Sprintf("pre-warm: not loading adapters %v: account %s may not use them (neither its own nor of a project it is a member of)",
			refused, id.Account)}
	}
	return nil
}

// prewarmLoRAs lists the adapters sig names (lora, then loras), each once
// and at most wire.MaxPrewarmLoRAs, split into those id's account may use
// and those it may not.
func (t *Temporal) prewarmLoRAs(ctx context.Context, id pki.Identity, sig *meshv1.PrewarmSignal) (ok, refused []string, err error) {
	var named []string
	for _, l := range append([]string{sig.GetLora()}, sig.GetLoras()...) {
		if l != "" && !slices.Contains(named, l) && len(named) < wire.MaxPrewarmLoRAs {
			named = append(named, l)
		}
	}
	if t.LoRAs == nil {
		return named, nil, nil
	}
	for _, l := range named {
		_, err := t.LoRAs.LoRAFor(ctx, id.Account, l)
		switch {
		case errors.Is(err, store.ErrNotFound):
			refused = append(refused, l)
		case err != nil:
			return nil, nil, &UnavailableError{Err: fmt.Errorf("check adapter %s: %w", l, err)}
		default:
			ok = append(ok, l)
		}
	}
	return ok, refused, nil
}
