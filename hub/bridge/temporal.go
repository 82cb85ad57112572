package bridge

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"time"

	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/api/serviceerror"
	"go.temporal.io/sdk/client"

	"github.com/superinstance/mesh/internal/pki"
	"github.com/superinstance/mesh/internal/runner"
	meshv1 "github.com/superinstance/mesh/proto/meshv1"
	"github.com/superinstance/mesh/workers"
	"github.com/superinstance/mesh/workflows"
)

// Temporal runs escalations and pre-warms as workflows on the cloud queue.
type Temporal struct {
	Client client.Client
	// Poll is how often an escalation's progress is read. Default 100ms.
	Poll time.Duration
}

var (
	_ Escalator = (*Temporal)(nil)
	_ Prewarmer = (*Temporal)(nil)
)

var requestID = regexp.MustCompile(`^[A-Za-z0-9._-]{1,100}$`)

// EscalationWorkflowID is the workflow id of a device's request: the same
// request sent again (after a reconnect) names the same workflow, so it runs once.
func EscalationWorkflowID(deviceID, requestID string) string {
	return "escalation-" + deviceID + "-" + requestID
}

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
	if _, err := in.Normalize(); err != nil {
		return err
	}
	wid := EscalationWorkflowID(id.DeviceID, req.GetRequestId())
	_, err := t.Client.ExecuteWorkflow(ctx, client.StartWorkflowOptions{
		ID: wid, TaskQueue: workers.CloudQueue,
		WorkflowIDConflictPolicy: enumspb.WORKFLOW_ID_CONFLICT_POLICY_USE_EXISTING,
		WorkflowIDReusePolicy:    enumspb.WORKFLOW_ID_REUSE_POLICY_REJECT_DUPLICATE,
	}, workflows.ConsensusWorkflow, in)
	var started *serviceerror.WorkflowExecutionAlreadyStarted
	if err != nil && !errors.As(err, &started) {
		return fmt.Errorf("start consensus: %w", err)
	}
	poll := t.Poll
	if poll == 0 {
		poll = 100 * time.Millisecond
	}
	var sendErr error
	st, err := runner.Watch(ctx, t.Client, wid, poll, func(s workflows.ConsensusState) {
		if p := latestStep(s); p != nil && sendErr == nil {
			sendErr = send(&meshv1.EscalationResponse{Body: &meshv1.EscalationResponse_Progress{Progress: p}})
		}
	})
	if err != nil {
		return err
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

// latestStep describes the most recent completed step of s.
func latestStep(s workflows.ConsensusState) *meshv1.EscalationProgress {
	p := &meshv1.EscalationProgress{Step: uint32(s.Steps), Round: uint32(s.Round)}
	switch {
	case s.Arbiter != nil:
		p.Agent, p.Text = "arbiter", s.Arbiter.Answer
	case len(s.Rounds) > 0 && s.Rounds[len(s.Rounds)-1].Verification != nil:
		r := s.Rounds[len(s.Rounds)-1]
		p.Agent, p.Text, p.Score = "ethos", r.Verification.Feedback, r.Score
	case len(s.Rounds) > 0 && s.Rounds[len(s.Rounds)-1].Solution != nil:
		p.Agent, p.Text = "logos", s.Rounds[len(s.Rounds)-1].Solution.Answer
	case s.Manifest != nil:
		p.Agent, p.Text = "pathos", s.Manifest.Intent
	default:
		return nil
	}
	return p
}

// Prewarm starts the device's warm-up workflow for this minute; more signals
// in the same minute find it already started.
func (t *Temporal) Prewarm(ctx context.Context, id pki.Identity, sig *meshv1.PrewarmSignal) error {
	wid := "warmup-" + id.DeviceID + "-" + time.Now().UTC().Format("200601021504")
	_, err := t.Client.ExecuteWorkflow(ctx, client.StartWorkflowOptions{
		ID: wid, TaskQueue: workers.CloudQueue,
		WorkflowIDConflictPolicy: enumspb.WORKFLOW_ID_CONFLICT_POLICY_USE_EXISTING,
		WorkflowIDReusePolicy:    enumspb.WORKFLOW_ID_REUSE_POLICY_REJECT_DUPLICATE,
	}, workflows.WarmupWorkflow, workflows.WarmupInput{
		DeviceID: id.DeviceID, Account: id.Account, Reason: sig.GetReason(), GPULoad: sig.GetGpuLoad(),
		TempC: sig.GetTemperatureC(), LoRA: sig.GetLora(),
	})
	var started *serviceerror.WorkflowExecutionAlreadyStarted
	if errors.As(err, &started) {
		return nil
	}
	return err
}
