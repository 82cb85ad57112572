// Package runner starts ConsensusWorkflows and follows them: the client side
// that `si ask`, the bridge and the HTTP API share.
package runner

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/api/serviceerror"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/temporal"

	"github.com/superinstance/mesh/workers"
	"github.com/superinstance/mesh/workflows"
)

// NewWorkflowID returns a readable, unique consensus workflow id.
func NewWorkflowID(now time.Time) string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return "consensus-" + now.UTC().Format("20060102-150405") + "-" + hex.EncodeToString(b[:])
}

// Start validates in and starts a ConsensusWorkflow on the cloud queue.
func Start(ctx context.Context, c client.Client, id string, in workflows.ConsensusInput) (client.WorkflowRun, error) {
	norm, err := in.Normalize()
	if err != nil {
		return nil, err
	}
	if in.CloudQueue == "" {
		in.CloudQueue = workers.CloudQueue
	}
	o := client.StartWorkflowOptions{
		ID:                       id,
		TaskQueue:                workers.CloudQueue,
		WorkflowIDConflictPolicy: enumspb.WORKFLOW_ID_CONFLICT_POLICY_FAIL,
		WorkflowIDReusePolicy:    enumspb.WORKFLOW_ID_REUSE_POLICY_REJECT_DUPLICATE,
	}
	// A guest's project comes from the session, inside the workflow.
	if in.GuestSession == "" || in.Project != "" {
		o.TypedSearchAttributes = temporal.NewSearchAttributes(workflows.ConsensusProjectAttr.ValueSet(norm.Project))
	}
	run, err := c.ExecuteWorkflow(ctx, o, workflows.ConsensusWorkflow, in)
	var ia *serviceerror.InvalidArgument
	if err != nil && o.TypedSearchAttributes.Size() > 0 && errors.As(err, &ia) && strings.Contains(ia.Message, "search attribute") {
		// A namespace without the mesh's search attributes (si server
		// registers them) still runs the consensus; only the project page
		// cannot list it while it runs.
		o.TypedSearchAttributes = temporal.SearchAttributes{}
		return c.ExecuteWorkflow(ctx, o, workflows.ConsensusWorkflow, in)
	}
	return run, err
}

// Resume builds the Resume of a new request from a finished consensus, a
// failed one too (its state query answers after it closed).
func Resume(ctx context.Context, c client.Client, id string) (*workflows.Resume, workflows.ConsensusState, error) {
	var st workflows.ConsensusState
	v, err := c.QueryWorkflow(ctx, id, "", workflows.QueryState)
	if err == nil {
		err = v.Get(&st)
	}
	if err != nil {
		return nil, st, fmt.Errorf("cannot continue from %s: %w", id, Cause(err))
	}
	r, err := workflows.ResumeFrom(id, st)
	if err != nil {
		return nil, st, fmt.Errorf("cannot continue from %s: %w", id, err)
	}
	return r, st, nil
}

// Watch follows the workflow id until it closes, calling onChange with each
// new state (polled every interval through the state query) and once more
// with the final one. It returns the final state, as soon as a query shows
// it (ConsensusState.Final) or the workflow closes, or the workflow's
// failure with the last state seen.
func Watch(ctx context.Context, c client.Client, id string, interval time.Duration, onChange func(workflows.ConsensusState)) (workflows.ConsensusState, error) {
	run := c.GetWorkflow(ctx, id, "")
	var (
		final  workflows.ConsensusState
		runErr error
		done   = make(chan struct{})
	)
	gctx, stop := context.WithCancel(ctx) // ends the wait for the close when the state says final first
	defer stop()
	go func() {
		runErr = run.Get(gctx, &final)
		close(done)
	}()
	last := workflows.ConsensusState{Steps: -1}
	emit := func(st workflows.ConsensusState) {
		if st.Steps != last.Steps || st.Status != last.Status || st.Placement != last.Placement {
			last = st
			onChange(st)
		}
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-done:
			if runErr != nil {
				if st, err := query(ctx, c, id); err == nil {
					emit(st)
					last = st
				}
				return last, Cause(runErr)
			}
			emit(final)
			return final, nil
		case <-t.C:
			if st, err := query(ctx, c, id); err == nil {
				emit(st)
				if st.Final {
					// The outcome is settled: no need to wait for the close
					// to reach us (a long poll can miss it by a second).
					return st, nil
				}
			}
		case <-ctx.Done():
			return last, ctx.Err()
		}
	}
}

func query(ctx context.Context, c client.Client, id string) (workflows.ConsensusState, error) {
	var st workflows.ConsensusState
	qctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	v, err := c.QueryWorkflow(qctx, id, "", workflows.QueryState)
	if err != nil {
		return st, err
	}
	return st, v.Get(&st)
}

// Failure is a workflow error with a short message: its application
// error's message, without the SDK's wrapping. It unwraps to the original.
type Failure struct {
	msg string
	err error
}

func (f *Failure) Error() string { return f.msg }
func (f *Failure) Unwrap() error { return f.err }

// Cause reduces a workflow failure to a Failure whose message says what
// went wrong; other errors pass through unchanged.
func Cause(err error) error {
	var ae *temporal.ApplicationError
	if errors.As(err, &ae) {
		return &Failure{msg: ae.Message(), err: err}
	}
	var te *temporal.TerminatedError
	if errors.As(err, &te) {
		return &Failure{msg: "the workflow was terminated", err: err}
	}
	var ce *temporal.CanceledError
	if errors.As(err, &ce) {
		return &Failure{msg: "the workflow was cancelled", err: err}
	}
	return err
}
