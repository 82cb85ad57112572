package store_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"

	"github.com/superinstance/mesh/internal/money"
	"github.com/superinstance/mesh/internal/store"
	"github.com/superinstance/mesh/test/harness"
)

// model is the reference ledger the property test checks the store against:
// the same rules written as plainly as possible.
type model struct {
	tier                                  string
	credits, unbilled, ceiling, threshold money.Micros
	suspended                             bool
	events                                map[string]store.Charge
	pending                               string
	pendingCents                          int64
	charged, flushed                      money.Micros
}

var multipliers = map[string]money.PPM{"managed": 1_030_000, "byok": 1_300_000}

// prices are the migration's: micro-dollars per million tokens.
var prices = map[string][2]money.Micros{"si-simulator-small": {150_000, 600_000}, "si-simulator-large": {2_500_000, 10_000_000}, "*": {500_000, 1_500_000}}

func (m *model) logUsage(t *testing.T, u store.Usage) (store.Charge, error) {
	if c, ok := m.events[u.EventID]; ok {
		c.Duplicate, c.Suspended, c.FlushDue, c.Unbilled = true, false, false, m.unbilled
		return c, nil
	}
	if m.suspended {
		return store.Charge{}, store.ErrSuspended
	}
	p, ok := prices[u.Model]
	if !ok {
		p = prices["*"]
	}
	// cost = tokens x price / 1e6, each part rounded half away from zero.
	round := func(n int64) money.Micros { return money.Micros((n + 500_000) / 1_000_000) }
	cost := round(int64(p[0])*u.PromptTokens) + round(int64(p[1])*u.CompletionTokens)
	gross := money.Micros((int64(cost)*int64(multipliers[m.tier]) + 500_000) / 1_000_000)
	applied := min(m.credits, gross)
	c := store.Charge{EventID: u.EventID, CostBasis: cost, Multiplier: multipliers[m.tier], Gross: gross, CreditsApplied: applied, Charged: gross - applied}
	m.credits -= applied
	m.unbilled += c.Charged
	m.charged += c.Charged
	c.Unbilled = m.unbilled
	c.Suspended = m.unbilled >= m.ceiling
	c.FlushDue = m.unbilled >= m.threshold
	if c.Suspended {
		m.suspended = true
	}
	m.events[u.EventID] = c
	return c, nil
}

// TestLedgerMatchesReferenceModel runs 1,000 random sequences, one per
// account, of about 30 operations each (usage from three models with some
// duplicates, credits, tier changes, flushes that succeed, are reported
// twice, or fail), interleaved, and checks the store against the reference
// model and the books after every step.
func TestLedgerMatchesReferenceModel(t *testing.T) {
	s := harness.Store(t)
	ctx := context.Background()
	r := rand.New(rand.NewPCG(7, 11))
	const accounts, steps = 1000, 30
	models := map[string]*model{}
	var ids []string
	for i := range accounts {
		id := fmt.Sprintf("acct-%04d", i)
		if _, err := s.CreateAccount(ctx, id, id+"@example.com"); err != nil {
			t.Fatal(err)
		}
		ceiling := money.Micros(r.Int64N(300)+5) * money.Cent
		if err := s.SetCeiling(ctx, id, ceiling); err != nil {
			t.Fatal(err)
		}
		models[id] = &model{tier: "managed", ceiling: ceiling, threshold: 10 * money.Dollar, events: map[string]store.Charge{}}
		ids = append(ids, id)
	}
	eventSeq := 0
	for step := range steps * accounts {
		id := ids[r.IntN(len(ids))]
		m := models[id]
		what := ""
		switch op := r.IntN(100); {
		case op < 55: // usage, sometimes a duplicate of an earlier event
			eid := fmt.Sprintf("wf-%d/act-%d", eventSeq, r.IntN(3))
			if len(m.events) > 0 && r.IntN(5) == 0 {
				for k := range m.events {
					eid = k
					break
				}
			} else {
				eventSeq++
			}
			model := []string{"si-simulator-small", "si-simulator-large", "llama-70b"}[r.IntN(3)]
			u := store.Usage{EventID: eid, Account: id, Project: "p", Model: model, PromptTokens: r.Int64N(20_000), CompletionTokens: r.Int64N(5_000)}
			want, wantErr := m.logUsage(t, u)
			got, err := s.LogUsage(ctx, u)
			what = fmt.Sprintf("usage %s", eid)
			if (err != nil) != (wantErr != nil) || (err != nil && !errors.Is(err, store.ErrSuspended)) {
				t.Fatalf("step %d %s: error %v, model says %v", step, what, err, wantErr)
			}
			if err == nil && got != want {
				t.Fatalf("step %d %s:\n got  %+v\n want %+v", step, what, got, want)
			}
		case op < 65:
			amt := money.Micros(r.Int64N(3_000_000) + 1)
			if _, err := s.AddCredits(ctx, id, amt, fmt.Sprintf("grant-%d", step)); err != nil {
				t.Fatal(err)
			}
			m.credits += amt
			what = "credits"
		case op < 72:
			tier := []string{"managed", "byok"}[r.IntN(2)]
			if err := s.SetTier(ctx, id, tier); err != nil {
				t.Fatal(err)
			}
			m.tier = tier
			what = "tier " + tier
		case op < 85: // start a flush
			fid := fmt.Sprintf("flush-%s-%d", id, step)
			f, err := s.StartFlush(ctx, id, fid)
			cents, _ := money.Cents(m.unbilled)
			switch {
			case m.pending != "":
				if !errors.Is(err, store.ErrFlushInFlight) {
					t.Fatalf("step %d: a second flush started: %v", step, err)
				}
			case cents == 0:
				if !errors.Is(err, store.ErrNothingToFlush) {
					t.Fatalf("step %d: flush of %s: %v", step, m.unbilled, err)
				}
			default:
				if err != nil || f.AmountCents != cents {
					t.Fatalf("step %d: flush %+v %v, want %d cents", step, f, err, cents)
				}
				m.pending, m.pendingCents = fid, cents
			}
			what = "start flush"
		case op < 95: // the flush succeeds (possibly reported twice)
			if m.pending == "" {
				continue
			}
			for range 1 + r.IntN(2) {
				if _, err := s.CompleteFlush(ctx, m.pending); err != nil {
					t.Fatal(err)
				}
			}
			sent := money.Micros(m.pendingCents) * money.Cent
			m.unbilled -= sent
			m.flushed += sent
			if m.suspended && m.unbilled < m.ceiling {
				m.suspended = false
			}
			m.pending = ""
			what = "complete flush"
		default: // the flush fails permanently
			if m.pending == "" {
				continue
			}
			if _, err := s.FailFlush(ctx, m.pending, "card_declined"); err != nil {
				t.Fatal(err)
			}
			m.pending = ""
			what = "fail flush"
		}
		a, err := s.AccountByID(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if a.Credits != m.credits || a.Unbilled != m.unbilled || (a.Status == "suspended") != m.suspended || a.Tier != m.tier {
			t.Fatalf("step %d (%s) %s: store %+v, model credits %s unbilled %s suspended %v", step, what, id, a, m.credits, m.unbilled, m.suspended)
		}
		b, err := s.Books(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if !b.Balanced() || b.Charged != m.charged || b.Flushed != m.flushed {
			t.Fatalf("step %d (%s) %s: books %+v, model charged %s flushed %s", step, what, id, b, m.charged, m.flushed)
		}
	}
}

// TestConcurrentUsageNeverLosesOrOvershoots logs usage on one account from
// many goroutines: every accepted event is counted once, and the balance
// passes the ceiling by less than one event's charge.
func TestConcurrentUsageNeverLosesOrOvershoots(t *testing.T) {
	s := harness.Store(t)
	ctx := context.Background()
	if _, err := s.CreateAccount(ctx, "busy", ""); err != nil {
		t.Fatal(err)
	}
	ceiling := 2 * money.Dollar
	if err := s.SetCeiling(ctx, "busy", ceiling); err != nil {
		t.Fatal(err)
	}
	const workers, each = 16, 40
	var (
		mu       sync.Mutex
		accepted = map[string]money.Micros{}
		maxOne   money.Micros
		wg       sync.WaitGroup
	)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				// Every fourth event is resent, as an activity retry would.
				id := fmt.Sprintf("wf-%d/act-%d", w, i-i%4/3)
				c, err := s.LogUsage(ctx, store.Usage{EventID: id, Account: "busy", Project: "p", Model: "si-simulator-large",
					PromptTokens: 1_000 + int64(i*37%500), CompletionTokens: 500})
				if errors.Is(err, store.ErrSuspended) {
					continue
				}
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				if prev, dup := accepted[id]; dup && prev != c.Charged {
					t.Errorf("%s charged %s then %s", id, prev, c.Charged)
				}
				accepted[id] = c.Charged
				maxOne = max(maxOne, c.Charged)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	var sum money.Micros
	for _, c := range accepted {
		sum += c
	}
	a, err := s.AccountByID(ctx, "busy")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := s.Books(ctx, "busy")
	if a.Unbilled != sum || !b.Balanced() || b.Charged != sum {
		t.Fatalf("unbilled %s, accepted events sum to %s, books %+v", a.Unbilled, sum, b)
	}
	if a.Status != "suspended" || a.Unbilled < ceiling || a.Unbilled >= ceiling+maxOne {
		t.Fatalf("status %s, unbilled %s: want suspended within one charge (%s) of the %s ceiling", a.Status, a.Unbilled, maxOne, ceiling)
	}
	var se *store.SuspendedError
	_, err = s.LogUsage(ctx, store.Usage{EventID: "late", Account: "busy", Project: "p", Model: "m", PromptTokens: 1})
	if !errors.As(err, &se) || se.Reason != "credit_ceiling" {
		t.Fatalf("usage on a suspended account: %v", err)
	}
}

func TestTierMultiplierIsConfigurable(t *testing.T) {
	s := harness.Store(t)
	ctx := context.Background()
	if _, err := s.CreateAccount(ctx, "ent", ""); err != nil {
		t.Fatal(err)
	}
	if err := s.SetMultiplier(ctx, "managed", 1_100_000); err != nil {
		t.Fatal(err)
	}
	c, err := s.LogUsage(ctx, store.Usage{EventID: "x", Account: "ent", Project: "p", Model: "si-simulator-large", PromptTokens: 1_000_000})
	if err != nil || c.Multiplier != 1_100_000 || c.Gross != 2_750_000 {
		t.Fatalf("charge %+v %v: $2.50 at x1.10 is $2.75", c, err)
	}
	if err := s.SetMultiplier(ctx, "managed", 0); err == nil {
		t.Fatal("a zero multiplier was accepted")
	}
}
