// Package billing talks to Stripe: customers at signup, one billing meter
// event per flush, and signed webhooks. Every request that changes something
// carries an idempotency key derived from our own ids, so a retry is the same
// request.
package billing

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/stripe/stripe-go/v76"
	"github.com/stripe/stripe-go/v76/client"

	"github.com/superinstance/mesh/internal/money"
)

// DefaultMeterEvent is the meter event name flushes report under.
const DefaultMeterEvent = "si_usage_cents"

// Stripe is a Stripe API client. Retries are the caller's (Temporal's): the
// library's own are off so every attempt is visible.
type Stripe struct {
	api        *client.API
	meterEvent string
	meters     meterIDs
}

// NewStripe returns a client for baseURL (https://api.stripe.com, or a
// stripe-mock) with the secret key.
func NewStripe(baseURL, key, meterEvent string) *Stripe {
	if meterEvent == "" {
		meterEvent = DefaultMeterEvent
	}
	zero := int64(0)
	cfg := &stripe.BackendConfig{
		URL:               stripe.String(baseURL),
		MaxNetworkRetries: &zero,
		HTTPClient:        &http.Client{Timeout: 30 * time.Second},
		LeveledLogger:     &stripe.LeveledLogger{Level: stripe.LevelNull},
	}
	b := stripe.GetBackendWithConfig(stripe.APIBackend, cfg)
	return &Stripe{api: client.New(key, &stripe.Backends{API: b, Connect: b, Uploads: b}), meterEvent: meterEvent}
}

// ErrRejected wraps a permanent refusal (a 4xx other than 409 and 429).
var ErrRejected = errors.New("stripe rejected the request")

// classify marks permanent failures with ErrRejected; everything else
// (network errors, 409, 429, 5xx) may succeed on retry.
func classify(err error) error {
	if err == nil {
		return nil
	}
	var se *stripe.Error
	if errors.As(err, &se) {
		code := se.HTTPStatusCode
		if code >= 400 && code < 500 && code != http.StatusConflict && code != http.StatusTooManyRequests {
			return fmt.Errorf("%w (%d %s): %s", ErrRejected, code, se.Code, se.Msg)
		}
		return fmt.Errorf("stripe %d: %s", code, se.Msg)
	}
	return err
}

// MeterEventKey is the idempotency key and meter event identifier of a
// flush: the same for every retry of it.
func MeterEventKey(flushID string) string { return "si-" + flushID }

// SendMeterEvent reports cents for customer as one billing meter event.
// Stripe answering that it already holds the identifier is ErrDuplicateEvent:
// an earlier attempt of the same flush was committed.
func (s *Stripe) SendMeterEvent(ctx context.Context, flushID, customer string, cents int64, at time.Time) error {
	p := &stripe.BillingMeterEventParams{
		EventName:  stripe.String(s.meterEvent),
		Identifier: stripe.String(MeterEventKey(flushID)),
		Payload:    map[string]string{"stripe_customer_id": customer, "value": strconv.FormatInt(cents, 10)},
		Timestamp:  stripe.Int64(at.Unix()),
	}
	p.Context = ctx
	p.SetIdempotencyKey(MeterEventKey(flushID))
	_, err := s.api.BillingMeterEvents.New(p)
	if duplicateEvent(err) {
		return fmt.Errorf("%w: %s", ErrDuplicateEvent, MeterEventKey(flushID))
	}
	if notProcessed(err) {
		return fmt.Errorf("%w: %s", ErrNotProcessed, classify(err))
	}
	return classify(err)
}

// EnsureCustomer creates the account's Stripe customer; a retry with the same
// account returns the same customer (idempotency key from the account id).
func (s *Stripe) EnsureCustomer(ctx context.Context, account, email string) (string, error) {
	p := &stripe.CustomerParams{Email: stripe.String(email)}
	p.AddMetadata("si_account", account)
	p.Context = ctx
	p.SetIdempotencyKey("si-customer-" + account)
	c, err := s.api.Customers.New(p)
	if err != nil {
		return "", classify(err)
	}
	return c.ID, nil
}

// Plan is the subscription a handed-over project's new owner gets: the
// first year at Intro, then Standard, both billed yearly.
type Plan struct {
	// Product is the Stripe product id; it is created if missing.
	Product         string
	Intro, Standard money.Micros
}

// DefaultPlan is the incentive pricing: $30 for the first year, then $60 a year.
var DefaultPlan = Plan{Product: "si_cloud", Intro: 30 * money.Dollar, Standard: 60 * money.Dollar}

// ensureProduct returns the plan's product, creating it when Stripe does not have it.
func (s *Stripe) ensureProduct(ctx context.Context, id string) error {
	gp := &stripe.ProductParams{}
	gp.Context = ctx
	_, err := s.api.Products.Get(id, gp)
	var se *stripe.Error
	if err == nil || !errors.As(err, &se) || se.HTTPStatusCode != http.StatusNotFound {
		return classify(err)
	}
	p := &stripe.ProductParams{ID: stripe.String(id), Name: stripe.String("SuperInstance Cloud")}
	p.Context = ctx
	p.SetIdempotencyKey("si-product-" + id)
	_, err = s.api.Products.New(p)
	return classify(err)
}

// ScheduleKey is the idempotency key of the plan subscription schedule of
// account: one per account, however many handovers it takes.
func ScheduleKey(account string) string { return "si-plan-schedule-" + account }

// ScheduleSubscription subscribes the account's customer to plan through a
// subscription schedule of two yearly phases (intro, then standard; the
// subscription carries on at the standard price when the schedule ends).
// Every call for the same account sends the same request under the same
// idempotency key.
func (s *Stripe) ScheduleSubscription(ctx context.Context, account, customer string, plan Plan) (string, error) {
	if err := s.ensureProduct(ctx, plan.Product); err != nil {
		return "", err
	}
	phase := func(price money.Micros) (*stripe.SubscriptionSchedulePhaseParams, error) {
		cents, rest := money.Cents(price)
		if rest != 0 || cents <= 0 {
			return nil, fmt.Errorf("plan price %s is not a positive whole number of cents", price)
		}
		return &stripe.SubscriptionSchedulePhaseParams{
			Items: []*stripe.SubscriptionSchedulePhaseItemParams{{
				PriceData: &stripe.SubscriptionItemPriceDataParams{
					Currency: stripe.String(string(stripe.CurrencyUSD)), Product: stripe.String(plan.Product),
					Recurring:  &stripe.SubscriptionItemPriceDataRecurringParams{Interval: stripe.String("year")},
					UnitAmount: stripe.Int64(cents),
				},
				Quantity: stripe.Int64(1),
			}},
			Iterations: stripe.Int64(1),
		}, nil
	}
	intro, err := phase(plan.Intro)
	if err != nil {
		return "", err
	}
	standard, err := phase(plan.Standard)
	if err != nil {
		return "", err
	}
	p := &stripe.SubscriptionScheduleParams{
		Customer:     stripe.String(customer),
		StartDateNow: stripe.Bool(true),
		EndBehavior:  stripe.String("release"),
		Phases:       []*stripe.SubscriptionSchedulePhaseParams{intro, standard},
	}
	p.AddMetadata("si_account", account)
	p.Context = ctx
	p.SetIdempotencyKey(ScheduleKey(account))
	sch, err := s.api.SubscriptionSchedules.New(p)
	if err != nil {
		return "", classify(err)
	}
	return sch.ID, nil
}
