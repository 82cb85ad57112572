package billing

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/stripe/stripe-go/v76"
)

// SetupCheckoutKey is the idempotency key of the payment-method page made
// for why (a handover's id, say): every retry gets the same session.
func SetupCheckoutKey(why string) string { return "si-setup-checkout-" + why }

// CheckoutPage is a Stripe-hosted page for a customer: its session id,
// where to send the customer, and when it stops working.
type CheckoutPage struct {
	ID, URL   string
	ExpiresAt time.Time
}

// SetupCheckout makes a Stripe-hosted page (a Checkout Session in setup
// mode) where the customer saves a payment method before its first
// invoice, and returns its URL. The same why within Stripe's 24-hour
// idempotency window returns the same session; a session expires after 24
// hours. successURL and cancelURL are where Stripe sends the customer back.
func (s *Stripe) SetupCheckout(ctx context.Context, why, customer, successURL, cancelURL string) (string, error) {
	p, err := s.SetupCheckoutPage(ctx, why, customer, successURL, cancelURL)
	return p.URL, err
}

// SetupCheckoutPage is SetupCheckout returning the whole session: its id
// is what checkout.session.completed names when the customer finishes.
func (s *Stripe) SetupCheckoutPage(ctx context.Context, why, customer, successURL, cancelURL string) (CheckoutPage, error) {
	if customer == "" {
		return CheckoutPage{}, errors.New("no Stripe customer to take a payment method for")
	}
	p := &stripe.CheckoutSessionParams{
		Mode:       stripe.String(string(stripe.CheckoutSessionModeSetup)),
		Customer:   stripe.String(customer),
		Currency:   stripe.String(string(stripe.CurrencyUSD)),
		SuccessURL: stripe.String(successURL),
		CancelURL:  stripe.String(cancelURL),
	}
	p.AddMetadata("si_reason", why)
	p.Context = ctx
	p.SetIdempotencyKey(SetupCheckoutKey(why))
	cs, err := s.api.CheckoutSessions.New(p)
	if err != nil {
		return CheckoutPage{}, classify(err)
	}
	if cs.URL == "" {
		return CheckoutPage{}, fmt.Errorf("stripe made checkout session %s without a URL", cs.ID)
	}
	page := CheckoutPage{ID: cs.ID, URL: cs.URL, ExpiresAt: time.Unix(cs.ExpiresAt, 0).UTC()}
	if !page.ExpiresAt.After(time.Now()) {
		// A new session is open for 24 hours; an answer without a future
		// expiry (stripe-mock's fixed one) is taken to mean that, less an
		// hour for clocks that disagree.
		page.ExpiresAt = time.Now().Add(23 * time.Hour).UTC()
	}
	return page, nil
}
