package harness

import (
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sort"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/superinstance/mesh/internal/billing"
)

// StripeDouble is a Stripe with real state, speaking stripe-go's wire format
// (form-encoded requests, JSON answers, Stripe's error shape) for what the
// mesh calls: customers, billing meters, meter events (identifiers unique
// within a window of the double's own clock), meter event summaries and
// meter event adjustments; and what `si stripe setup` and signup make and
// Stripe invoices from (products, prices, webhook endpoints, subscriptions,
// the upcoming invoice: stripedouble_billing.go). Idempotency-Key replays the first answer, as
// Stripe does for 24 hours. Faults are injected per route: commit and then
// lose the answer (a 500 or a dropped connection), refuse, or be down.
//
// Routes are added with Handle in the same style (see NewStripeDouble).
type StripeDouble struct {
	URL string

	mu     sync.Mutex
	mux    *http.ServeMux
	offset time.Duration
	// Window is how long an identifier stays unique. Default 24h.
	Window time.Duration
	// KeyWindow is how long an idempotency key's first answer is replayed.
	// Default 24h; zero replays nothing (as if Stripe had dropped the key).
	KeyWindow time.Duration
	customers map[string]url.Values
	events    []*DoubleMeterEvent
	idem      map[string]idemAnswer
	faults    map[string][]DoubleFault
	down      bool
	requests  map[string]int
	seq       int
	bill      *doubleBilling
}

// DoubleMeterEvent is one meter event the double holds.
type DoubleMeterEvent struct {
	Identifier string
	Customer   string
	Value      int64
	Timestamp  time.Time // the event's own time (whole seconds)
	Received   time.Time // by the double's clock
	Cancelled  bool
}

// DoubleFault is what the double does to one request on a route.
type DoubleFault int

const (
	// CommitLose5xx processes the request and answers 500 instead.
	CommitLose5xx DoubleFault = iota + 1
	// CommitDrop processes the request and closes the connection unanswered,
	// as a timeout or a network fault loses the answer.
	CommitDrop
	// Refuse answers 400 without processing, as a definite refusal.
	Refuse
	// Unavailable answers 503 without processing.
	Unavailable
)

type idemAnswer struct {
	status int
	body   []byte
	params [32]byte
	at     time.Time
}

// doubleRequest is a parsed request a route handler serves.
type doubleRequest struct {
	*http.Request
	Form url.Values
	Now  time.Time
}

// doubleHandler serves one route, under the double's lock: the answer's
// status and its JSON body.
type doubleHandler func(r *doubleRequest) (int, any)

// DoubleMeterID is the double's one meter, counting billing.DefaultMeterEvent.
const DoubleMeterID = "mtr_si_double"

// NewStripeDouble starts a Stripe double until cleanup.
func NewStripeDouble(t testing.TB) *StripeDouble {
	t.Helper()
	d := &StripeDouble{mux: http.NewServeMux(), Window: billing.IdentifierWindow, KeyWindow: billing.IdentifierWindow, customers: map[string]url.Values{},
		idem: map[string]idemAnswer{}, faults: map[string][]DoubleFault{}, requests: map[string]int{}}
	d.Handle("POST /v1/customers", d.createCustomer)
	d.Handle("GET /v1/billing/meters", d.listMeters)
	d.Handle("POST /v1/billing/meter_events", d.createMeterEvent)
	d.Handle("GET /v1/billing/meters/{id}/event_summaries", d.eventSummaries)
	d.Handle("POST /v1/billing/meter_event_adjustments", d.createAdjustment)
	d.addBillingRoutes()
	srv := httptest.NewServer(d.mux)
	t.Cleanup(srv.Close)
	d.URL = srv.URL
	return d
}

// Handle adds a route ("METHOD /path", http.ServeMux patterns); faults,
// outages, idempotency replay and request counts apply to it.
func (d *StripeDouble) Handle(route string, h doubleHandler) {
	d.mux.HandleFunc(route, func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		if err != nil {
			return
		}
		form := r.URL.Query()
		if r.Method == http.MethodPost {
			if form, err = url.ParseQuery(string(body)); err != nil {
				writeStripe(w, 400, stripeError("invalid_request_error", "", "the body is not form-encoded: "+err.Error()))
				return
			}
		}
		d.mu.Lock()
		d.requests[route]++
		var fault DoubleFault
		if q := d.faults[route]; len(q) > 0 {
			fault = q[0]
			d.faults[route] = q[1:]
		}
		if d.down && fault == 0 {
			fault = Unavailable
		}
		key := r.Header.Get("Idempotency-Key")
		now := time.Now().Add(d.offset)
		if prev, ok := d.idem[key]; ok && key != "" && now.Sub(prev.at) < d.KeyWindow && fault == Refuse {
			fault = 0 // Stripe answers a key it knows with its first answer, never a new refusal
		}
		switch fault {
		case Refuse:
			d.mu.Unlock()
			writeStripe(w, 400, stripeError("invalid_request_error", "resource_missing", "injected refusal: No such customer"))
			return
		case Unavailable:
			d.mu.Unlock()
			writeStripe(w, 503, stripeError("api_error", "", "injected outage: Stripe is unavailable"))
			return
		}
		status, answer := 0, []byte(nil)
		params := sha256.Sum256(append([]byte(route+"\n"), body...))
		if prev, ok := d.idem[key]; ok && key != "" && now.Sub(prev.at) < d.KeyWindow {
			if prev.params != params {
				status, answer = 400, mustJSON(stripeError("idempotency_error", "",
					"Keys for idempotent requests can only be used with the same parameters they were first used with."))
			} else {
				status, answer = prev.status, prev.body
				w.Header().Set("Idempotent-Replayed", "true")
			}
		} else {
			var v any
			status, v = h(&doubleRequest{Request: r, Form: form, Now: now})
			answer = mustJSON(v)
			if key != "" && r.Method == http.MethodPost && status < 500 {
				d.idem[key] = idemAnswer{status: status, body: answer, params: params, at: now}
			}
		}
		d.mu.Unlock()
		switch fault {
		case CommitLose5xx:
			writeStripe(w, 500, stripeError("api_error", "", "injected fault after the request was committed"))
		case CommitDrop:
			if hj, ok := w.(http.Hijacker); ok {
				if conn, _, err := hj.Hijack(); err == nil {
					_ = conn.Close()
					return
				}
			}
			writeStripe(w, 500, stripeError("api_error", "", "injected fault after the request was committed"))
		default:
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("Request-Id", fmt.Sprintf("req_double_%d", time.Now().UnixNano()))
			w.WriteHeader(status)
			_, _ = w.Write(answer)
		}
	})
}

// Fault queues faults for the next requests on route, one each.
func (d *StripeDouble) Fault(route string, faults ...DoubleFault) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.faults[route] = append(d.faults[route], faults...)
}

// FaultN queues n copies of fault on route.
func (d *StripeDouble) FaultN(route string, fault DoubleFault, n int) {
	for range n {
		d.Fault(route, fault)
	}
}

// ClearFaults drops every queued fault.
func (d *StripeDouble) ClearFaults() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.faults = map[string][]DoubleFault{}
}

// SetDown makes every request answer 503 unprocessed (true) until set back.
func (d *StripeDouble) SetDown(down bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.down = down
}

// SetKeyWindow sets KeyWindow under the double's lock.
func (d *StripeDouble) SetKeyWindow(w time.Duration) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.KeyWindow = w
}

// Advance moves the double's clock forward: identifiers older than Window
// and idempotency keys older than KeyWindow are forgotten, adjustments reach only events
// received within it.
func (d *StripeDouble) Advance(by time.Duration) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.offset += by
}

// Now is the double's clock.
func (d *StripeDouble) Now() time.Time {
	d.mu.Lock()
	defer d.mu.Unlock()
	return time.Now().Add(d.offset)
}

// Requests counts the requests route received, faulted ones included.
func (d *StripeDouble) Requests(route string) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.requests[route]
}

// Plant records a meter event as if it had reached Stripe by another path
// (a duplicate sent after the identifier window, say).
func (d *StripeDouble) Plant(e DoubleMeterEvent) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if e.Received.IsZero() {
		e.Received = time.Now().Add(d.offset)
	}
	d.events = append(d.events, &e)
}

// Events returns copies of the meter events with identifier (all when
// empty), in the order received.
func (d *StripeDouble) Events(identifier string) []DoubleMeterEvent {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []DoubleMeterEvent
	for _, e := range d.events {
		if identifier == "" || e.Identifier == identifier {
			out = append(out, *e)
		}
	}
	return out
}

// Held is the cents the customer's live (not cancelled) meter events hold.
func (d *StripeDouble) Held(customer string) int64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	var n int64
	for _, e := range d.events {
		if e.Customer == customer && !e.Cancelled {
			n += e.Value
		}
	}
	return n
}

// Holds reports whether a live meter event with identifier is held.
func (d *StripeDouble) Holds(identifier string) bool {
	for _, e := range d.Events(identifier) {
		if !e.Cancelled {
			return true
		}
	}
	return false
}

func (d *StripeDouble) createCustomer(r *doubleRequest) (int, any) {
	d.seq++
	id := fmt.Sprintf("cus_double%04d", d.seq)
	d.customers[id] = r.Form
	return 200, map[string]any{"id": id, "object": "customer", "email": r.Form.Get("email"), "created": r.Now.Unix(),
		"metadata": map[string]string{"si_account": r.Form.Get("metadata[si_account]")}}
}

func (d *StripeDouble) meter() map[string]any {
	return map[string]any{"id": DoubleMeterID, "object": "billing.meter", "event_name": billing.DefaultMeterEvent, "status": "active",
		"display_name": "SI usage (cents)", "default_aggregation": map[string]string{"formula": "sum"},
		"customer_mapping": map[string]string{"event_payload_key": "stripe_customer_id", "type": "by_id"},
		"value_settings":   map[string]string{"event_payload_key": "value"}}
}

func (d *StripeDouble) listMeters(r *doubleRequest) (int, any) {
	if s := r.Form.Get("status"); s != "" && s != "active" {
		return 200, stripeList(r.URL.Path, []any{})
	}
	return 200, stripeList(r.URL.Path, []any{d.meter()})
}

func (d *StripeDouble) createMeterEvent(r *doubleRequest) (int, any) {
	f := r.Form
	if f.Get("event_name") != billing.DefaultMeterEvent {
		return 400, stripeErrorParam("invalid_request_error", "resource_missing", "No active meter was found with event_name "+strconv.Quote(f.Get("event_name"))+".", "event_name")
	}
	customer := f.Get("payload[stripe_customer_id]")
	if _, ok := d.customers[customer]; !ok {
		return 400, stripeErrorParam("invalid_request_error", "resource_missing", "No such customer: "+strconv.Quote(customer), "payload[stripe_customer_id]")
	}
	value, err := strconv.ParseInt(f.Get("payload[value]"), 10, 64)
	if err != nil || value < 0 {
		return 400, stripeErrorParam("invalid_request_error", "", "payload[value] must be a non-negative whole number", "payload[value]")
	}
	ts := r.Now
	if s := f.Get("timestamp"); s != "" {
		sec, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return 400, stripeErrorParam("invalid_request_error", "", "timestamp must be a Unix time", "timestamp")
		}
		ts = time.Unix(sec, 0)
	}
	if ts.Before(r.Now.Add(-35*24*time.Hour)) || ts.After(r.Now.Add(5*time.Minute)) {
		return 400, stripeErrorParam("invalid_request_error", "", "timestamp must be within the past 35 calendar days or up to 5 minutes in the future", "timestamp")
	}
	id := f.Get("identifier")
	if id == "" {
		d.seq++
		id = fmt.Sprintf("double_%d", d.seq)
	}
	for _, e := range d.events {
		if e.Identifier == id && r.Now.Sub(e.Received) < d.Window {
			return 400, stripeError("invalid_request_error", "", "An event already exists with identifier "+id+".")
		}
	}
	d.events = append(d.events, &DoubleMeterEvent{Identifier: id, Customer: customer, Value: value, Timestamp: ts.UTC(), Received: r.Now})
	return 200, map[string]any{"object": "billing.meter_event", "event_name": f.Get("event_name"), "identifier": id, "created": r.Now.Unix(),
		"livemode": false, "timestamp": ts.Unix(), "payload": map[string]string{"stripe_customer_id": customer, "value": f.Get("payload[value]")}}
}

func (d *StripeDouble) eventSummaries(r *doubleRequest) (int, any) {
	if r.PathValue("id") != DoubleMeterID {
		return 404, stripeError("invalid_request_error", "resource_missing", "No such billing meter: "+strconv.Quote(r.PathValue("id")))
	}
	customer := r.Form.Get("customer")
	start, err1 := strconv.ParseInt(r.Form.Get("start_time"), 10, 64)
	end, err2 := strconv.ParseInt(r.Form.Get("end_time"), 10, 64)
	if customer == "" || err1 != nil || err2 != nil || end <= start {
		return 400, stripeError("invalid_request_error", "parameter_missing", "customer, start_time and end_time (after start_time) are required")
	}
	if start%60 != 0 || end%60 != 0 {
		return 400, stripeErrorParam("invalid_request_error", "", "start_time and end_time must be aligned with minute boundaries", "start_time")
	}
	var sum int64
	for _, e := range d.events {
		if e.Customer == customer && !e.Cancelled && e.Timestamp.Unix() >= start && e.Timestamp.Unix() < end {
			sum += e.Value
		}
	}
	return 200, stripeList(r.URL.Path, []any{map[string]any{"object": "billing.meter_event_summary", "id": fmt.Sprintf("mtrusg_%d_%d", start, end),
		"aggregated_value": sum, "start_time": start, "end_time": end, "meter": DoubleMeterID, "livemode": false}})
}

func (d *StripeDouble) createAdjustment(r *doubleRequest) (int, any) {
	if r.Form.Get("type") != "cancel" {
		return 400, stripeErrorParam("invalid_request_error", "", "type must be cancel", "type")
	}
	id := r.Form.Get("cancel[identifier]")
	var newest *DoubleMeterEvent
	for _, e := range d.events {
		if e.Identifier == id && !e.Cancelled && r.Now.Sub(e.Received) < d.Window {
			newest = e
		}
	}
	if newest == nil {
		return 400, stripeErrorParam("invalid_request_error", "resource_missing",
			"No meter event with identifier "+strconv.Quote(id)+" received in the last 24 hours to cancel.", "cancel[identifier]")
	}
	newest.Cancelled = true
	return 200, map[string]any{"object": "billing.meter_event_adjustment", "event_name": r.Form.Get("event_name"), "livemode": false,
		"status": "pending", "type": "cancel", "cancel": map[string]string{"identifier": id}}
}

func stripeList(path string, data []any) map[string]any {
	return map[string]any{"object": "list", "url": path, "has_more": false, "data": data}
}

func stripeError(typ, code, msg string) map[string]any {
	return stripeErrorParam(typ, code, msg, "")
}

func stripeErrorParam(typ, code, msg, param string) map[string]any {
	e := map[string]string{"type": typ, "message": msg}
	if code != "" {
		e["code"] = code
	}
	if param != "" {
		e["param"] = param
	}
	return map[string]any{"error": e}
}

func writeStripe(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(mustJSON(v))
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

// Customers lists the double's customer ids, sorted.
func (d *StripeDouble) Customers() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make([]string, 0, len(d.customers))
	for id := range d.customers {
		out = append(out, id)
	}
	sort.Strings(out)
	return out
}
