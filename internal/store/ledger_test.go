package store_test

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

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
	// guest is the account's guest session ("" for none) and guestLeft its
	// remaining quota; holds are the account's holds by id.
	guest     string
	guestLeft money.Micros
	holds     map[string]*mhold
	holdIDs   []string // in the order they were first asked for
}

// pickHold names one of the account's holds, or now and then one it never took.
func (m *model) pickHold(r *rand.Rand) string {
	if len(m.holdIDs) == 0 || r.IntN(8) == 0 {
		return fmt.Sprintf("hold-never-%d", r.IntN(1000))
	}
	return m.holdIDs[r.IntN(len(m.holdIDs))]
}

// mhold is a hold as the reference model keeps it.
type mhold struct {
	guest           string
	amount, settled money.Micros
	mult            money.PPM
	released        bool
}

func (h *mhold) open() money.Micros {
	if h.released {
		return 0
	}
	return max(h.amount-h.settled, 0)
}

// gross is the model's charge for tokens at prices p and multiplier mult:
// each part rounded half away from zero, then the multiplier, rounded.
func gross(p [2]money.Micros, mult money.PPM, prompt, completion int64) money.Micros {
	round := func(n int64) money.Micros { return money.Micros((n + 500_000) / 1_000_000) }
	cost := round(int64(p[0])*prompt) + round(int64(p[1])*completion)
	return money.Micros((int64(cost)*int64(mult) + 500_000) / 1_000_000)
}

// openHolds is the open part of the account's holds (of one session when
// guest is set), but for hold except.
func (m *model) openHolds(guest, except string) money.Micros {
	var sum money.Micros
	for id, h := range m.holds {
		if id != except && (guest == "" || h.guest == guest) {
			sum += h.open()
		}
	}
	return sum
}

// reserve is ReserveHold's rules, written plainly.
func (m *model) reserve(r store.HoldRequest) (money.Micros, error) {
	h, ok := m.holds[r.ID]
	switch {
	case !ok:
		h = &mhold{guest: r.GuestSession, mult: multipliers[m.tier]}
	case h.guest != r.GuestSession:
		return 0, errors.New("another session's hold")
	case h.released:
		return 0, errors.New("released")
	}
	target := r.Target
	for _, b := range r.Bounds {
		target += gross([2]money.Micros{2_500_000, 10_000_000}, h.mult, b.PromptTokens, b.CompletionTokens)
	}
	if target > h.amount || (h.amount == 0 && h.settled == 0) {
		if m.suspended {
			return 0, store.ErrSuspended
		}
		open := max(target-h.settled, 0)
		if avail := m.ceiling + m.credits - m.unbilled - m.openHolds("", r.ID); open > avail {
			return 0, &store.HeadroomError{Account: r.Account, Need: open, Available: avail}
		}
		if r.GuestSession != "" {
			if avail := m.guestLeft - m.openHolds(r.GuestSession, r.ID); open > avail {
				return 0, &store.HeadroomError{Account: r.Account, GuestSession: r.GuestSession, Need: open, Available: avail}
			}
		}
		h.amount = max(target, h.amount)
	}
	if !ok {
		m.holds[r.ID] = h
		m.holdIDs = append(m.holdIDs, r.ID)
	}
	return h.amount, nil
}

var multipliers = map[string]money.PPM{"managed": 1_030_000, "byok": 1_300_000}

// prices are the migration's: micro-dollars per million tokens.
var prices = map[string][2]money.Micros{"si-simulator-small": {150_000, 600_000}, "si-simulator-large": {2_500_000, 10_000_000}, "*": {500_000, 1_500_000}}

func (m *model) logUsage(t *testing.T, u store.Usage) (store.Charge, error) {
	if c, ok := m.events[u.EventID]; ok {
		c.Duplicate, c.Suspended, c.FlushDue, c.Unbilled = true, false, false, m.unbilled
		c.GuestRemaining, c.GuestCapped = 0, false
		return c, nil
	}
	h := m.holds[u.Hold]
	held := h != nil && h.guest == u.GuestSession
	// A call under a hold, or one a hub served already, ran: it is billed.
	admitted := held || u.Served
	if m.suspended && !admitted {
		return store.Charge{}, store.ErrSuspended
	}
	p, ok := prices[u.Model]
	if !ok {
		p = prices["*"]
	}
	// cost = tokens x price / 1e6, each part rounded half away from zero.
	cost := gross(p, money.One, u.PromptTokens, u.CompletionTokens)
	g := gross(p, multipliers[m.tier], u.PromptTokens, u.CompletionTokens)
	c := store.Charge{EventID: u.EventID, CostBasis: cost, Multiplier: multipliers[m.tier]}
	if u.GuestSession != "" {
		if m.guestLeft <= 0 && !admitted {
			return store.Charge{}, &store.GuestQuotaError{Session: u.GuestSession}
		}
		if g > m.guestLeft {
			g, c.GuestCapped = m.guestLeft, true
		}
		m.guestLeft -= g
		c.GuestRemaining = m.guestLeft
	}
	if held {
		h.settled += g
	}
	applied := min(m.credits, g)
	c.Gross, c.CreditsApplied, c.Charged = g, applied, g-applied
	m.credits -= applied
	m.unbilled += c.Charged
	m.charged += c.Charged
	c.Unbilled = m.unbilled
	// At the ceiling; or, outside a hold, when the call spent headroom that
	// open holds reserved.
	c.Suspended = m.unbilled >= m.ceiling || (!held && g > 0 && m.unbilled-m.credits+m.openHolds("", "") >= m.ceiling)
	c.FlushDue = m.unbilled >= m.threshold
	if c.Suspended {
		m.suspended = true
	}
	m.events[u.EventID] = c
	return c, nil
}

// TestLedgerMatchesReferenceModel runs 1,000 random sequences, one per
// account, of about 30 operations each (usage from three models with some
// duplicates, some by a guest, some under a hold and some a hub's own
// records, logged one at a time or as a batch, credits, tier and
// ceiling changes, holds reserved, raised and released, flushes that
// succeed, are reported twice, or fail), interleaved, and checks the store
// against the reference model and the books after every step.
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
		m := &model{tier: "managed", ceiling: ceiling, threshold: 10 * money.Dollar, events: map[string]store.Charge{}, holds: map[string]*mhold{}}
		if i%4 == 0 {
			quota := money.Micros(r.Int64N(200)+1) * money.Cent
			h := sha256.Sum256([]byte("model-" + id))
			if _, err := s.CreateInvite(ctx, store.Invite{ID: "inv-" + id, TokenHash: h[:], Project: "p-" + id, Host: id, Role: store.RoleEditor,
				Quota: quota, ExpiresAt: time.Now().Add(time.Hour)}); err != nil {
				t.Fatal(err)
			}
			if _, err := s.AcceptInvite(ctx, "inv-"+id, "gs-"+id, secretHash("gs-"+id), time.Now()); err != nil {
				t.Fatal(err)
			}
			m.guest, m.guestLeft = "gs-"+id, quota
		}
		models[id] = m
		ids = append(ids, id)
	}
	holdSeq := 0
	// seen counts the outcomes the model exercised, so a run that never
	// reached one is visible.
	seen := map[string]int{}
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
			if m.guest != "" && r.IntN(3) > 0 {
				u.GuestSession = m.guest
			}
			if len(m.holds) > 0 && r.IntN(2) == 0 {
				// A hold of this account, or a made-up id that holds nothing.
				u.Hold = m.pickHold(r)
			}
			if r.IntN(5) == 0 {
				// A hub's own record: served already, no hold, no guest.
				u.EventID, u.Served, u.Hold, u.GuestSession = "hub/"+eid, true, "", ""
			}
			wasSuspended, openBefore := m.suspended, m.openHolds("", "")
			want, wantErr := m.logUsage(t, u)
			var got store.Charge
			var err error
			if r.IntN(2) == 0 {
				got, err = s.LogUsage(ctx, u)
			} else {
				var cs []store.Charge
				if cs, err = s.LogUsageBatch(ctx, []store.Usage{u}); err == nil {
					got = cs[0]
				}
			}
			switch h := m.holds[u.Hold]; {
			case u.Served && wasSuspended:
				seen["hub usage on a suspended account"]++
			case u.Served && want.Suspended && want.Unbilled < m.ceiling && openBefore > 0:
				seen["hub usage spent reserved headroom"]++
			case wantErr != nil:
				seen["usage refused"]++
			case want.Duplicate:
				seen["usage duplicate"]++
			case h != nil && h.guest == u.GuestSession && m.suspended:
				seen["held usage past the ceiling"]++
			case want.GuestCapped:
				seen["guest usage capped"]++
			}
			what = fmt.Sprintf("usage %s (guest %q, hold %q)", eid, u.GuestSession, u.Hold)
			var qe *store.GuestQuotaError
			if (err != nil) != (wantErr != nil) || (err != nil && !errors.Is(err, store.ErrSuspended) && !errors.As(err, &qe)) {
				t.Fatalf("step %d %s: error %v, model says %v", step, what, err, wantErr)
			}
			if err == nil && got != want {
				t.Fatalf("step %d %s:\n got  %+v\n want %+v", step, what, got, want)
			}
		case op < 58: // a ceiling change
			ceiling := money.Micros(r.Int64N(300)+5) * money.Cent
			if err := s.SetCeiling(ctx, id, ceiling); err != nil {
				t.Fatal(err)
			}
			m.ceiling = ceiling
			if m.suspended && m.unbilled < ceiling {
				m.suspended = false
			}
			what = "ceiling " + ceiling.String()
		case op < 65: // reserve or raise a hold, or release one
			hid := m.pickHold(r)
			if r.IntN(4) == 0 {
				if _, err := s.ReleaseHold(ctx, hid); err != nil {
					t.Fatal(err)
				}
				if h := m.holds[hid]; h != nil {
					h.released = true
				}
				what = "release " + hid
				break
			}
			if r.IntN(2) == 0 || strings.HasPrefix(hid, "hold-never-") {
				holdSeq++
				hid = fmt.Sprintf("hold-%s-%d", id, holdSeq)
			}
			req := store.HoldRequest{ID: hid, Account: id, Target: money.Micros(r.Int64N(50_000)), TTL: time.Hour}
			if h := m.holds[hid]; h != nil {
				req.GuestSession = h.guest
			} else if m.guest != "" && r.IntN(2) == 0 {
				req.GuestSession = m.guest
			}
			for range r.IntN(4) {
				req.Bounds = append(req.Bounds, store.TokenBound{PromptTokens: r.Int64N(5_000), CompletionTokens: r.Int64N(1_000)})
			}
			want, wantErr := m.reserve(req)
			got, err := s.ReserveHold(ctx, req)
			seen[fmt.Sprintf("reserve (guest %v) error %T", req.GuestSession != "", wantErr)]++
			what = fmt.Sprintf("reserve %s %+v", hid, req)
			var he, mhe *store.HeadroomError
			switch {
			case wantErr == nil && (err != nil || got.Amount != want):
				t.Fatalf("step %d %s: %+v %v, model says %s", step, what, got, err, want)
			case errors.As(wantErr, &mhe) && (!errors.As(err, &he) || *he != *mhe):
				t.Fatalf("step %d %s: %v, model says %v", step, what, err, wantErr)
			case wantErr != nil && err == nil:
				t.Fatalf("step %d %s: reserved %+v, model says %v", step, what, got, wantErr)
			case errors.Is(wantErr, store.ErrSuspended) && !errors.Is(err, store.ErrSuspended):
				t.Fatalf("step %d %s: %v, model says suspended", step, what, err)
			}
		case op < 68:
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
		if m.guest != "" {
			if g, err := s.GuestSessionByID(ctx, m.guest); err != nil || g.Remaining != m.guestLeft {
				t.Fatalf("step %d (%s) %s: session %+v %v, model remaining %s", step, what, id, g, err, m.guestLeft)
			}
		}
		for hid, mh := range m.holds {
			h, err := s.HoldByID(ctx, hid)
			if err != nil || h.Amount != mh.amount || h.Settled != mh.settled || (h.State == "released") != mh.released {
				t.Fatalf("step %d (%s) %s: hold %+v %v, model %+v", step, what, hid, h, err, *mh)
			}
		}
	}
	t.Logf("outcomes: %v", seen)

	// Then concurrent runs, each reserving, settling and releasing, on a
	// few of the accounts (with and without their guest): together they
	// spend no more than the headroom the model says each account (or
	// session) had, every step of an admitted run is billed, and the books
	// still balance.
	// Every fourth of them has its hub report usage meanwhile: billed in
	// full (it ran), and the runs still spend no more than their room.
	var wg sync.WaitGroup
	for n, id := range ids[:40] {
		m := models[id]
		room := m.ceiling + m.credits - m.unbilled - m.openHolds("", "")
		guest := ""
		if m.guest != "" {
			guest = m.guest
			room = min(room, m.guestLeft-m.openHolds(m.guest, ""))
		}
		before, _ := s.Books(ctx, id)
		results := make([]runResult, 6)
		for i := range results {
			wg.Go(func() { results[i] = holdRun(ctx, s, fmt.Sprintf("run-%s-%d", id, i), id, guest, 3, uint64(i)) })
		}
		var hubGross money.Micros
		var hubErr error
		if n%4 == 1 {
			wg.Go(func() {
				for i := range 3 {
					cs, err := s.LogUsageBatch(ctx, []store.Usage{{EventID: fmt.Sprintf("hub/%s/burst-%d", id, i), Account: id, Project: "p",
						Model: "si-simulator-large", PromptTokens: 4_000, CompletionTokens: 1_000, Served: true}})
					if err != nil || len(cs) != 1 {
						hubErr = fmt.Errorf("hub record %d: %v %v", i, cs, err)
						return
					}
					hubGross += cs[0].Gross
				}
			})
		}
		wg.Wait()
		if hubErr != nil {
			t.Fatalf("%s: %v", id, hubErr)
		}
		var spent money.Micros
		for i, res := range results {
			if res.err != nil || (res.admitted && res.steps != 3) {
				t.Fatalf("%s run %d: %+v", id, i, res)
			}
			spent += res.charged
			if res.admitted {
				seen["concurrent run admitted"]++
			} else {
				seen["concurrent run refused"]++
			}
		}
		after, _ := s.Books(ctx, id)
		if spent > max(room, 0) || !after.Balanced() || after.Charged-before.Charged+(before.Credits-after.Credits) != spent+hubGross {
			t.Fatalf("%s: concurrent runs spent %s with %s of room; books %+v then %+v", id, spent, room, before, after)
		}
	}
	for _, k := range []string{"usage refused", "held usage past the ceiling", "hub usage on a suspended account", "hub usage spent reserved headroom", "reserve (guest true) error *store.HeadroomError",
		"reserve (guest false) error *store.HeadroomError", "reserve (guest false) error <nil>"} {
		if seen[k] == 0 {
			t.Errorf("no %q in the run", k)
		}
	}

	t.Logf("concurrent runs: %d admitted, %d refused", seen["concurrent run admitted"], seen["concurrent run refused"])
	if seen["concurrent run admitted"] == 0 || seen["concurrent run refused"] == 0 {
		t.Error("the concurrent runs were all admitted or all refused: the headroom never bound")
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
