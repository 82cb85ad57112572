package integration

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/client"

	"github.com/superinstance/mesh/activities"
	"github.com/superinstance/mesh/internal/billing"
	"github.com/superinstance/mesh/internal/cli"
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

// quick are flush timings for tests: rounds of two attempts, a short pause
// between rounds of a flush in doubt, and (unless a test shortens it) an
// identifier window long enough never to be reached.
var quick = workflows.FlushInput{SendAttempts: 2, RetryEvery: 200 * time.Millisecond, Window: time.Hour, Settle: 200 * time.Millisecond}

// starter is the mesh's flush starter with the given timings.
func starter(m *harness.Mesh, in workflows.FlushInput) *activities.FlushStarter {
	s := workers.Flushes(m.Client, m.Store)
	s.NewInput = func(account, id string) any {
		in := in
		in.Account, in.FlushID = account, id
		return in
	}
	return s
}

// flush reserves and starts the account's next flush as `si billing flush`
// does and waits for its workflow; nothing to flush is a result with Skipped set.
func flush(t *testing.T, m *harness.Mesh, account string) (workflows.FlushResult, error) {
	t.Helper()
	in := quick
	in.SendAttempts = 6
	return flushWith(t, m, account, in)
}

func flushWith(t *testing.T, m *harness.Mesh, account string, in workflows.FlushInput) (workflows.FlushResult, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	s, err := starter(m, in).Start(ctx, account)
	if errors.Is(err, store.ErrNothingToFlush) {
		return workflows.FlushResult{Skipped: err.Error()}, nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var res workflows.FlushResult
	err = m.Client.GetWorkflow(ctx, s.Flush.ID, s.RunID).Get(ctx, &res)
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

const meterEvents = "POST /v1/billing/meter_events"

// doubleAccount creates an account whose Stripe customer lives in the double.
func doubleAccount(t *testing.T, m *harness.Mesh, id string) string {
	t.Helper()
	customerAccount(t, m, id)
	a, err := m.Store.AccountByID(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return a.StripeCustomerID
}

// waitFlush polls flush id until ok accepts it.
func waitFlush(t *testing.T, m *harness.Mesh, id string, what string, ok func(store.Flush) bool) store.Flush {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for {
		f, err := m.Store.FlushByID(context.Background(), id)
		if err == nil && ok(f) {
			return f
		}
		if time.Now().After(deadline) {
			t.Fatalf("flush %s never %s: %+v %v", id, what, f, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func balanced(t *testing.T, m *harness.Mesh, account string) store.Books {
	t.Helper()
	b, err := m.Store.Books(context.Background(), account)
	if err != nil || !b.Balanced() {
		t.Fatalf("books of %s: %+v %v", account, b, err)
	}
	return b
}

// TestSkippedFlushBurnsNoID: a flush workflow that ran with nothing to flush
// (as `si billing flush` on an empty balance did) leaves its workflow id
// behind; the next real flush must still send. It failed before: the next
// flush computed the same id from the count of rows, Temporal refused the
// duplicate id and the starter took that for success.
func TestSkippedFlushBurnsNoID(t *testing.T) {
	d := harness.NewStripeDouble(t)
	m := harness.StartMesh(t, simulator.Options{}, harness.WithStripe(d.URL))
	cus := doubleAccount(t, m, "skip")
	ctx := context.Background()
	// Nothing to flush: no id is taken and no row written.
	if _, err := starter(m, quick).Start(ctx, "skip"); !errors.Is(err, store.ErrNothingToFlush) {
		t.Fatalf("empty balance: %v", err)
	}
	// A closed run under the first id, as a skipped flush left it.
	run, err := m.Client.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: "flush-skip-1", TaskQueue: workers.CloudQueue},
		workflows.FlushWorkflow, workflows.FlushInput{Account: "skip", FlushID: "flush-skip-1"})
	if err != nil {
		t.Fatal(err)
	}
	var skipped workflows.FlushResult
	if err := run.Get(ctx, &skipped); err != nil || skipped.Skipped == "" {
		t.Fatalf("skipped run: %+v %v", skipped, err)
	}
	charge(t, m.Store, "skip", 2*money.Dollar)
	for round := range 2 {
		res, err := flush(t, m, "skip")
		if err != nil || res.Flush.State != store.FlushSent {
			t.Fatalf("round %d: %+v %v", round, res, err)
		}
		if want := fmt.Sprintf("flush-skip-%d", round+1); res.Flush.ID != want {
			t.Fatalf("round %d: flush %s, want %s", round, res.Flush.ID, want)
		}
		charge(t, m.Store, "skip", 3*money.Dollar)
	}
	b := balanced(t, m, "skip")
	if held := d.Held(cus); money.Micros(held)*money.Cent != b.Flushed || held == 0 {
		t.Fatalf("Stripe holds %d cents, books %+v", held, b)
	}
}

// TestSuspendedAtCeilingFlushedBackToActive: an account suspended at its
// ceiling, whose first flush id a skipped run had taken, is flushed and is
// active again. It failed before: the flush did nothing, the account stayed
// suspended.
func TestSuspendedAtCeilingFlushedBackToActive(t *testing.T) {
	d := harness.NewStripeDouble(t)
	m := harness.StartMesh(t, simulator.Options{}, harness.WithStripe(d.URL))
	doubleAccount(t, m, "capped")
	ctx := context.Background()
	run, err := m.Client.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: "flush-capped-1", TaskQueue: workers.CloudQueue},
		workflows.FlushWorkflow, workflows.FlushInput{Account: "capped", FlushID: "flush-capped-1"})
	if err != nil {
		t.Fatal(err)
	}
	_ = run.Get(ctx, nil)
	if err := m.Store.SetCeiling(ctx, "capped", 2*money.Dollar); err != nil {
		t.Fatal(err)
	}
	charge(t, m.Store, "capped", 2*money.Dollar)
	if a, _ := m.Store.AccountByID(ctx, "capped"); a.Status != "suspended" {
		t.Fatalf("account %+v, want suspended at the ceiling", a)
	}
	res, err := flush(t, m, "capped")
	if err != nil || res.Flush.State != store.FlushSent {
		t.Fatalf("flush %+v %v", res, err)
	}
	if a, _ := m.Store.AccountByID(ctx, "capped"); a.Status != "active" || a.Unbilled >= money.Cent {
		t.Fatalf("after the flush: %+v, want active with under a cent unbilled", a)
	}
	balanced(t, m, "capped")
}

// TestLostAnswersStayInDoubt: every request reaches Stripe and commits, and
// every answer is lost, for longer than the retry budget. The flush is in
// doubt (never failed), visible in the store, in Temporal by its search
// attribute, and Stripe holds one meter event; once answers come back, the
// same identifier completes it. It failed before: the flush was marked
// failed and its cents re-sent by the next flush under a new identifier.
func TestLostAnswersStayInDoubt(t *testing.T) {
	d := harness.NewStripeDouble(t)
	m := harness.StartMesh(t, simulator.Options{}, harness.WithStripe(d.URL))
	cus := doubleAccount(t, m, "lost")
	ctx := context.Background()
	charge(t, m.Store, "lost", 2*money.Dollar)
	d.FaultN(meterEvents, harness.CommitLose5xx, 1000)
	s, err := starter(m, quick).Start(ctx, "lost")
	if err != nil {
		t.Fatal(err)
	}
	id := s.Flush.ID
	// Three rounds of the retry budget (two attempts each) without an answer.
	f := waitFlush(t, m, id, "in doubt after 6 attempts", func(f store.Flush) bool { return f.State == store.FlushInDoubt && f.Attempts >= 6 })
	if f.FirstAttemptAt.IsZero() {
		t.Fatalf("flush %+v: no first attempt time", f)
	}
	if b := balanced(t, m, "lost"); b.InDoubt != money.Micros(f.AmountCents)*money.Cent || b.Flushed != 0 {
		t.Fatalf("books %+v: the flush's cents should be in doubt", b)
	}
	// Another flush now reserves nothing new: the open one is carried on.
	again, err := starter(m, quick).Start(ctx, "lost")
	if err != nil || again.Reserved || again.Flush.ID != id {
		t.Fatalf("second start %+v %v: want the open flush %s", again, err, id)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := m.Client.ListWorkflow(ctx, &workflowservice.ListWorkflowExecutionsRequest{
			Query: `FlushState = "in_doubt" AND FlushAccount = "lost"`})
		if err == nil && len(resp.Executions) == 1 && resp.Executions[0].Execution.WorkflowId == id {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no in-doubt flush in visibility: %v %v", resp, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if n := len(d.Events(billing.MeterEventKey(id))); n != 1 {
		t.Fatalf("Stripe holds %d events for %s, want 1", n, id)
	}
	d.ClearFaults()
	var res workflows.FlushResult
	if err := m.Client.GetWorkflow(ctx, id, "").Get(ctx, &res); err != nil || res.Flush.State != store.FlushSent {
		t.Fatalf("after answers came back: %+v %v", res, err)
	}
	b := balanced(t, m, "lost")
	if held := d.Held(cus); money.Micros(held)*money.Cent != b.Flushed || len(d.Events("")) != 1 {
		t.Fatalf("Stripe holds %d cents in %d events; books %+v", held, len(d.Events("")), b)
	}
}

// TestDuplicateIdentifierMeansCommitted: Stripe forgot the idempotency key
// but still holds the identifier; its "already exists" answer completes the
// flush instead of failing it.
func TestDuplicateIdentifierMeansCommitted(t *testing.T) {
	d := harness.NewStripeDouble(t)
	d.SetKeyWindow(0)
	m := harness.StartMesh(t, simulator.Options{}, harness.WithStripe(d.URL))
	cus := doubleAccount(t, m, "dup")
	charge(t, m.Store, "dup", money.Dollar)
	d.Fault(meterEvents, harness.CommitLose5xx)
	res, err := flush(t, m, "dup")
	// The second request is answered "already exists": committed, not refused.
	if err != nil || res.Flush.State != store.FlushSent || res.Flush.Attempts != 2 || d.Requests(meterEvents) != 2 {
		t.Fatalf("flush %+v %v", res, err)
	}
	b := balanced(t, m, "dup")
	if held := d.Held(cus); money.Micros(held)*money.Cent != b.Flushed || len(d.Events("")) != 1 {
		t.Fatalf("Stripe holds %d cents; books %+v", held, b)
	}
}

// TestOutageLongerThanTheBudgetThenHealed: Stripe is down (503, nothing
// processed) past the retry budget and past the identifier window; the
// flush stays in doubt, is reconciled (Stripe holds none of it), sent again
// under its identifier once Stripe is back, and Stripe holds one meter
// event per flush.
func TestOutageLongerThanTheBudgetThenHealed(t *testing.T) {
	d := harness.NewStripeDouble(t)
	m := harness.StartMesh(t, simulator.Options{}, harness.WithStripe(d.URL))
	cus := doubleAccount(t, m, "outage")
	ctx := context.Background()
	in := quick
	in.Window = 2 * time.Second
	for round := range 2 {
		charge(t, m.Store, "outage", money.Micros(round+2)*money.Dollar)
		d.SetDown(true)
		s, err := starter(m, in).Start(ctx, "outage")
		if err != nil {
			t.Fatal(err)
		}
		waitFlush(t, m, s.Flush.ID, "in doubt", func(f store.Flush) bool { return f.State == store.FlushInDoubt && f.Attempts >= 2 })
		time.Sleep(in.Window) // the workflow reconciles (summaries are down too) before sending again
		d.SetDown(false)
		var res workflows.FlushResult
		if err := m.Client.GetWorkflow(ctx, s.Flush.ID, "").Get(ctx, &res); err != nil || res.Flush.State != store.FlushSent {
			t.Fatalf("round %d: %+v %v", round, res, err)
		}
		if res.Reconciled == nil {
			t.Fatalf("round %d: sent past the window without reconciling: %+v", round, res)
		}
		if n := len(d.Events(billing.MeterEventKey(s.Flush.ID))); n != 1 {
			t.Fatalf("round %d: %d meter events for %s", round, n, s.Flush.ID)
		}
	}
	b := balanced(t, m, "outage")
	if held := d.Held(cus); money.Micros(held)*money.Cent != b.Flushed || len(d.Events("")) != 2 {
		t.Fatalf("Stripe holds %d cents in %d events; books %+v", held, len(d.Events("")), b)
	}
}

// TestReconcileCancelsADuplicate: a flush in doubt past the identifier
// window, of which Stripe holds two copies, is reconciled: one copy is
// cancelled by a meter event adjustment and the flush is sent once.
func TestReconcileCancelsADuplicate(t *testing.T) {
	d := harness.NewStripeDouble(t)
	m := harness.StartMesh(t, simulator.Options{}, harness.WithStripe(d.URL))
	cus := doubleAccount(t, m, "twice")
	ctx := context.Background()
	charge(t, m.Store, "twice", 2*money.Dollar)
	d.FaultN(meterEvents, harness.CommitLose5xx, 1000)
	in := quick
	in.Window = 3 * time.Second
	s, err := starter(m, in).Start(ctx, "twice")
	if err != nil {
		t.Fatal(err)
	}
	f := waitFlush(t, m, s.Flush.ID, "in doubt", func(f store.Flush) bool { return f.State == store.FlushInDoubt })
	key := billing.MeterEventKey(f.ID)
	ev := d.Events(key)
	if len(ev) != 1 {
		t.Fatalf("%d events for %s", len(ev), key)
	}
	dup := ev[0]
	dup.Received = time.Time{}
	d.Plant(dup) // the same flush reached Stripe a second time
	var res workflows.FlushResult
	if err := m.Client.GetWorkflow(ctx, f.ID, "").Get(ctx, &res); err != nil || res.Flush.State != store.FlushSent {
		t.Fatalf("flush %+v %v", res, err)
	}
	if res.Reconciled == nil || res.Reconciled.Cancelled != 1 {
		t.Fatalf("reconciled %+v, want one copy cancelled", res.Reconciled)
	}
	live, cancelled := 0, 0
	for _, e := range d.Events(key) {
		if e.Cancelled {
			cancelled++
		} else {
			live++
		}
	}
	b := balanced(t, m, "twice")
	if live != 1 || cancelled != 1 || money.Micros(d.Held(cus))*money.Cent != b.Flushed {
		t.Fatalf("%d live and %d cancelled copies, Stripe holds %d cents; books %+v", live, cancelled, d.Held(cus), b)
	}
}

// TestSweepStartsAReservedFlushLeftBehind: a crash between the reservation
// and the workflow's start leaves a pending flush with no workflow; the
// sweep starts it under its own id, and it is sent once. A flush whose
// workflow is running is left alone: starting it again finds the same run.
func TestSweepStartsAReservedFlushLeftBehind(t *testing.T) {
	d := harness.NewStripeDouble(t)
	m := harness.StartMesh(t, simulator.Options{}, harness.WithStripe(d.URL))
	cus := doubleAccount(t, m, "crash")
	ctx := context.Background()
	charge(t, m.Store, "crash", 2*money.Dollar)
	f, created, err := m.Store.ReserveFlush(ctx, "crash")
	if err != nil || !created {
		t.Fatalf("reserve %+v %v %v", f, created, err)
	}
	// While it is reserved nothing else is: the next start carries it on.
	d.SetDown(true)
	s := starter(m, quick)
	first, err := s.Start(ctx, "crash")
	if err != nil || first.Reserved || first.Flush.ID != f.ID {
		t.Fatalf("start %+v %v", first, err)
	}
	second, err := s.Start(ctx, "crash")
	if err != nil || second.RunID != first.RunID {
		t.Fatalf("a second start %+v %v: want the running %s", second, err, first.RunID)
	}
	// The run ends without an answer (terminated, as an operator might):
	// the flush stays open and the sweep starts it again.
	if err := m.Client.TerminateWorkflow(ctx, f.ID, first.RunID, "test"); err != nil {
		t.Fatal(err)
	}
	d.SetDown(false)
	ids, err := s.Sweep(ctx)
	if err != nil || len(ids) != 1 || ids[0] != f.ID {
		t.Fatalf("sweep %v %v", ids, err)
	}
	var res workflows.FlushResult
	if err := m.Client.GetWorkflow(ctx, f.ID, "").Get(ctx, &res); err != nil || res.Flush.State != store.FlushSent {
		t.Fatalf("after the sweep %+v %v", res, err)
	}
	b := balanced(t, m, "crash")
	if held := d.Held(cus); money.Micros(held)*money.Cent != b.Flushed || len(d.Events("")) != 1 {
		t.Fatalf("Stripe holds %d cents in %d events; books %+v", held, len(d.Events("")), b)
	}
}

// TestCLIFlushSaysWhatHappened runs `si billing flush` and `si billing
// flushes` against the mesh: nothing to flush takes no id and says so, a
// sent flush says what was sent, a flush whose answers are lost is reported
// in doubt (not failed, not "nothing to flush") and listed with its state.
func TestCLIFlushSaysWhatHappened(t *testing.T) {
	d := harness.NewStripeDouble(t)
	m := harness.StartMesh(t, simulator.Options{}, harness.WithStripe(d.URL))
	doubleAccount(t, m, "cli")
	dbURL := m.Store.Pool.Config().ConnString()
	si := func(args ...string) (string, string, int) {
		var out, errb strings.Builder
		args = append(args, "--account", "cli", "--database-url", dbURL)
		if args[1] == "flush" {
			args = append(args, "--temporal-address", harness.Temporal(t))
		}
		code := cli.Main(args, &out, &errb)
		return out.String(), errb.String(), code
	}
	out, errs, code := si("billing", "flush", "--json")
	var got struct {
		Outcome string `json:"outcome"`
		Flush   *store.Flush
	}
	if code != 0 || json.Unmarshal([]byte(out), &got) != nil || got.Outcome != "nothing_to_flush" || got.Flush != nil {
		t.Fatalf("empty balance: exit %d %q %s", code, out, errs)
	}
	charge(t, m.Store, "cli", 2*money.Dollar)
	out, errs, code = si("billing", "flush")
	if code != 0 || !strings.HasPrefix(out, "flush flush-cli-1: $2.") || !strings.Contains(out, "sent to Stripe after 1 attempt(s)") {
		t.Fatalf("a flush: exit %d %q %s", code, out, errs)
	}
	charge(t, m.Store, "cli", 2*money.Dollar)
	d.FaultN(meterEvents, harness.CommitLose5xx, 1000)
	out, errs, code = si("billing", "flush", "--wait", "3s")
	if code != 0 || !strings.HasPrefix(out, "flush flush-cli-2: $") || !strings.Contains(out, "is in doubt") {
		t.Fatalf("answers lost: exit %d %q %s", code, out, errs)
	}
	out, errs, code = si("billing", "flushes")
	if code != 0 || !regexp.MustCompile(`flush-cli-2\s+cli\s+\$\d+\.\d\d\s+in_doubt`).MatchString(out) ||
		!regexp.MustCompile(`flush-cli-1\s+cli\s+\$\d+\.\d\d\s+sent`).MatchString(out) || !strings.Contains(out, "1 flush(es) in doubt") {
		t.Fatalf("si billing flushes: exit %d\n%s%s", code, out, errs)
	}
}

// TestLiveFlushHistoryReplays replays a real server's history of a flush
// that was in doubt for a round (every answer of the first round lost) and
// then sent. With SI_WRITE_HISTORY set it also writes it to
// workflows/testdata/flush_history_v1.json for the workflows' replay test.
func TestLiveFlushHistoryReplays(t *testing.T) {
	d := harness.NewStripeDouble(t)
	m := harness.StartMesh(t, simulator.Options{}, harness.WithStripe(d.URL))
	doubleAccount(t, m, "replay")
	charge(t, m.Store, "replay", 2*money.Dollar)
	d.FaultN(meterEvents, harness.CommitLose5xx, 2)
	res, err := flushWith(t, m, "replay", quick)
	if err != nil || res.Flush.State != store.FlushSent || res.Flush.Attempts != 3 {
		t.Fatalf("flush %+v %v", res, err)
	}
	replays(t, m.Client, res.Flush.ID, workflows.FlushWorkflow, "flush_history_v1.json")
}
