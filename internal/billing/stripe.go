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
)

// DefaultMeterEvent is the meter event name flushes report under.
const DefaultMeterEvent = "si_usage_cents"

// Stripe is a Stripe API client. Retries are the caller's (Temporal's): the
// library's own are off so every attempt is visible.
type Stripe struct {
	api        *client.API
	meterEvent string
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
