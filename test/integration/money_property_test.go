package integration

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/superinstance/mesh/internal/billing"
	"github.com/superinstance/mesh/internal/money"
	"github.com/superinstance/mesh/internal/simulator"
	"github.com/superinstance/mesh/internal/store"
	"github.com/superinstance/mesh/test/harness"
	"github.com/superinstance/mesh/workflows"
)

// TestMoneyIsExactUnderStripeFaults runs random sequences of usage, flushes
// and Stripe faults (answers lost after commit, dropped connections,
// refusals, outages longer than the retry budget and the identifier window)
// through the Stripe double, with flush workflows running concurrently.
// After every step, for every account: charged = flushed + in doubt +
// unbilled; Stripe holds each sent flush exactly once and no failed one, no
// identifier twice, and between the cents sent and the cents sent or in
// doubt. Once Stripe heals and every flush has ended, the cents Stripe holds
// per customer are the cents flushed. SI_MONEY_SEED picks another sequence.
func TestMoneyIsExactUnderStripeFaults(t *testing.T) {
	seed := uint64(13)
	if s := os.Getenv("SI_MONEY_SEED"); s != "" {
		var err error
		if seed, err = strconv.ParseUint(s, 10, 64); err != nil {
			t.Fatalf("SI_MONEY_SEED: %v", err)
		}
	}
	r := rand.New(rand.NewPCG(seed, 1))
	d := harness.NewStripeDouble(t)
	m := harness.StartMesh(t, simulator.Options{}, harness.WithStripe(d.URL))
	ctx := context.Background()
	in := workflows.FlushInput{SendAttempts: 2, RetryEvery: 100 * time.Millisecond, Window: 1500 * time.Millisecond, Settle: 100 * time.Millisecond}
	st := starter(m, in)
	accounts := []string{"mp-a", "mp-b", "mp-c"}
	customers := map[string]string{}
	for _, a := range accounts {
		customers[a] = doubleAccount(t, m, a)
		if err := m.Store.SetCeiling(ctx, a, money.Micros(r.Int64N(400)+150)*money.Cent); err != nil {
			t.Fatal(err)
		}
	}
	faults := []harness.DoubleFault{harness.CommitLose5xx, harness.CommitDrop, harness.Refuse, harness.Unavailable}
	check := func(step int, what string, settled bool) {
		t.Helper()
		for _, a := range accounts {
			// Workflows run meanwhile: read the flushes on both sides of the
			// books until they agree, so both describe the same moment. The
			// store is read before Stripe: a flush is sent only after Stripe
			// holds it, and no flush is reserved while this runs.
			var b store.Books
			var fs []store.Flush
			for try := 0; ; try++ {
				before, err := m.Store.Flushes(ctx, a)
				if err != nil {
					t.Fatal(err)
				}
				if b, err = m.Store.Books(ctx, a); err != nil || !b.Balanced() {
					t.Fatalf("seed %d step %d (%s) %s: books %+v %v", seed, step, what, a, b, err)
				}
				if fs, err = m.Store.Flushes(ctx, a); err != nil {
					t.Fatal(err)
				}
				if sameFlushes(before, fs) {
					break
				}
				if try == 50 {
					t.Fatalf("seed %d step %d: the flushes of %s never held still", seed, step, a)
				}
			}
			var sent, open int64
			for _, f := range fs {
				live := 0
				for _, e := range d.Events(billing.MeterEventKey(f.ID)) {
					if !e.Cancelled {
						live++
					}
				}
				switch {
				case f.State == store.FlushSent && live != 1, f.State == store.FlushFailed && live != 0, f.Open() && live > 1:
					t.Fatalf("seed %d step %d (%s): flush %s is %s and Stripe holds %d live copies", seed, step, what, f.ID, f.State, live)
				}
				switch {
				case f.State == store.FlushSent:
					sent += f.AmountCents
				case f.Open():
					open += f.AmountCents
				}
			}
			if money.Micros(sent)*money.Cent != b.Flushed || money.Micros(open)*money.Cent != b.InDoubt {
				t.Fatalf("seed %d step %d (%s) %s: flushes sum to %d sent and %d open cents, books %+v", seed, step, what, a, sent, open, b)
			}
			held := d.Held(customers[a])
			if held < sent || held > sent+open || (settled && held != sent) {
				t.Fatalf("seed %d step %d (%s) %s: Stripe holds %d cents; flushed %d, in doubt %d", seed, step, what, a, held, sent, open)
			}
		}
	}
	const steps = 200
	event := 0
	for step := range steps {
		a := accounts[r.IntN(len(accounts))]
		what := ""
		switch op := r.IntN(100); {
		case op < 40:
			event++
			eid := fmt.Sprintf("%s-ev-%d", a, event)
			if r.IntN(6) == 0 && event > 1 {
				eid = fmt.Sprintf("%s-ev-%d", a, r.IntN(event-1)+1) // a redelivered copy
			}
			_, err := m.Store.LogUsage(ctx, store.Usage{EventID: eid, Account: a, Project: "p", Model: "si-simulator-large",
				PromptTokens: r.Int64N(200_000), CompletionTokens: r.Int64N(30_000)})
			if err != nil && !errors.Is(err, store.ErrSuspended) {
				t.Fatal(err)
			}
			what = "usage " + eid
		case op < 65:
			s, err := st.Start(ctx, a)
			if err != nil && !errors.Is(err, store.ErrNothingToFlush) {
				t.Fatal(err)
			}
			what = fmt.Sprintf("flush %s reserved=%v", s.Flush.ID, s.Reserved)
		case op < 80:
			f := faults[r.IntN(len(faults))]
			n := 1 + r.IntN(4)
			d.FaultN(meterEvents, f, n)
			what = fmt.Sprintf("%d faults %d", n, f)
		case op < 85:
			down := r.IntN(2) == 0
			d.SetDown(down)
			what = fmt.Sprintf("down %v", down)
		default:
			time.Sleep(time.Duration(50+r.IntN(400)) * time.Millisecond)
			what = "wait"
		}
		check(step, what, false)
	}
	// Stripe heals; the sweep carries every open flush on and flushes what
	// is left, until nothing is open and no account has a cent to flush.
	d.ClearFaults()
	d.SetDown(false)
	deadline := time.Now().Add(3 * time.Minute)
	for {
		if _, err := st.Sweep(ctx); err != nil {
			t.Fatal(err)
		}
		open, err := m.Store.OpenFlushes(ctx)
		if err != nil {
			t.Fatal(err)
		}
		flushable, err := m.Store.FlushableAccounts(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(open) == 0 && len(flushable) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("seed %d: after healing, still open %+v and flushable %v", seed, open, flushable)
		}
		check(steps, "healing", false)
		time.Sleep(300 * time.Millisecond)
	}
	check(steps, "settled", true)
	states, retried := map[string]int{}, 0
	for _, a := range accounts {
		fs, _ := m.Store.Flushes(ctx, a)
		for _, f := range fs {
			states[f.State]++
			if f.Attempts > 1 {
				retried++
			}
		}
	}
	t.Logf("seed %d: flushes %v, %d retried; Stripe got %d meter event requests, %d adjustments", seed, states, retried,
		d.Requests(meterEvents), d.Requests("POST /v1/billing/meter_event_adjustments"))
	for _, a := range accounts {
		if acc, _ := m.Store.AccountByID(ctx, a); acc.Unbilled >= money.Cent || acc.Status != "active" {
			t.Fatalf("seed %d: account %+v after every flush ended", seed, acc)
		}
	}
}

func sameFlushes(a, b []store.Flush) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].ID != b[i].ID || a[i].State != b[i].State {
			return false
		}
	}
	return true
}
