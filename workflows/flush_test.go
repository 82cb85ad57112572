package workflows

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/mock"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/testsuite"

	"github.com/superinstance/mesh/activities"
	"github.com/superinstance/mesh/internal/store"
)

// flushRun is one FlushWorkflow under the time-skipping test environment
// with a flush whose every answer from Stripe is lost until answer is set.
type flushRun struct {
	env     *testsuite.TestWorkflowEnvironment
	b       *activities.Billing
	flush   store.Flush
	first   time.Time
	sends   []time.Time
	answer  func(n int) error // the n-th send's outcome (from 0)
	recon   []string          // outcomes ReconcileFlush returns, in turn
	reconAt []time.Time
	onRecon func(outcome string)
}

var errLost = errors.New("stripe 500: injected fault after the request was committed")

func newFlushRun(t *testing.T) *flushRun {
	var s testsuite.WorkflowTestSuite
	r := &flushRun{env: s.NewTestWorkflowEnvironment(), b: &activities.Billing{},
		flush: store.Flush{ID: "flush-acme-1", Account: "acme", AmountCents: 250, State: store.FlushPending, StripeIdentifier: "flush-acme-1"}}
	r.env.RegisterActivity(r.b)
	r.env.OnActivity(r.b.OpenFlush, mock.Anything, activities.FlushStart{Account: "acme", FlushID: "flush-acme-1"}).
		Return(func(context.Context, activities.FlushStart) (activities.StartedFlush, error) {
			return activities.StartedFlush{Flush: r.flush, Customer: "cus_1"}, nil
		}).Once()
	r.env.OnActivity(r.b.SendFlush, mock.Anything, mock.Anything).Return(func(_ context.Context, f activities.StartedFlush) error {
		if f.Flush.ID != "flush-acme-1" || f.Flush.AmountCents != 250 {
			t.Errorf("sent %+v: another flush than the reserved one", f.Flush)
		}
		if r.first.IsZero() {
			r.first = r.env.Now()
		}
		r.sends = append(r.sends, r.env.Now())
		if err := r.answer(len(r.sends) - 1); err != nil {
			return err
		}
		return nil
	})
	r.env.OnActivity(r.b.MarkInDoubt, mock.Anything, "flush-acme-1", mock.Anything).Return(func(context.Context, string, string) (store.Flush, error) {
		f := r.flush
		f.State, f.FirstAttemptAt, f.Attempts = store.FlushInDoubt, r.first, len(r.sends)
		return f, nil
	})
	r.env.OnActivity(r.b.CompleteFlush, mock.Anything, "flush-acme-1").Return(func(context.Context, string) (store.Flush, error) {
		f := r.flush
		f.State, f.Attempts = store.FlushSent, len(r.sends)
		return f, nil
	}).Once()
	r.env.OnActivity(r.b.ReconcileFlush, mock.Anything, mock.Anything).Return(func(context.Context, activities.StartedFlush) (activities.Reconciled, error) {
		r.reconAt = append(r.reconAt, r.env.Now())
		if len(r.recon) == 0 {
			t.Error("an unexpected reconciliation")
			return activities.Reconciled{Outcome: activities.ReconcileMismatch}, nil
		}
		out := r.recon[0]
		r.recon = r.recon[1:]
		if r.onRecon != nil {
			r.onRecon(out)
		}
		return activities.Reconciled{Outcome: out}, nil
	})
	return r
}

func (r *flushRun) run(t *testing.T) (FlushResult, error) {
	t.Helper()
	r.env.ExecuteWorkflow(FlushWorkflow, FlushInput{Account: "acme", FlushID: "flush-acme-1", SendAttempts: 1})
	if !r.env.IsWorkflowCompleted() {
		t.Fatal("the flush workflow did not complete")
	}
	var res FlushResult
	err := r.env.GetWorkflowError()
	if err == nil {
		err = r.env.GetWorkflowResult(&res)
	}
	return res, err
}

// TestFlushInDoubtIsRetriedUntilStripeAnswers: six hours of lost answers
// keep the flush in doubt and retried under the same flush (never failed);
// the first answer completes it.
func TestFlushInDoubtIsRetriedUntilStripeAnswers(t *testing.T) {
	r := newFlushRun(t)
	var start time.Time
	r.answer = func(int) error {
		if start.IsZero() {
			start = r.env.Now()
		}
		if r.env.Now().Sub(start) < 6*time.Hour {
			return errLost
		}
		return nil
	}
	res, err := r.run(t)
	if err != nil || res.Flush.State != store.FlushSent || res.Reconciled != nil {
		t.Fatalf("result %+v %v", res, err)
	}
	if n := len(r.sends); n < 30 || n > 40 {
		t.Fatalf("%d sends in six hours of 10-minute rounds", n)
	}
	r.env.AssertNotCalled(t, "FailFlush", mock.Anything, mock.Anything, mock.Anything)
	r.env.AssertNotCalled(t, "RefuseFlush", mock.Anything, mock.Anything, mock.Anything)
}

// TestFlushInDoubtPastTheWindowIsReconciledFirst: answers lost for two
// days; nothing is sent past 23 hours after the first request without
// asking Stripe's summaries first, and Stripe holding it completes it.
func TestFlushInDoubtPastTheWindowIsReconciledFirst(t *testing.T) {
	r := newFlushRun(t)
	r.answer = func(int) error { return errLost }
	r.recon = []string{activities.ReconcileMismatch, activities.ReconcileCommitted}
	res, err := r.run(t)
	if err != nil || res.Flush.State != store.FlushSent || res.Reconciled == nil || res.Reconciled.Outcome != activities.ReconcileCommitted {
		t.Fatalf("result %+v %v", res, err)
	}
	for _, at := range r.sends {
		if at.Sub(r.first) >= 23*time.Hour {
			t.Fatalf("sent %s after the first request, past the identifier window", at.Sub(r.first))
		}
	}
	if len(r.reconAt) != 2 || r.reconAt[0].Sub(r.first) < 23*time.Hour {
		t.Fatalf("reconciled at %v (first request %v)", r.reconAt, r.first)
	}
}

// TestFlushAbsentAtStripeIsSentAgainThenChecked: past the window Stripe
// holds none of the flush; it is sent again under the same identifier, and
// reconciled once more after the settling time.
func TestFlushAbsentAtStripeIsSentAgainThenChecked(t *testing.T) {
	r := newFlushRun(t)
	var absentAt time.Time
	r.answer = func(int) error {
		if absentAt.IsZero() {
			return errLost
		}
		return nil
	}
	r.recon = []string{activities.ReconcileAbsent, activities.ReconcileCommitted}
	r.onRecon = func(out string) {
		if out == activities.ReconcileAbsent {
			absentAt = r.env.Now()
		}
	}
	res, err := r.run(t)
	if err != nil || res.Flush.State != store.FlushSent {
		t.Fatalf("result %+v %v", res, err)
	}
	last := r.sends[len(r.sends)-1]
	if len(r.reconAt) != 2 || last.Before(absentAt) || r.reconAt[1].Sub(last) < time.Hour {
		t.Fatalf("reconciled at %v, last send %v", r.reconAt, last)
	}
}

// TestFlushDefinitelyRefusedFails: only a definite refusal fails the flush,
// even after answers were lost.
func TestFlushDefinitelyRefusedFails(t *testing.T) {
	r := newFlushRun(t)
	r.answer = func(n int) error {
		if n < 3 {
			return errLost
		}
		return temporal.NewNonRetryableApplicationError("stripe rejected the request (400 resource_missing): No such customer", activities.ErrStripeRejected, nil)
	}
	r.env.OnActivity(r.b.RefuseFlush, mock.Anything, "flush-acme-1", mock.Anything).Return(func(_ context.Context, _ string, reason string) (store.Flush, error) {
		f := r.flush
		f.State, f.Error = store.FlushFailed, reason
		return f, nil
	}).Once()
	_, err := r.run(t)
	var ae *temporal.ApplicationError
	if !errors.As(err, &ae) || ae.Type() != ErrFlushFailed {
		t.Fatalf("error %v, want %s", err, ErrFlushFailed)
	}
	if len(r.sends) != 4 {
		t.Fatalf("%d sends", len(r.sends))
	}
}

// TestAnOverbilledFlushIsCompleted: past the window Stripe holds the flush
// twice and refuses to cancel the copy. Waiting changes nothing, and an open
// flush blocks the account's later ones: the flush is completed at once
// (Stripe holds it), the overbilling recorded by the reconciliation.
func TestAnOverbilledFlushIsCompleted(t *testing.T) {
	r := newFlushRun(t)
	r.answer = func(int) error { return errLost }
	r.recon = []string{activities.ReconcileOverbilled, activities.ReconcileMismatch}
	r.env.SetWorkflowRunTimeout(72 * time.Hour) // a stalled flush would loop on
	res, err := r.run(t)
	if err != nil || res.Flush.State != store.FlushSent || res.Reconciled == nil || res.Reconciled.Outcome != activities.ReconcileOverbilled {
		t.Fatalf("result %+v %v", res, err)
	}
	if len(r.reconAt) != 1 {
		t.Fatalf("reconciled %d times", len(r.reconAt))
	}
}
