package activities

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"strings"
	"time"

	"go.temporal.io/sdk/temporal"

	"github.com/superinstance/mesh/internal/billing"
	"github.com/superinstance/mesh/internal/blob"
	"github.com/superinstance/mesh/internal/lora"
	"github.com/superinstance/mesh/internal/mail"
	"github.com/superinstance/mesh/internal/store"
	"github.com/superinstance/mesh/internal/token"
)

// Error types of the handover activities.
const (
	ErrHandoverClosed = "HandoverClosed"
	ErrHandoverSetup  = "HandoverMisconfigured"
)

// Kinds of handover email.
const (
	MailOffer     = "offer"
	MailReminder1 = "reminder-1"
	MailReminder2 = "reminder-2"
	MailCompleted = "completed"
	// MailReady tells the new owner the project is theirs and asks for a
	// payment method; MailPayment1 and MailPayment2 remind them, each with
	// a new payment page.
	MailReady    = "ready"
	MailPayment1 = "payment-1"
	MailPayment2 = "payment-2"
)

// Handovers snapshots, mails, clones and bills project handovers.
type Handovers struct {
	Store *store.Store
	// Blob holds adapters; nil hands over projects without copying any (a
	// project with adapters then fails to snapshot).
	Blob   *blob.Store
	Stripe *billing.Stripe
	Mailer *mail.Mailer
	Plan   billing.Plan
	// PublicURL is the base of the accept links in emails.
	PublicURL string
}

func nonRetryable(err error, typ string) error {
	return temporal.NewNonRetryableApplicationError(err.Error(), typ, err)
}

// SnapshotSummary is what a snapshot holds.
type SnapshotSummary struct {
	Adapters int
	Bytes    int64
	Members  int
}

// SnapshotKey is where a handover keeps its copy of an adapter's weights.
func SnapshotKey(handover, sha string) string {
	return "handovers/" + handover + "/" + sha + "/" + lora.WeightsFile
}

// Snapshot records the project as it is now: its adapters, each copied to
// an object of the handover's own, so that later changes to the project do
// not change what is handed over. A retry keeps the first snapshot.
func (a *Handovers) Snapshot(ctx context.Context, id string) (SnapshotSummary, error) {
	summary := func(s store.Snapshot) SnapshotSummary {
		out := SnapshotSummary{Adapters: len(s.Adapters), Members: s.Members}
		for _, ad := range s.Adapters {
			out.Bytes += ad.Size
		}
		return out
	}
	if snap, err := a.Store.HandoverSnapshot(ctx, id); err == nil {
		return summary(snap), nil
	}
	h, err := a.Store.HandoverByID(ctx, id)
	if err != nil {
		return SnapshotSummary{}, err
	}
	loras, err := a.Store.ProjectAdapters(ctx, h.Project)
	if err != nil {
		return SnapshotSummary{}, err
	}
	members, err := a.Store.ProjectMemberCount(ctx, h.Project)
	if err != nil {
		return SnapshotSummary{}, err
	}
	snap := store.Snapshot{Project: h.Project, TakenAt: h.CreatedAt, Members: members,
		Plan: &store.PlanPrice{Intro: a.Plan.Intro, Standard: a.Plan.Standard}}
	if len(loras) > 0 && a.Blob == nil {
		return SnapshotSummary{}, nonRetryable(errors.New("project "+h.Project+" has adapters but this server has no object store (--s3-bucket)"), ErrHandoverSetup)
	}
	for _, l := range loras {
		key := SnapshotKey(id, l.SHA256)
		if err := a.Blob.Copy(ctx, l.ObjectKey, key); err != nil {
			return SnapshotSummary{}, fmt.Errorf("snapshot of adapter %s: %w", l.ID, err)
		}
		snap.Adapters = append(snap.Adapters, store.SnapshotAdapter{LoRA: l, Config: l.Config, SnapshotKey: key})
	}
	snap, err = a.Store.SaveSnapshot(ctx, id, snap)
	return summary(snap), err
}

// HandoverMail names one email of a handover.
type HandoverMail struct {
	Handover string
	Kind     string
}

// SendMail sends one of the handover's emails, once: an email already
// recorded as sent is not sent again. Each offer or reminder carries an
// accept link with a token of its own.
func (a *Handovers) SendMail(ctx context.Context, in HandoverMail) error {
	if a.Mailer == nil || a.Mailer.Addr == "" {
		return nonRetryable(errors.New("no SMTP server configured (--smtp-addr)"), ErrHandoverSetup)
	}
	if sent, err := a.Store.MailSent(ctx, in.Handover, in.Kind); err != nil || sent {
		return err
	}
	h, err := a.Store.HandoverByID(ctx, in.Handover)
	if err != nil {
		return err
	}
	msg := mail.Message{To: h.Recipient, ID: h.ID + "." + in.Kind}
	plan := a.plan(ctx, h.ID)
	price := fmt.Sprintf("the first year for %s, then %s a year", plan.Intro.Dollars(), plan.Standard.Dollars())
	var link string
	switch in.Kind {
	case MailCompleted, MailReady, MailPayment1, MailPayment2:
		// The project is the new owner's: tell that account, not whoever
		// holds the link.
		email, err := a.Store.AccountEmail(ctx, h.NewOwner)
		if err != nil {
			return err
		}
		if email == "" {
			return nonRetryable(errors.New("account "+h.NewOwner+" has no email"), ErrHandoverSetup)
		}
		msg.To = email
	default:
		secret := token.New(store.HandoverTokenPrefix, 20)
		th := sha256.Sum256([]byte(secret))
		if err := a.Store.AddHandoverToken(ctx, h.ID, th[:]); err != nil {
			return err
		}
		link = strings.TrimRight(a.PublicURL, "/") + "/handover/" + secret
	}
	deadline := h.ExpiresAt.UTC().Format("Monday 2 January 2006, 15:04 MST")
	switch in.Kind {
	case MailOffer:
		name := ""
		if free, heldBy, err := a.Store.FreeCloneName(ctx, h.Project); err == nil && free != h.Project {
			name = fmt.Sprintf("\nYour copy will be named %s, because %s.\n", free, store.RenameReason(h.Project, heldBy, h.Host, ""))
		}
		msg.Subject = fmt.Sprintf("%s is handing project %s over to you", h.Host, h.Project)
		msg.Body = fmt.Sprintf(`%s would like you to take over the project %s on SuperInstance.

You get a copy of the project and its adapters, owned by you, and a
subscription at an introductory price: %s.
%s
Accept it here before %s:

  %s

or with the CLI:  si handover accept %s  (after si login as your account with this address)
Not for you? Decline it with:  si handover decline %s
`, h.Host, h.Project, price, name, deadline, link, link, link)
	case MailReminder1, MailReminder2:
		msg.Subject = fmt.Sprintf("Reminder: project %s is waiting for you", h.Project)
		msg.Body = fmt.Sprintf(`%s's handover of the project %s is still open. It expires on %s.

Accept it here:

  %s

or with the CLI:  si handover accept %s  (after si login as your account with this address)
`, h.Host, h.Project, deadline, link, link)
	case MailReady, MailPayment1, MailPayment2:
		pay, err := a.paymentPage(ctx, h)
		if err != nil {
			return err
		}
		if pay == "" {
			return nonRetryable(errors.New("billing is off on this server: start it with --stripe-key"), ErrHandoverSetup)
		}
		msg.Subject = fmt.Sprintf("Project %s is yours: give a payment method to start your plan", h.NewProject)
		if in.Kind != MailReady {
			msg.Subject = fmt.Sprintf("Reminder: your plan for project %s starts with a payment method", h.NewProject)
		}
		msg.Body = fmt.Sprintf(`The project %s belongs to the account %s now, with its adapters.
%s
Your plan (%s) starts once you give a payment method on Stripe's own page
(the link works for 24 hours; a reminder brings a new one):

  %s

Until then %s keeps paying as before, and no plan is charged to you.
`, h.NewProject, h.NewOwner, renamed(h), price, pay, h.Host)
	case MailCompleted:
		msg.Subject = fmt.Sprintf("Project %s is yours", h.NewProject)
		msg.Body = fmt.Sprintf(`The handover is complete. The project %s belongs to the account %s,
with its adapters, and your subscription is in place (schedule %s): %s.
%s`, h.NewProject, h.NewOwner, h.Schedule, price, renamed(h))
		saved, err := a.Store.PaymentSaved(ctx, h.ID)
		if err != nil {
			return err
		}
		pay := ""
		if !saved {
			if pay, err = a.paymentPage(ctx, h); err != nil {
				return err
			}
		}
		if pay != "" {
			msg.Body += fmt.Sprintf(`
Before your first invoice, give a payment method on Stripe's own page
(the link works for 24 hours):

  %s
`, pay)
		}
	default:
		return nonRetryable(fmt.Errorf("unknown handover email %q", in.Kind), ErrHandoverSetup)
	}
	if err := a.Mailer.Send(ctx, msg); err != nil {
		return err
	}
	return a.Store.RecordMail(ctx, h.ID, in.Kind, msg.ID)
}

// renamed is the sentence that says why the copy's name is not the
// project's, or "" when it kept it.
func renamed(h store.Handover) string {
	if h.NewProject == "" || h.NewProject == h.Project {
		return ""
	}
	return fmt.Sprintf("\nYour copy is named %s because %s.\n", h.NewProject, store.RenameReason(h.Project, h.Host, h.Host, h.NewOwner))
}

// plan is the price offered with the handover: its snapshot's, or the
// server's plan for a snapshot taken before offers carried one.
func (a *Handovers) plan(ctx context.Context, id string) billing.Plan {
	p := a.Plan
	if snap, err := a.Store.HandoverSnapshot(ctx, id); err == nil && snap.Plan != nil {
		p.Intro, p.Standard = snap.Plan.Intro, snap.Plan.Standard
	}
	return p
}

// paymentPage returns the Stripe-hosted page where the new owner's
// customer saves a payment method: the handover's newest one while it has
// over an hour left, else a new one (recorded, so that the webhook knows
// it). Every retry before it is recorded asks Stripe for the same session.
// Empty when billing is off or the account has no customer.
func (a *Handovers) paymentPage(ctx context.Context, h store.Handover) (string, error) {
	if a.Stripe == nil {
		return "", nil
	}
	acct, err := a.Store.AccountByID(ctx, h.NewOwner)
	if err != nil || acct.StripeCustomerID == "" {
		return "", err
	}
	n, open, ok, err := a.Store.PaymentSessions(ctx, h.ID, time.Now().Add(time.Hour))
	if err != nil {
		return "", err
	}
	if ok && open.Customer == acct.StripeCustomerID {
		return open.URL, nil
	}
	base := strings.TrimRight(a.PublicURL, "/")
	page, err := a.Stripe.SetupCheckoutPage(ctx, fmt.Sprintf("handover-%s-%d", h.ID, n+1), acct.StripeCustomerID,
		base+"/?payment_method=saved", base+"/")
	if err != nil {
		return "", stripeError(err)
	}
	if err := a.Store.AddPaymentSession(ctx, h.ID, store.PaymentSession{ID: page.ID, Customer: acct.StripeCustomerID,
		URL: page.URL, ExpiresAt: page.ExpiresAt}); err != nil {
		return "", err
	}
	return page.URL, nil
}

// AwaitPayment gives the new owner a Stripe customer (unless they have
// one; no subscription yet) and a payment page, and moves the handover to
// awaiting_payment. It
// reports whether the account already has a payment method saved through
// one of our pages, so that the handover need not wait.
func (a *Handovers) AwaitPayment(ctx context.Context, id string) (bool, error) {
	if a.Stripe == nil {
		return false, nonRetryable(errors.New("billing is off on this server: start it with --stripe-key"), ErrHandoverSetup)
	}
	h, err := a.Store.HandoverByID(ctx, id)
	if err != nil {
		return false, err
	}
	acct, err := a.Store.AccountByID(ctx, h.NewOwner)
	if err != nil {
		return false, err
	}
	if acct.StripeCustomerID == "" {
		customer, err := a.Stripe.EnsureCustomer(ctx, h.NewOwner, h.Recipient)
		if err != nil {
			return false, stripeError(err)
		}
		if err := a.Store.SetStripeCustomer(ctx, h.NewOwner, customer); err != nil {
			return false, err
		}
	}
	// The payment page first, so that a handover seen awaiting_payment
	// has one to show.
	saved, err := a.Store.PaymentSaved(ctx, id)
	if err != nil {
		return false, err
	}
	if !saved {
		h.NewOwner = acct.ID
		if _, err := a.paymentPage(ctx, h); err != nil {
			return false, err
		}
	}
	saved, err = a.Store.AwaitPayment(ctx, id)
	var he *store.HandoverError
	if errors.As(err, &he) {
		return false, nonRetryable(err, ErrHandoverClosed)
	}
	return saved, err
}

// PaymentSaved reports whether the handover's new owner has saved a
// payment method.
func (a *Handovers) PaymentSaved(ctx context.Context, id string) (bool, error) {
	return a.Store.PaymentSaved(ctx, id)
}

// CountReminder records that reminder n went out.
func (a *Handovers) CountReminder(ctx context.Context, id string, n int) error {
	return a.Store.CountReminder(ctx, id, n)
}

// AcceptHandoverInput names the handover and the account taking it: an
// existing account with the recipient's email, or (NewAccount) one to
// create with it. Request names the accept request.
type AcceptHandoverInput struct {
	Handover   string
	Account    string
	NewAccount bool   `json:",omitempty"`
	Request    string `json:",omitempty"`
	At         time.Time
}

// Accept records the recipient's account (creating it when NewAccount). A
// closed handover, or an account that is not the recipient's, is a
// non-retryable HandoverClosed error.
func (a *Handovers) Accept(ctx context.Context, in AcceptHandoverInput) (store.Handover, error) {
	h, err := a.Store.AcceptHandover(ctx, in.Handover, store.HandoverAcceptance{Account: in.Account,
		NewAccount: in.NewAccount, Request: in.Request}, in.At)
	var he *store.HandoverError
	if errors.As(err, &he) {
		return h, nonRetryable(err, ErrHandoverClosed)
	}
	return h, err
}

// CloneResult is the new owner's project.
type CloneResult struct {
	Project  string
	Adapters int
}

// Clone copies the snapshot's adapters to objects of the new owner's and
// registers the new project and adapters in one transaction. A retry
// copies again (the same bytes to the same keys) and finds the project.
func (a *Handovers) Clone(ctx context.Context, id string) (CloneResult, error) {
	h, err := a.Store.HandoverByID(ctx, id)
	if err != nil {
		return CloneResult{}, err
	}
	if h.NewOwner == "" {
		return CloneResult{}, nonRetryable(errors.New("handover "+id+" has not been accepted"), ErrHandoverClosed)
	}
	snap, err := a.Store.HandoverSnapshot(ctx, id)
	if err != nil {
		return CloneResult{}, err
	}
	ids, keys := map[string]string{}, map[string]string{}
	for _, ad := range snap.Adapters {
		key, err := lora.ObjectKey(h.NewOwner, ad.SHA256)
		if err != nil {
			return CloneResult{}, nonRetryable(err, ErrHandoverSetup)
		}
		if err := a.Blob.Copy(ctx, ad.SnapshotKey, key); err != nil {
			return CloneResult{}, fmt.Errorf("copy of adapter %s: %w", ad.ID, err)
		}
		ids[ad.SnapshotKey], keys[ad.SnapshotKey] = lora.NewID(), key
	}
	project, err := a.Store.CloneProject(ctx, id, ids, keys)
	var he *store.HandoverError
	if errors.As(err, &he) || errors.Is(err, store.ErrExists) {
		return CloneResult{}, nonRetryable(err, ErrHandoverClosed)
	}
	return CloneResult{Project: project, Adapters: len(snap.Adapters)}, err
}

// Unclone removes what Clone made: the new project, its adapter rows and
// the copied objects nothing else refers to.
func (a *Handovers) Unclone(ctx context.Context, id string) error {
	orphans, err := a.Store.UncloneProject(ctx, id)
	if err != nil {
		return err
	}
	for _, key := range orphans {
		if err := a.Blob.Delete(ctx, key); err != nil {
			return err
		}
	}
	return nil
}

// Subscribe gives the new owner a Stripe customer (unless they have one),
// its usage subscription (once Stripe is set up) and one subscription
// schedule at the plan's incentive pricing: one per account, however many
// handovers it takes. Every request carries an idempotency key from our own
// ids, and what is recorded is not asked for again.
func (a *Handovers) Subscribe(ctx context.Context, id string) (string, error) {
	if a.Stripe == nil {
		return "", nonRetryable(errors.New("billing is off on this server: start it with --stripe-key"), ErrHandoverSetup)
	}
	h, err := a.Store.HandoverByID(ctx, id)
	if err != nil {
		return "", err
	}
	if h.Schedule != "" {
		return h.Schedule, nil
	}
	customer, _, err := a.Stripe.Signup(ctx, a.Store, h.NewOwner, h.Recipient)
	if err != nil && !errors.Is(err, billing.ErrNoSetup) {
		return "", stripeError(err)
	}
	schedule, err := a.Store.PlanSchedule(ctx, h.NewOwner)
	if err != nil {
		return "", err
	}
	if schedule == "" {
		if schedule, err = a.Stripe.ScheduleSubscription(ctx, h.NewOwner, customer, a.plan(ctx, id)); err != nil {
			return "", stripeError(err)
		}
		if schedule, err = a.Store.SetPlanSchedule(ctx, h.NewOwner, schedule); err != nil {
			return "", err
		}
	}
	return schedule, a.Store.SetHandoverSchedule(ctx, id, schedule)
}

func stripeError(err error) error {
	if errors.Is(err, billing.ErrRejected) {
		return nonRetryable(err, ErrStripeRejected)
	}
	return err
}

// CloseHandoverInput moves a handover to a final state.
type CloseHandoverInput struct {
	Handover string
	State    string
	Failure  string
}

// Close moves the handover to its final state and deletes its snapshot
// copies (a finished handover needs them no more). It reports whether the
// state changed.
func (a *Handovers) Close(ctx context.Context, in CloseHandoverInput) (bool, error) {
	changed, err := a.Store.CloseHandover(ctx, in.Handover, in.State, in.Failure)
	if err != nil {
		return false, err
	}
	if snap, err := a.Store.HandoverSnapshot(ctx, in.Handover); err == nil && a.Blob != nil {
		for _, ad := range snap.Adapters {
			if err := a.Blob.Delete(ctx, ad.SnapshotKey); err != nil {
				return changed, err
			}
		}
	}
	return changed, nil
}
