package billing

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"time"

	"github.com/stripe/stripe-go/v76/webhook"

	"github.com/superinstance/mesh/internal/httpjson"
	"github.com/superinstance/mesh/internal/store"
)

// MaxWebhookBytes bounds a webhook body.
const MaxWebhookBytes = 64 << 10

// PaymentStatus suspends or reinstates the account of a Stripe customer.
type PaymentStatus interface {
	SetPaymentStatus(ctx context.Context, customer string, paid bool) (string, error)
}

// Webhook receives Stripe events. Only a body whose Stripe-Signature verifies
// with Secret and is no older than Tolerance (default 5 minutes) is acted on;
// anything else gets 400 and changes nothing. invoice.payment_failed
// suspends the customer's account, invoice.paid reinstates it; the same
// event delivered twice leaves the same state.
type Webhook struct {
	Secret    string
	Tolerance time.Duration
	Accounts  PaymentStatus
	Logger    *slog.Logger
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
	var paid bool
	switch ev.Type {
	case "invoice.payment_failed":
		paid = false
	case "invoice.paid":
		paid = true
	default:
		httpjson.Write(w, http.StatusOK, map[string]any{"received": true, "ignored": string(ev.Type)})
		return
	}
	var invoice struct {
		Customer json.RawMessage `json:"customer"`
	}
	if ev.Data == nil {
		httpjson.Error(w, http.StatusBadRequest, "invalid_event", "event without data")
		return
	}
	if err := json.Unmarshal(ev.Data.Raw, &invoice); err != nil {
		httpjson.Error(w, http.StatusBadRequest, "invalid_event", "invoice without a customer")
		return
	}
	customer := customerID(invoice.Customer)
	if customer == "" {
		httpjson.Error(w, http.StatusBadRequest, "invalid_event", "invoice without a customer")
		return
	}
	account, err := h.Accounts.SetPaymentStatus(r.Context(), customer, paid)
	// An unknown customer is acknowledged: there is no account of ours to change.
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		if h.Logger != nil {
			h.Logger.Error("stripe webhook", "event", ev.ID, "error", err)
		}
		// Stripe redelivers on a 5xx; the change is idempotent.
		httpjson.Error(w, http.StatusInternalServerError, "unavailable", "could not record the event; Stripe will retry")
		return
	}
	httpjson.Write(w, http.StatusOK, map[string]any{"received": true, "event": ev.ID, "account": account})
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
