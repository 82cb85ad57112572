package billing

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/stripe/stripe-go/v76"
)

// ErrDuplicateEvent says Stripe already holds a meter event with the
// request's identifier: an earlier attempt of the same flush was committed.
// Stripe answers such a request 400 invalid_request_error "An event already
// exists with identifier ...", while the identifier is within its
// uniqueness window (at least 24 hours).
var ErrDuplicateEvent = errors.New("stripe already holds a meter event with this identifier")

// ErrNotProcessed says Stripe answered without processing the request (429
// too many requests): it holds nothing from it, and a retry may succeed.
var ErrNotProcessed = errors.New("stripe did not process the request")

func notProcessed(err error) bool {
	var se *stripe.Error
	return errors.As(err, &se) && se.HTTPStatusCode == http.StatusTooManyRequests
}

// IdentifierWindow is how long Stripe keeps a meter event identifier unique
// and an idempotency key's answer, counted from when it received the request.
const IdentifierWindow = 24 * time.Hour

// duplicateEvent reports whether err is Stripe's answer to a meter event
// whose identifier it already holds.
func duplicateEvent(err error) bool {
	var se *stripe.Error
	return errors.As(err, &se) && se.HTTPStatusCode == http.StatusBadRequest &&
		strings.Contains(strings.ToLower(se.Msg), "already exists with identifier")
}

// meterIDs caches the meter id of each event name, per client.
type meterIDs struct {
	mu  sync.Mutex
	ids map[string]string
}

// meterID finds the active meter that counts s.meterEvent.
func (s *Stripe) meterID(ctx context.Context) (string, error) {
	s.meters.mu.Lock()
	defer s.meters.mu.Unlock()
	if id, ok := s.meters.ids[s.meterEvent]; ok {
		return id, nil
	}
	p := &stripe.BillingMeterListParams{Status: stripe.String(string(stripe.BillingMeterStatusActive))}
	p.Context = ctx
	it := s.api.BillingMeters.List(p)
	for it.Next() {
		if m := it.BillingMeter(); m.EventName == s.meterEvent {
			if s.meters.ids == nil {
				s.meters.ids = map[string]string{}
			}
			s.meters.ids[s.meterEvent] = m.ID
			return m.ID, nil
		}
	}
	if err := it.Err(); err != nil {
		return "", classify(err)
	}
	return "", fmt.Errorf("%w: no active Stripe meter counts event %q; create one (Billing > Meters) or set --stripe-meter-event", ErrRejected, s.meterEvent)
}

// MeterWindow is the minute-aligned window [from, from+1m) that holds the
// meter event timestamp at: meter event summaries are asked for in whole
// minutes.
func MeterWindow(at time.Time) (from, to time.Time) {
	from = at.UTC().Truncate(time.Minute)
	return from, from.Add(time.Minute)
}

// MeterTotal is what Stripe's meter event summaries hold for customer with
// event timestamps in [from, to), in the meter's unit (cents). Summaries
// are eventually consistent: ask only about events older than a few
// minutes, and trust a total only well after the events were sent.
func (s *Stripe) MeterTotal(ctx context.Context, customer string, from, to time.Time) (int64, error) {
	meter, err := s.meterID(ctx)
	if err != nil {
		return 0, err
	}
	p := &stripe.BillingMeterEventSummaryListParams{ID: stripe.String(meter), Customer: stripe.String(customer),
		StartTime: stripe.Int64(from.Unix()), EndTime: stripe.Int64(to.Unix())}
	p.Context = ctx
	it := s.api.BillingMeterEventSummaries.List(p)
	var total float64
	for it.Next() {
		total += it.BillingMeterEventSummary().AggregatedValue
	}
	if err := it.Err(); err != nil {
		return 0, classify(err)
	}
	if total < 0 || total > 1<<53 || total != math.Trunc(total) {
		return 0, fmt.Errorf("stripe's meter %s holds %v for customer %s: not a whole number of cents", meter, total, customer)
	}
	return int64(total), nil
}

// ErrCancelRefused says Stripe definitely refused a meter event adjustment
// (it allows one only within 24 hours of receiving the event): the event
// stays counted, and asking again will not change that. It wraps ErrRejected.
var ErrCancelRefused = errors.New("stripe refused to cancel the meter event")

// CancelMeterEvent cancels the meter event with identifier by a meter event
// adjustment; Stripe allows it within 24 hours of receiving the event. key
// is the adjustment's idempotency key: the same for a retry of the same
// cancellation. A definite refusal is ErrCancelRefused.
func (s *Stripe) CancelMeterEvent(ctx context.Context, identifier, key string) error {
	p := &stripe.BillingMeterEventAdjustmentParams{
		EventName: stripe.String(s.meterEvent),
		Type:      stripe.String(string(stripe.BillingMeterEventAdjustmentTypeCancel)),
		Cancel:    &stripe.BillingMeterEventAdjustmentCancelParams{Identifier: stripe.String(identifier)},
	}
	p.Context = ctx
	p.SetIdempotencyKey("cancel-" + key)
	_, err := s.api.BillingMeterEventAdjustments.New(p)
	err = classify(err)
	if errors.Is(err, ErrRejected) {
		return fmt.Errorf("%w: %w", ErrCancelRefused, err)
	}
	return err
}
