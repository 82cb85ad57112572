package billing

import (
	"context"
	"errors"
	"fmt"

	"github.com/stripe/stripe-go/v76"
)

// SetupCheckoutKey is the idempotency key of the payment-method page made
// for why (a handover's id, say): every retry gets the same session.
func SetupCheckoutKey(why string) string { return "si-setup-checkout-" + why }

// SetupCheckout makes a Stripe-hosted page (a Checkout Session in setup
// mode) where the customer saves a payment method before its first
// invoice, and returns its URL. The same why within Stripe's 24-hour
// idempotency window returns the same session; a session expires after 24
// hours. successURL and cancelURL are where Stripe sends the customer back.
func (s *Stripe) SetupCheckout(ctx context.Context, why, customer, successURL, cancelURL string) (string, error) {
	if customer == "" {
		return "", errors.New("no Stripe customer to take a payment method for")
	}
	p := &stripe.CheckoutSessionParams{
		Mode:       stripe.String(string(stripe.CheckoutSessionModeSetup)),
		Customer:   stripe.String(customer),
		Currency:   stripe.String(string(stripe.CurrencyUSD)),
		SuccessURL: stripe.String(successURL),
		CancelURL:  stripe.String(cancelURL),
	}
	p.Context = ctx
	p.SetIdempotencyKey(SetupCheckoutKey(why))
	cs, err := s.api.CheckoutSessions.New(p)
	if err != nil {
		return "", classify(err)
	}
	if cs.URL == "" {
		return "", fmt.Errorf("stripe made checkout session %s without a URL", cs.ID)
	}
	return cs.URL, nil
}
