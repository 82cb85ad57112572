package billing

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"time"

	"github.com/stripe/stripe-go/v76"
	"github.com/stripe/stripe-go/v76/webhook"

	"github.com/superinstance/mesh/internal/httpjson"
	"github.com/superinstance/mesh/internal/store"
)

// MaxWebhookBytes bounds a webhook body.
const MaxWebhookBytes = 64 << 10

// Invoices applies invoice events to the accounts of Stripe customers.
type Invoices interface {
	ApplyInvoiceEvent(ctx context.Context, ev store.InvoiceEvent) (store.InvoiceOutcome, error)
}

var _ Invoices = (*store.Store)(nil)

// WebhookEvents are the events the mesh acts on; `si stripe setup` enables
// exactly these on the webhook endpoint.
var WebhookEvents = []string{store.InvoicePaid, store.InvoicePaymentFailed, store.InvoiceVoided, store.CheckoutSessionCompleted}

// Payments applies completed Checkout Sessions: a handover's new owner
// saving a payment method.
type Payments interface {
	ApplyPaymentEvent(ctx context.Context, ev store.PaymentEvent) (store.PaymentOutcome, error)
}

var _ Payments = (*store.Store)(nil)

// Webhook receives Stripe events. Only a body whose Stripe-Signature verifies
// with Secret and is no older than Tolerance (default 5 minutes) is acted on;
// anything else gets 400 and changes nothing. invoice.payment_failed
// suspends the customer's account until the invoice is paid or voided;
// events are applied in Stripe's order (an old failure delivered after the
// payment changes nothing) and each event id once (a redelivery changes
// nothing). A payment never lifts a credit-ceiling suspension.
//
// checkout.session.completed, for a setup-mode session the mesh made for a
// handover and for that session's own customer, records that the new owner
// saved a payment method (once per event id) and tells the handovers that
// waited for it through PaymentSaved.
type Webhook struct {
	Secret    string
	Tolerance time.Duration
	Accounts  Invoices
	// Payments applies checkout.session.completed; nil acknowledges those
	// events and changes nothing.
	Payments Payments
	// PaymentSaved is told the handovers that stopped waiting for a payment
	// method (so that their workflows go on now); nil leaves them to notice
	// it themselves. Its error is logged: the state is already recorded.
	PaymentSaved func(ctx context.Context, handovers []string) error
	Logger       *slog.Logger
}

func (h *Webhook) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxWebhookBytes))
	if err != nil {
		httpjson.Error(w, http.StatusRequestEntityTooLarge, "body_too_large", "webhook body over 64 KiB")
		return
	}
	tol := h.Tolerance
	if tol == 0 {
		tol = webhook.DefaultTolerance
	}
	ev, err := webhook.ConstructEventWithOptions(body, r.Header.Get("Stripe-Signature"), h.Secret,
		webhook.ConstructEventOptions{Tolerance: tol, IgnoreAPIVersionMismatch: true})
	if err != nil {
		httpjson.Error(w, http.StatusBadRequest, "invalid_signature", err.Error())
		return
	}
	switch string(ev.Type) {
	case store.InvoicePaymentFailed, store.InvoicePaid, store.InvoiceVoided:
	case store.CheckoutSessionCompleted:
		if h.Payments != nil {
			h.checkoutCompleted(w, r, ev.ID, ev.Created, ev.Data)
			return
		}
		fallthrough
	default:
		httpjson.Write(w, http.StatusOK, map[string]any{"received": true, "ignored": string(ev.Type)})
		return
	}
	if ev.ID == "" || ev.Created <= 0 {
		httpjson.Error(w, http.StatusBadRequest, "invalid_event", "event without an id or a created time")
		return
	}
	var invoice struct {
		ID       string          `json:"id"`
		Customer json.RawMessage `json:"customer"`
	}
	if ev.Data == nil {
		httpjson.Error(w, http.StatusBadRequest, "invalid_event", "event without data")
		return
	}
	if err := json.Unmarshal(ev.Data.Raw, &invoice); err != nil || invoice.ID == "" {
		httpjson.Error(w, http.StatusBadRequest, "invalid_event", "event without an invoice id")
		return
	}
	customer := customerID(invoice.Customer)
	if customer == "" {
		httpjson.Error(w, http.StatusBadRequest, "invalid_event", "invoice without a customer")
		return
	}
	out, err := h.Accounts.ApplyInvoiceEvent(r.Context(), store.InvoiceEvent{
		ID: ev.ID, Type: string(ev.Type), Customer: customer, Invoice: invoice.ID, Created: time.Unix(ev.Created, 0).UTC()})
	if err != nil {
		if h.Logger != nil {
			h.Logger.Error("stripe webhook", "event", ev.ID, "error", err)
		}
		// Stripe redelivers on a 5xx; the event is applied at most once.
		httpjson.Error(w, http.StatusInternalServerError, "unavailable", "could not record the event; Stripe will retry")
		return
	}
	// An unknown customer is acknowledged: there is no account of ours to change.
	httpjson.Write(w, http.StatusOK, map[string]any{"received": true, "event": ev.ID, "account": out.Account, "outcome": out.Outcome})
}

// checkoutCompleted applies a checkout.session.completed event.
func (h *Webhook) checkoutCompleted(w http.ResponseWriter, r *http.Request, id string, created int64, data *stripe.EventData) {
	if id == "" || created <= 0 || data == nil {
		httpjson.Error(w, http.StatusBadRequest, "invalid_event", "event without an id, a created time or data")
		return
	}
	var session struct {
		ID       string          `json:"id"`
		Object   string          `json:"object"`
		Mode     string          `json:"mode"`
		Status   string          `json:"status"`
		Customer json.RawMessage `json:"customer"`
	}
	if err := json.Unmarshal(data.Raw, &session); err != nil || session.ID == "" || session.Object != "checkout.session" {
		httpjson.Error(w, http.StatusBadRequest, "invalid_event", "event without a checkout session")
		return
	}
	customer := customerID(session.Customer)
	if customer == "" {
		// A session without a customer is none of ours.
		httpjson.Write(w, http.StatusOK, map[string]any{"received": true, "event": id, "outcome": "no_match"})
		return
	}
	out, err := h.Payments.ApplyPaymentEvent(r.Context(), store.PaymentEvent{ID: id, Session: session.ID, Customer: customer,
		Mode: session.Mode, Status: session.Status, Created: time.Unix(created, 0).UTC()})
	if err != nil {
		if h.Logger != nil {
			h.Logger.Error("stripe webhook", "event", id, "error", err)
		}
		httpjson.Error(w, http.StatusInternalServerError, "unavailable", "could not record the event; Stripe will retry")
		return
	}
	if len(out.Handovers) > 0 && h.PaymentSaved != nil {
		if err := h.PaymentSaved(r.Context(), out.Handovers); err != nil && h.Logger != nil {
			h.Logger.Warn("handover not told of its payment method; it checks again by itself", "event", id, "error", err)
		}
	}
	httpjson.Write(w, http.StatusOK, map[string]any{"received": true, "event": id, "account": out.Account, "outcome": out.Outcome,
		"handovers": out.Handovers})
}

// customerID reads "cus_..." or an expanded {"id": "cus_..."}.
func customerID(raw json.RawMessage) string {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s
	}
	var obj struct {
		ID string `json:"id"`
	}
	if json.Unmarshal(raw, &obj) == nil {
		return obj.ID
	}
	return ""
}
