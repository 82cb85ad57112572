package workflows

import (
	"errors"
	"time"

	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"github.com/superinstance/mesh/activities"
	"github.com/superinstance/mesh/internal/store"
)

// Names of the handover workflow's handlers.
const (
	HandoverAcceptUpdate  = "accept"
	HandoverDeclineSignal = "decline"
	HandoverCancelSignal  = "cancel"
	HandoverQuery         = "state"
	// HandoverPaymentSignal: Stripe said the new owner saved a payment
	// method (the webhook recorded it; the workflow checks the record).
	HandoverPaymentSignal = "payment-method"
)

// PaymentMethodVersion is the change id under which an accepted handover
// waits for the new owner's payment method before subscribing them.
const PaymentMethodVersion = "handover-payment-method"

// HandoverStatusAccepting is the search-attribute status while the project
// is cloned and the subscription set up.
const HandoverStatusAccepting = "accepting"

// Default handover timing: reminders on day 3 and day 6, expiry on day 7;
// once accepted, payment reminders 3 and 6 days into the wait for a payment
// method, which is checked every 6 hours besides the webhook's signal.
var (
	DefaultHandoverReminders = []time.Duration{3 * 24 * time.Hour, 6 * 24 * time.Hour}
	DefaultHandoverExpiry    = 7 * 24 * time.Hour
	DefaultPaymentReminders  = []time.Duration{3 * 24 * time.Hour, 6 * 24 * time.Hour}
	DefaultPaymentCheck      = 6 * time.Hour
)

// HandoverWorkflowID is the id of the workflow that runs a handover.
func HandoverWorkflowID(handoverID string) string { return "handover/" + handoverID }

// HandoverInput names the handover; the rest of it lives in PostgreSQL.
type HandoverInput struct {
	HandoverID string
	Project    string
	Recipient  string
	// Reminders and Expiry count from the start; zero takes the defaults.
	Reminders []time.Duration
	Expiry    time.Duration
	// PaymentReminders count from the start of the wait for a payment
	// method, PaymentCheck is how often the wait looks at the record; zero
	// takes the defaults.
	PaymentReminders []time.Duration `json:",omitempty"`
	PaymentCheck     time.Duration   `json:",omitempty"`
}

// HandoverAccept is the accept update's argument: the account that takes
// the project. It must be the recipient's: an existing account with the
// recipient's email (the caller signed in as it), or, with NewAccount, one
// created now with that email. Request names the accept request, so that
// only that request's retries succeed again (an update sent before Request
// existed has none).
type HandoverAccept struct {
	Account    string
	NewAccount bool   `json:",omitempty"`
	Request    string `json:",omitempty"`
}

// HandoverState is the workflow's state, answered by the state query and
// returned at the end.
type HandoverState struct {
	Status    string
	Reminders int
	// PaymentReminders counts the reminders to give a payment method.
	PaymentReminders int    `json:",omitempty"`
	NewOwner         string `json:",omitempty"`
	NewProject       string `json:",omitempty"`
	Adapters         int
	Schedule         string `json:",omitempty"`
	Failure          string `json:",omitempty"`
}

// HandoverWorkflow hands a project to a new owner. It snapshots the project,
// emails the recipient an accept link, reminds them on day 3 and day 6 and
// expires on day 7 unless the accept update, the decline signal or the
// host's cancel signal arrives first. On accept it clones the project and its
// adapters for the new owner, then waits (awaiting_payment, with reminders)
// until Stripe says the new owner saved a payment method on the page the
// emails and the accept page link to; only then does it subscribe them at
// incentive pricing. Until then the host pays as before. A permanent
// failure removes the clone, so nothing is left half done.
func HandoverWorkflow(ctx workflow.Context, in HandoverInput) (HandoverState, error) {
	reminders, expiry := in.Reminders, in.Expiry
	if len(reminders) == 0 {
		reminders = DefaultHandoverReminders
	}
	if expiry <= 0 {
		expiry = DefaultHandoverExpiry
	}
	start := workflow.GetInfo(ctx).WorkflowStartTime
	st := HandoverState{Status: store.HandoverPending}
	setStatus := func(s string) error {
		st.Status = s
		return workflow.UpsertTypedSearchAttributes(ctx, HandoverStatusAttr.ValueSet(s))
	}
	if err := workflow.UpsertTypedSearchAttributes(ctx, HandoverStatusAttr.ValueSet(st.Status),
		HandoverRecipientAttr.ValueSet(in.Recipient), HandoverProjectAttr.ValueSet(in.Project),
		HandoverStartedAttr.ValueSet(start)); err != nil {
		return st, err
	}
	if err := workflow.SetQueryHandler(ctx, HandoverQuery, func() (HandoverState, error) { return st, nil }); err != nil {
		return st, err
	}
	var a *activities.Handovers
	retry := &temporal.RetryPolicy{InitialInterval: time.Second, MaximumInterval: 5 * time.Minute,
		NonRetryableErrorTypes: []string{activities.ErrHandoverClosed, activities.ErrHandoverSetup, activities.ErrStripeRejected}}
	ctx = workflow.WithActivityOptions(ctx, workflow.ActivityOptions{StartToCloseTimeout: 5 * time.Minute, RetryPolicy: retry})
	// Quick steps (the database, one email) may retry for up to a day
	// before the handover gives up on them.
	quick := workflow.WithActivityOptions(ctx, workflow.ActivityOptions{StartToCloseTimeout: time.Minute,
		ScheduleToCloseTimeout: 24 * time.Hour, RetryPolicy: retry})

	var snap activities.SnapshotSummary
	if err := workflow.ExecuteActivity(ctx, a.Snapshot, in.HandoverID).Get(ctx, &snap); err != nil {
		return failHandover(ctx, a, in, &st, setStatus, err)
	}
	st.Adapters = snap.Adapters

	// decision is the recipient's or host's answer. An accept that reaches
	// the database wins over a decline or cancel that arrived while it ran,
	// so the workflow waits for accepts in flight before acting on one.
	decision, inflight, expired := "", 0, false
	if err := workflow.SetUpdateHandlerWithOptions(ctx, HandoverAcceptUpdate,
		func(uctx workflow.Context, req HandoverAccept) (HandoverState, error) {
			uctx = workflow.WithActivityOptions(uctx, workflow.ActivityOptions{StartToCloseTimeout: time.Minute, RetryPolicy: retry})
			inflight++
			defer func() { inflight-- }()
			var h store.Handover
			err := workflow.ExecuteActivity(uctx, a.Accept, activities.AcceptHandoverInput{
				Handover: in.HandoverID, Account: req.Account, NewAccount: req.NewAccount, Request: req.Request, At: workflow.Now(uctx)}).Get(uctx, &h)
			if err != nil {
				var ae *temporal.ApplicationError
				if errors.As(err, &ae) {
					return st, temporal.NewNonRetryableApplicationError(ae.Message(), ae.Type(), nil)
				}
				return st, err
			}
			decision, st.NewOwner = store.HandoverAccepted, h.NewOwner
			return st, nil
		},
		workflow.UpdateHandlerOptions{Validator: func(_ workflow.Context, req HandoverAccept) error {
			switch {
			case decision != "":
				return errors.New("this handover is " + decision)
			case expired:
				return errors.New("this handover has expired")
			case st.Status != store.HandoverPending:
				return errors.New("this handover is " + st.Status)
			case store.ValidProjectID(req.Account) != nil:
				return errors.New("give the account that takes the project (lower-case letters, digits, '.', '_' or '-')")
			}
			return nil
		}}); err != nil {
		return st, err
	}
	workflow.Go(ctx, func(gctx workflow.Context) {
		workflow.GetSignalChannel(gctx, HandoverDeclineSignal).Receive(gctx, nil)
		if decision == "" {
			decision = store.HandoverDeclined
		}
	})
	workflow.Go(ctx, func(gctx workflow.Context) {
		workflow.GetSignalChannel(gctx, HandoverCancelSignal).Receive(gctx, nil)
		if decision == "" {
			decision = store.HandoverCancelled
		}
	})

	if err := workflow.ExecuteActivity(quick, a.SendMail, activities.HandoverMail{Handover: in.HandoverID, Kind: activities.MailOffer}).Get(ctx, nil); err != nil {
		return failHandover(ctx, a, in, &st, setStatus, err)
	}
	decided := func() bool { return decision != "" && inflight == 0 }
	for i, at := range reminders {
		if at >= expiry {
			break
		}
		ok, err := workflow.AwaitWithTimeout(ctx, max(start.Add(at).Sub(workflow.Now(ctx)), 0), decided)
		if err != nil {
			return st, err
		}
		if ok {
			break
		}
		kind := activities.MailReminder1
		if i > 0 {
			kind = activities.MailReminder2
		}
		if err := workflow.ExecuteActivity(quick, a.SendMail, activities.HandoverMail{Handover: in.HandoverID, Kind: kind}).Get(ctx, nil); err != nil {
			workflow.GetLogger(ctx).Warn("handover reminder not sent", "error", err)
			continue
		}
		st.Reminders = i + 1
		_ = workflow.ExecuteActivity(quick, a.CountReminder, in.HandoverID, st.Reminders).Get(ctx, nil)
	}
	ok, err := workflow.AwaitWithTimeout(ctx, max(start.Add(expiry).Sub(workflow.Now(ctx)), 0), decided)
	if err != nil {
		return st, err
	}
	if !ok {
		expired = true
		if err := workflow.Await(ctx, func() bool { return inflight == 0 }); err != nil {
			return st, err
		}
		if decision == "" {
			decision = store.HandoverExpired
		}
	}

	if decision != store.HandoverAccepted {
		if err := closeHandover(ctx, a, in.HandoverID, decision, ""); err != nil {
			return st, err
		}
		return st, setStatus(decision)
	}
	if err := setStatus(HandoverStatusAccepting); err != nil {
		return st, err
	}
	var clone activities.CloneResult
	if err := workflow.ExecuteActivity(ctx, a.Clone, in.HandoverID).Get(ctx, &clone); err != nil {
		return failHandover(ctx, a, in, &st, setStatus, err)
	}
	st.NewProject = clone.Project
	if workflow.GetVersion(ctx, PaymentMethodVersion, workflow.DefaultVersion, 1) == 1 {
		if err := awaitPayment(ctx, quick, a, in, &st, setStatus); err != nil {
			return failHandover(ctx, a, in, &st, setStatus, err)
		}
	}
	if err := workflow.ExecuteActivity(ctx, a.Subscribe, in.HandoverID).Get(ctx, &st.Schedule); err != nil {
		return failHandover(ctx, a, in, &st, setStatus, err)
	}
	if err := closeHandover(ctx, a, in.HandoverID, store.HandoverCompleted, ""); err != nil {
		return st, err
	}
	if err := workflow.ExecuteActivity(quick, a.SendMail, activities.HandoverMail{Handover: in.HandoverID, Kind: activities.MailCompleted}).Get(ctx, nil); err != nil {
		workflow.GetLogger(ctx).Warn("handover completion email not sent", "error", err)
	}
	return st, setStatus(store.HandoverCompleted)
}

// awaitPayment gives the new owner a Stripe customer and, unless their
// account already has a payment method, waits in awaiting_payment for one:
// the webhook's signal, or the record seen at a check, ends the wait.
// The ready email carries the payment page; reminders carry new ones.
func awaitPayment(ctx, quick workflow.Context, a *activities.Handovers, in HandoverInput, st *HandoverState, setStatus func(string) error) error {
	var saved bool
	if err := workflow.ExecuteActivity(ctx, a.AwaitPayment, in.HandoverID).Get(ctx, &saved); err != nil {
		return err
	}
	if saved {
		return nil
	}
	if err := setStatus(store.HandoverAwaitingPayment); err != nil {
		return err
	}
	if err := workflow.ExecuteActivity(quick, a.SendMail, activities.HandoverMail{Handover: in.HandoverID, Kind: activities.MailReady}).Get(ctx, nil); err != nil {
		workflow.GetLogger(ctx).Warn("handover payment email not sent", "error", err)
	}
	reminders, every := in.PaymentReminders, in.PaymentCheck
	if len(reminders) == 0 {
		reminders = DefaultPaymentReminders
	}
	if every <= 0 {
		every = DefaultPaymentCheck
	}
	start, sent := workflow.Now(ctx), 0
	signal := workflow.GetSignalChannel(ctx, HandoverPaymentSignal)
	for {
		wait := every
		if sent < len(reminders) {
			wait = min(wait, max(start.Add(reminders[sent]).Sub(workflow.Now(ctx)), 0))
		}
		tctx, cancel := workflow.WithCancel(ctx)
		timer := workflow.NewTimer(tctx, wait)
		sel := workflow.NewSelector(ctx)
		sel.AddReceive(signal, func(c workflow.ReceiveChannel, more bool) { c.Receive(ctx, nil) })
		sel.AddFuture(timer, func(workflow.Future) {})
		sel.Select(ctx)
		cancel()
		if err := workflow.ExecuteActivity(quick, a.PaymentSaved, in.HandoverID).Get(ctx, &saved); err != nil {
			return err
		}
		if saved {
			return nil
		}
		if sent < len(reminders) && !workflow.Now(ctx).Before(start.Add(reminders[sent])) {
			kind := activities.MailPayment1
			if sent > 0 {
				kind = activities.MailPayment2
			}
			sent++
			if err := workflow.ExecuteActivity(quick, a.SendMail, activities.HandoverMail{Handover: in.HandoverID, Kind: kind}).Get(ctx, nil); err != nil {
				workflow.GetLogger(ctx).Warn("handover payment reminder not sent", "error", err)
				continue
			}
			st.PaymentReminders++
		}
	}
}

// closeHandover records the final state; the database is ours, so it is
// retried until it succeeds.
func closeHandover(ctx workflow.Context, a *activities.Handovers, id, state, failure string) error {
	ctx, _ = workflow.NewDisconnectedContext(ctx)
	ctx = workflow.WithActivityOptions(ctx, workflow.ActivityOptions{StartToCloseTimeout: 5 * time.Minute,
		RetryPolicy: &temporal.RetryPolicy{InitialInterval: time.Second, MaximumInterval: 5 * time.Minute}})
	return workflow.ExecuteActivity(ctx, a.Close, activities.CloseHandoverInput{Handover: id, State: state, Failure: failure}).Get(ctx, nil)
}

// failHandover undoes a clone, marks the handover failed and returns the cause.
func failHandover(ctx workflow.Context, a *activities.Handovers, in HandoverInput, st *HandoverState,
	setStatus func(string) error, cause error) (HandoverState, error) {
	dctx, _ := workflow.NewDisconnectedContext(ctx)
	dctx = workflow.WithActivityOptions(dctx, workflow.ActivityOptions{StartToCloseTimeout: 5 * time.Minute,
		RetryPolicy: &temporal.RetryPolicy{InitialInterval: time.Second, MaximumInterval: 5 * time.Minute}})
	if err := workflow.ExecuteActivity(dctx, a.Unclone, in.HandoverID).Get(dctx, nil); err != nil {
		return *st, err
	}
	st.NewProject, st.Failure = "", rootMessage(cause)
	if err := closeHandover(dctx, a, in.HandoverID, store.HandoverFailed, st.Failure); err != nil {
		return *st, err
	}
	if err := setStatus(store.HandoverFailed); err != nil {
		return *st, err
	}
	return *st, cause
}

// rootMessage is the innermost error message of an activity failure.
func rootMessage(err error) string {
	var ae *temporal.ApplicationError
	if errors.As(err, &ae) {
		return ae.Message()
	}
	return err.Error()
}
