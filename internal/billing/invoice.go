package billing

import (
	"context"
	"errors"
	"fmt"

	"github.com/stripe/stripe-go/v76"
)

// ErrNoUpcomingInvoice says Stripe has no upcoming invoice for the
// customer: it is subscribed to nothing.
var ErrNoUpcomingInvoice = errors.New("stripe has no upcoming invoice for this customer: it has no subscription (run si stripe setup, which subscribes it)")

// UpcomingInvoice is the part of a customer's next invoice the mesh reads:
// what Stripe will ask for, in cents, and the period it covers.
type UpcomingInvoice struct {
	Customer     string `json:"customer"`
	AmountDue    int64  `json:"amount_due_cents"`
	Total        int64  `json:"total_cents"`
	Currency     string `json:"currency"`
	PeriodStart  int64  `json:"period_start"`
	PeriodEnd    int64  `json:"period_end"`
	Lines        int    `json:"lines"`
	Subscription string `json:"subscription,omitempty"`
}

// Upcoming asks Stripe for the customer's upcoming invoice: for a metered
// subscription, the meter's usage so far in the period times the price.
func (s *Stripe) Upcoming(ctx context.Context, customer string) (UpcomingInvoice, error) {
	p := &stripe.InvoiceUpcomingParams{Customer: stripe.String(customer)}
	p.Context = ctx
	inv, err := s.api.Invoices.Upcoming(p)
	if err != nil {
		var se *stripe.Error
		if errors.As(err, &se) && se.Code == "invoice_upcoming_none" {
			return UpcomingInvoice{}, fmt.Errorf("%w: %s", ErrNoUpcomingInvoice, customer)
		}
		return UpcomingInvoice{}, classify(err)
	}
	u := UpcomingInvoice{Customer: customer, AmountDue: inv.AmountDue, Total: inv.Total, Currency: string(inv.Currency),
		PeriodStart: inv.PeriodStart, PeriodEnd: inv.PeriodEnd}
	if inv.Lines != nil {
		u.Lines = len(inv.Lines.Data)
	}
	if inv.Subscription != nil {
		u.Subscription = inv.Subscription.ID
	}
	return u, nil
}
