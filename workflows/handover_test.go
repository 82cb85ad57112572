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
	r.env.OnActivity(r.a.AwaitPayment, mock.Anything, "ho").Return(true, nil).Once()
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
	r.env.OnActivity(r.a.AwaitPayment, mock.Anything, "ho").Return(true, nil)
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
	r.env.OnActivity(r.a.AwaitPayment, mock.Anything, "ho").Return(true, nil).Once()
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
	r.env.OnActivity(r.a.AwaitPayment, mock.Anything, "ho").Return(true, nil).Once()
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

// waitingForPayment accepts at an hour and clones; the new owner has no
// payment method, and saved (guarded by r.mu) says when one is recorded.
// It returns when Subscribe ran (-1 if never) and a state read back.
func (r *handoverRun) waitingForPayment(t *testing.T, saved *bool) *time.Duration {
	t.Helper()
	r.accept(time.Hour, "grace", &updateResult{})
	r.env.OnActivity(r.a.Clone, mock.Anything, "ho").Return(activities.CloneResult{Project: "acme-2", Adapters: 2}, nil).Once()
	r.env.OnActivity(r.a.AwaitPayment, mock.Anything, "ho").Return(false, nil).Once()
	r.env.OnActivity(r.a.PaymentSaved, mock.Anything, "ho").Return(func(context.Context, string) (bool, error) {
		r.mu.Lock()
		defer r.mu.Unlock()
		return *saved, nil
	})
	subscribed := time.Duration(-1)
	r.env.OnActivity(r.a.Subscribe, mock.Anything, "ho").Return(func(context.Context, string) (string, error) {
		r.mu.Lock()
		defer r.mu.Unlock()
		if !*saved {
			t.Error("the new owner was subscribed before their payment method was saved")
		}
		subscribed = r.env.Now().Sub(r.start)
		return "sub_sched_1", nil
	}).Maybe()
	return &subscribed
}

func (r *handoverRun) status(t *testing.T) string {
	t.Helper()
	v, err := r.env.QueryWorkflow(HandoverQuery)
	if err != nil {
		t.Fatal(err)
	}
	var st HandoverState
	if err := v.Get(&st); err != nil {
		t.Fatal(err)
	}
	return st.Status
}

// Accepted, the handover waits in awaiting_payment: the ready email asks
// for a payment method and nothing subscribes the new owner until the
// webhook's signal finds it saved (a signal while nothing is saved, as a
// forged or misrouted one would be, changes nothing).
func TestHandoverSubscribesOnlyAfterThePaymentMethod(t *testing.T) {
	r := newHandoverRun(t)
	saved := false
	subscribed := r.waitingForPayment(t, &saved)
	var during string
	r.env.RegisterDelayedCallback(func() {
		during = r.status(t)
		r.env.SignalWorkflow(HandoverPaymentSignal, nil)
	}, day)
	r.env.RegisterDelayedCallback(func() {
		r.mu.Lock()
		saved = true
		r.mu.Unlock()
		r.env.SignalWorkflow(HandoverPaymentSignal, nil)
	}, 2*day)
	st, err := r.run(t)
	if err != nil {
		t.Fatal(err)
	}
	if during != store.HandoverAwaitingPayment {
		t.Fatalf("a day after the accept the handover is %q, want %s", during, store.HandoverAwaitingPayment)
	}
	if !near(*subscribed, 2*day) {
		t.Fatalf("subscribed at %s; want at the signal after the payment method (48h)", *subscribed)
	}
	if st.Status != store.HandoverCompleted || st.Schedule != "sub_sched_1" || st.PaymentReminders != 0 {
		t.Fatalf("state %+v", st)
	}
	if at, ok := r.mails[activities.MailReady]; !ok || !near(at, time.Hour) {
		t.Fatalf("ready email at %v (sent %v)", at, ok)
	}
	if _, ok := r.mails[activities.MailPayment1]; ok {
		t.Fatal("a payment reminder before day 3 of the wait")
	}
	if _, ok := r.mails[activities.MailCompleted]; !ok {
		t.Fatal("no completion email")
	}
}

// With the webhook's signal lost, the wait still sees the record at its
// next check; reminders go out on days 3 and 6 of the wait.
func TestHandoverPaymentRemindersAndCheck(t *testing.T) {
	r := newHandoverRun(t)
	saved := false
	subscribed := r.waitingForPayment(t, &saved)
	r.env.RegisterDelayedCallback(func() {
		r.mu.Lock()
		saved = true
		r.mu.Unlock()
	}, 7*day)
	st, err := r.run(t)
	if err != nil {
		t.Fatal(err)
	}
	if *subscribed < 7*day || *subscribed > 7*day+DefaultPaymentCheck+time.Minute {
		t.Fatalf("subscribed at %s; want within a check of 168h", *subscribed)
	}
	if at := r.mails[activities.MailPayment1]; !near(at, 3*day+time.Hour) {
		t.Fatalf("first payment reminder at %s", at)
	}
	if at := r.mails[activities.MailPayment2]; !near(at, 6*day+time.Hour) {
		t.Fatalf("second payment reminder at %s", at)
	}
	if st.Status != store.HandoverCompleted || st.PaymentReminders != 2 {
		t.Fatalf("state %+v", st)
	}
}
