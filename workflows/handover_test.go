package workflows

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/mock"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/testsuite"

	"github.com/superinstance/mesh/activities"
	"github.com/superinstance/mesh/internal/store"
)

const day = 24 * time.Hour

// handoverRun is a handover under the time-skipping test environment with
// its activities mocked; it records when each email went out and the
// states the handover was closed with.
type handoverRun struct {
	env    *testsuite.TestWorkflowEnvironment
	a      *activities.Handovers
	start  time.Time
	mu     sync.Mutex
	mails  map[string]time.Duration
	closed []string
}

func newHandoverRun(t *testing.T) *handoverRun {
	var s testsuite.WorkflowTestSuite
	r := &handoverRun{env: s.NewTestWorkflowEnvironment(), a: &activities.Handovers{}, mails: map[string]time.Duration{}}
	r.env.RegisterActivity(r.a)
	r.start = r.env.Now()
	r.env.OnActivity(r.a.Snapshot, mock.Anything, "ho").Return(activities.SnapshotSummary{Adapters: 2, Bytes: 10, Members: 1}, nil).Once()
	r.env.OnActivity(r.a.SendMail, mock.Anything, mock.Anything).Return(func(_ context.Context, m activities.HandoverMail) error {
		r.mu.Lock()
		defer r.mu.Unlock()
		if _, dup := r.mails[m.Kind]; dup {
			t.Errorf("email %s sent twice", m.Kind)
		}
		r.mails[m.Kind] = r.env.Now().Sub(r.start)
		return nil
	})
	r.env.OnActivity(r.a.CountReminder, mock.Anything, "ho", mock.Anything).Return(nil).Maybe()
	r.env.OnActivity(r.a.Close, mock.Anything, mock.Anything).Return(func(_ context.Context, in activities.CloseHandoverInput) (bool, error) {
		r.mu.Lock()
		defer r.mu.Unlock()
		r.closed = append(r.closed, in.State)
		return true, nil
	})
	return r
}

func (r *handoverRun) run(t *testing.T) (HandoverState, error) {
	t.Helper()
	r.env.ExecuteWorkflow(HandoverWorkflow, HandoverInput{HandoverID: "ho", Project: "acme", Recipient: "ada@example.com"})
	if !r.env.IsWorkflowCompleted() {
		t.Fatal("the handover did not finish")
	}
	var st HandoverState
	err := r.env.GetWorkflowResult(&st)
	return st, err
}

func (r *handoverRun) accept(at time.Duration, account string, res *updateResult) {
	r.env.OnActivity(r.a.Accept, mock.Anything, mock.MatchedBy(func(in activities.AcceptHandoverInput) bool {
		// Who accepts, and which request it is, reach the store.
		return in.Handover == "ho" && in.Account == account && in.NewAccount && in.Request == "req-"+account
	})).Return(store.Handover{ID: "ho", State: store.HandoverAccepted, NewOwner: account}, nil).Maybe()
	r.env.RegisterDelayedCallback(func() {
		r.env.UpdateWorkflow(HandoverAcceptUpdate, "accept-"+account, res, HandoverAccept{Account: account, NewAccount: true, Request: "req-" + account})
	}, at)
}

func near(got, want time.Duration) bool { return got >= want && got < want+time.Minute }

func TestHandoverRemindsOnDays3And6AndExpiresOnDay7(t *testing.T) {
	r := newHandoverRun(t)
	st, err := r.run(t)
	if err != nil {
		t.Fatal(err)
	}
	if st.Status != store.HandoverExpired || st.Reminders != 2 || st.Adapters != 2 {
		t.Fatalf("state %+v", st)
	}
	if !near(r.mails[activities.MailOffer], 0) || !near(r.mails[activities.MailReminder1], 3*day) ||
		!near(r.mails[activities.MailReminder2], 6*day) {
		t.Fatalf("emails at %v, want offer at 0, reminders at 72h and 144h", r.mails)
	}
	if _, ok := r.mails[activities.MailCompleted]; ok {
		t.Fatal("an expired handover sent a completion email")
	}
	if len(r.closed) != 1 || r.closed[0] != store.HandoverExpired {
		t.Fatalf("closed as %v", r.closed)
	}
	if d := r.env.Now().Sub(r.start); !near(d, 7*day) {
		t.Fatalf("expired after %s, want 168h", d)
	}
}

func TestHandoverAcceptedOnDay6(t *testing.T) {
	r := newHandoverRun(t)
	res := &updateResult{}
	r.accept(6*day+12*time.Hour, "grace", res)
	r.env.OnActivity(r.a.Clone, mock.Anything, "ho").Return(activities.CloneResult{Project: "acme-x", Adapters: 2}, nil).Once()
	r.env.OnActivity(r.a.Subscribe, mock.Anything, "ho").Return("sub_sched_1", nil).Once()
	st, err := r.run(t)
	if err != nil {
		t.Fatal(err)
	}
	if !res.accepted || res.err != nil {
		t.Fatalf("accept update: %+v", res)
	}
	want := HandoverState{Status: store.HandoverCompleted, Reminders: 2, NewOwner: "grace", NewProject: "acme-x", Adapters: 2, Schedule: "sub_sched_1"}
	if st != want {
		t.Fatalf("state %+v, want %+v", st, want)
	}
	if len(r.closed) != 1 || r.closed[0] != store.HandoverCompleted {
		t.Fatalf("closed as %v", r.closed)
	}
	if _, ok := r.mails[activities.MailCompleted]; !ok {
		t.Fatal("no completion email")
	}
	if d := r.env.Now().Sub(r.start); d >= 7*day {
		t.Fatalf("an accepted handover ran until %s", d)
	}
}

func TestHandoverDeclined(t *testing.T) {
	r := newHandoverRun(t)
	late := &updateResult{}
	r.env.RegisterDelayedCallback(func() {
		r.env.SignalWorkflow(HandoverDeclineSignal, nil)
		r.env.UpdateWorkflow(HandoverAcceptUpdate, "late", late, HandoverAccept{Account: "grace"})
	}, day)
	st, err := r.run(t)
	if err != nil {
		t.Fatal(err)
	}
	if st.Status != store.HandoverDeclined || st.Reminders != 0 || len(r.closed) != 1 || r.closed[0] != store.HandoverDeclined {
		t.Fatalf("state %+v, closed %v", st, r.closed)
	}
	if !late.rejected {
		t.Fatal("an accept after the decline was taken")
	}
}

func TestHandoverCancelledByTheHost(t *testing.T) {
	r := newHandoverRun(t)
	r.env.RegisterDelayedCallback(func() { r.env.SignalWorkflow(HandoverCancelSignal, nil) }, 4*day)
	st, err := r.run(t)
	if err != nil {
		t.Fatal(err)
	}
	if st.Status != store.HandoverCancelled || st.Reminders != 1 || len(r.closed) != 1 || r.closed[0] != store.HandoverCancelled {
		t.Fatalf("state %+v, closed %v", st, r.closed)
	}
	if d := r.env.Now().Sub(r.start); !near(d, 4*day) {
		t.Fatalf("cancelled after %s, want 96h", d)
	}
}

func TestHandoverRejectsABadAccount(t *testing.T) {
	r := newHandoverRun(t)
	bad, good := &updateResult{}, &updateResult{}
	r.env.RegisterDelayedCallback(func() {
		r.env.UpdateWorkflow(HandoverAcceptUpdate, "bad", bad, HandoverAccept{Account: "Not An Account"})
	}, time.Hour)
	r.accept(2*time.Hour, "grace", good)
	r.env.OnActivity(r.a.Clone, mock.Anything, "ho").Return(activities.CloneResult{Project: "acme-x"}, nil)
	r.env.OnActivity(r.a.Subscribe, mock.Anything, "ho").Return("sub_sched_1", nil)
	if _, err := r.run(t); err != nil {
		t.Fatal(err)
	}
	if !bad.rejected || good.err != nil || !good.accepted {
		t.Fatalf("bad %+v, good %+v", bad, good)
	}
}

func TestHandoverStripeOutageIsRetried(t *testing.T) {
	r := newHandoverRun(t)
	r.accept(time.Hour, "grace", &updateResult{})
	r.env.OnActivity(r.a.Clone, mock.Anything, "ho").Return(activities.CloneResult{Project: "acme-x"}, nil).Once()
	calls := 0
	r.env.OnActivity(r.a.Subscribe, mock.Anything, "ho").Return(func(context.Context, string) (string, error) {
		if calls++; calls < 4 {
			return "", errors.New("stripe 503: unavailable")
		}
		return "sub_sched_1", nil
	})
	st, err := r.run(t)
	if err != nil || st.Status != store.HandoverCompleted || st.Schedule != "sub_sched_1" || calls != 4 {
		t.Fatalf("state %+v, %d calls, %v", st, calls, err)
	}
}

func TestHandoverStripeRefusalUndoesTheClone(t *testing.T) {
	r := newHandoverRun(t)
	r.accept(time.Hour, "grace", &updateResult{})
	r.env.OnActivity(r.a.Clone, mock.Anything, "ho").Return(activities.CloneResult{Project: "acme-x"}, nil).Once()
	r.env.OnActivity(r.a.Subscribe, mock.Anything, "ho").Return("",
		temporal.NewNonRetryableApplicationError("stripe rejected the request (400 resource_missing): No such customer", activities.ErrStripeRejected, nil)).Once()
	r.env.OnActivity(r.a.Unclone, mock.Anything, "ho").Return(nil).Once()
	_, err := r.run(t)
	if err == nil || !strings.Contains(err.Error(), "No such customer") {
		t.Fatalf("err %v", err)
	}
	v, err := r.env.QueryWorkflow(HandoverQuery)
	if err != nil {
		t.Fatal(err)
	}
	var st HandoverState
	if err := v.Get(&st); err != nil {
		t.Fatal(err)
	}
	if st.Status != store.HandoverFailed || st.NewProject != "" || !strings.Contains(st.Failure, "No such customer") {
		t.Fatalf("state %+v", st)
	}
	if len(r.closed) != 1 || r.closed[0] != store.HandoverFailed {
		t.Fatalf("closed as %v", r.closed)
	}
	r.env.AssertExpectations(t)
}
