package integration

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.temporal.io/sdk/client"

	"github.com/superinstance/mesh/internal/money"
	"github.com/superinstance/mesh/internal/simulator"
	"github.com/superinstance/mesh/internal/store"
	"github.com/superinstance/mesh/test/harness"
	"github.com/superinstance/mesh/workers"
	"github.com/superinstance/mesh/workflows"
)

// charge logs usage on account until its unbilled balance is at least want.
func charge(t *testing.T, s *store.Store, account string, want money.Micros) {
	t.Helper()
	ctx := context.Background()
	for i := 0; ; i++ {
		c, err := s.LogUsage(ctx, store.Usage{EventID: fmt.Sprintf("%s-e%d", account, i), Account: account, Project: "p",
			Model: "si-simulator-large", PromptTokens: 100_000, CompletionTokens: 7_777})
		if err != nil {
			t.Fatal(err)
		}
		if c.Unbilled >= want {
			return
		}
	}
}

func flush(t *testing.T, m *harness.Mesh, account string) (workflows.FlushResult, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	id, err := m.Store.NextFlushID(ctx, account)
	if err != nil {
		t.Fatal(err)
	}
	run, err := m.Client.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: id, TaskQueue: workers.CloudQueue},
		workflows.FlushWorkflow, workflows.FlushInput{Account: account, FlushID: id, SendAttempts: 6})
	if err != nil {
		t.Fatal(err)
	}
	var res workflows.FlushResult
	err = run.Get(ctx, &res)
	return res, err
}

func customerAccount(t *testing.T, m *harness.Mesh, id string) {
	t.Helper()
	m.Account(t, id)
	cus, err := m.Stripe.EnsureCustomer(context.Background(), id, id+"@example.com")
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Store.SetStripeCustomer(context.Background(), id, cus); err != nil {
		t.Fatal(err)
	}
}

// TestFlushToStripeMock sends a flush to stripe-mock, which validates every
// request against Stripe's API description.
func TestFlushToStripeMock(t *testing.T) {
	m := harness.StartMesh(t, simulator.Options{}, harness.WithStripe(harness.StripeMock(t)))
	customerAccount(t, m, "shop")
	charge(t, m.Store, "shop", 3*money.Dollar+1)
	ctx := context.Background()
	before, _ := m.Store.AccountByID(ctx, "shop")
	res, err := flush(t, m, "shop")
	if err != nil {
		t.Fatal(err)
	}
	cents, rest := money.Cents(before.Unbilled)
	after, _ := m.Store.AccountByID(ctx, "shop")
	if res.Flush.State != "sent" || res.Flush.AmountCents != cents || after.Unbilled != rest || res.Flush.Attempts != 1 {
		t.Fatalf("flush %+v; unbilled %s -> %s, want %d cents sent and %s kept", res.Flush, before.Unbilled, after.Unbilled, cents, rest)
	}
	if b, _ := m.Store.Books(ctx, "shop"); !b.Balanced() || b.Flushed != money.Micros(cents)*money.Cent {
		t.Fatalf("books %+v", b)
	}
	// Under a cent left: nothing to flush, and no flush row.
	res, err = flush(t, m, "shop")
	if err != nil || res.Skipped == "" {
		t.Fatalf("second flush %+v %v", res, err)
	}
}

// faultyStripe commits each meter event, then fails the first responses for
// it (a 500, then a dropped connection), as a network or Stripe fault would;
// repeats of a key get the stored answer, as Stripe's idempotency does.
type faultyStripe struct {
	mu       sync.Mutex
	failures map[string]int
	values   map[string]int64 // by idempotency key
	requests int
	reject   bool
}

func (f *faultyStripe) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/v1/customers" {
		_, _ = io.WriteString(w, `{"id":"cus_faulty","object":"customer"}`)
		return
	}
	body, _ := io.ReadAll(r.Body)
	form, _ := url.ParseQuery(string(body))
	key := r.Header.Get("Idempotency-Key")
	f.mu.Lock()
	f.requests++
	if f.reject {
		f.mu.Unlock()
		w.WriteHeader(http.StatusBadRequest)
		_, _ = io.WriteString(w, `{"error":{"type":"invalid_request_error","code":"resource_missing","message":"No such customer"}}`)
		return
	}
	if form.Get("identifier") != key {
		f.mu.Unlock()
		http.Error(w, "identifier and idempotency key differ", http.StatusBadRequest)
		return
	}
	if _, seen := f.values[key]; !seen {
		v, _ := strconv.ParseInt(form.Get("payload[value]"), 10, 64)
		f.values[key] = v // committed before the response fails
	}
	n := f.failures[key]
	f.failures[key] = n + 1
	f.mu.Unlock()
	switch n {
	case 0:
		w.WriteHeader(http.StatusInternalServerError)
		_, _ = io.WriteString(w, `{"error":{"type":"api_error","message":"boom"}}`)
	case 1:
		hj, _ := w.(http.Hijacker)
		conn, _, _ := hj.Hijack()
		_ = conn.Close()
	default:
		_, _ = fmt.Fprintf(w, `{"object":"billing.meter_event","identifier":%q}`, key)
	}
}

func TestFlushRetriesWithTheSameKey(t *testing.T) {
	double := &faultyStripe{failures: map[string]int{}, values: map[string]int64{}}
	srv := httptest.NewServer(double)
	defer srv.Close()
	m := harness.StartMesh(t, simulator.Options{}, harness.WithStripe(srv.URL))
	customerAccount(t, m, "retry")
	ctx := context.Background()
	var sent int64
	for round := range 2 {
		charge(t, m.Store, "retry", money.Micros(round+2)*money.Dollar)
		res, err := flush(t, m, "retry")
		if err != nil {
			t.Fatal(err)
		}
		// Three requests, two activity attempts: after the dropped connection
		// Go's transport resends a request that carries an Idempotency-Key itself.
		if res.Flush.State != "sent" || res.Flush.Attempts != 2 {
			t.Fatalf("flush %+v: want sent on the second attempt", res.Flush)
		}
		sent += res.Flush.AmountCents
	}
	double.mu.Lock()
	defer double.mu.Unlock()
	var total int64
	for _, v := range double.values {
		total += v
	}
	if len(double.values) != 2 || total != sent || double.requests != 6 {
		t.Fatalf("double saw %d keys totalling %d cents in %d requests; flushes sent %d cents", len(double.values), total, double.requests, sent)
	}
	if b, _ := m.Store.Books(ctx, "retry"); !b.Balanced() || b.Flushed != money.Micros(sent)*money.Cent {
		t.Fatalf("books %+v", b)
	}
}

func TestPermanentRefusalFailsTheFlush(t *testing.T) {
	double := &faultyStripe{failures: map[string]int{}, values: map[string]int64{}}
	srv := httptest.NewServer(double)
	defer srv.Close()
	m := harness.StartMesh(t, simulator.Options{}, harness.WithStripe(srv.URL))
	customerAccount(t, m, "declined")
	charge(t, m.Store, "declined", money.Dollar)
	double.mu.Lock()
	double.reject = true
	double.mu.Unlock()
	ctx := context.Background()
	before, _ := m.Store.AccountByID(ctx, "declined")
	res, err := flush(t, m, "declined")
	if err == nil || !strings.Contains(err.Error(), "stripe rejected the request (400 resource_missing)") {
		t.Fatalf("error %v", err)
	}
	fs, _ := m.Store.Flushes(ctx, "declined")
	after, _ := m.Store.AccountByID(ctx, "declined")
	if len(fs) != 1 || fs[0].State != "failed" || fs[0].Attempts != 1 || !strings.Contains(fs[0].Error, "resource_missing") || after.Unbilled != before.Unbilled {
		t.Fatalf("flushes %+v, unbilled %s -> %s, result %+v", fs, before.Unbilled, after.Unbilled, res)
	}
	// The balance can be flushed again once Stripe accepts.
	double.mu.Lock()
	double.reject = false
	double.mu.Unlock()
	if res, err := flush(t, m, "declined"); err != nil || res.Flush.State != "sent" {
		t.Fatalf("retry after refusal: %+v %v", res, err)
	}
}
