package store_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/superinstance/mesh/internal/money"
	"github.com/superinstance/mesh/internal/store"
	"github.com/superinstance/mesh/test/harness"
)

// run is what one consensus does to the ledger: reserve its worst case,
// log each step's real usage against the hold, release what is left.
type runResult struct {
	admitted bool
	charged  money.Micros // sum of gross charges of the steps that ran
	steps    int
	err      error
}

// stepBound is the per-step bound the runs reserve for.
var stepBound = store.TokenBound{PromptTokens: 4_000, CompletionTokens: 1_000}

func holdRun(ctx context.Context, s *store.Store, id, account, guest string, steps int, seed uint64) runResult {
	bounds := make([]store.TokenBound, steps)
	for i := range bounds {
		bounds[i] = stepBound
	}
	_, err := s.ReserveHold(ctx, store.HoldRequest{ID: id, Account: account, GuestSession: guest, Bounds: bounds, TTL: time.Hour})
	var he *store.HeadroomError
	var se *store.SuspendedError
	if errors.As(err, &he) || errors.As(err, &se) {
		return runResult{}
	}
	if err != nil {
		return runResult{err: err}
	}
	r := rand.New(rand.NewPCG(seed, 3))
	res := runResult{admitted: true}
	defer func() {
		if _, err := s.ReleaseHold(ctx, id); err != nil && res.err == nil {
			res.err = err
		}
	}()
	for i := range steps {
		model := []string{"si-simulator-small", "si-simulator-large", "llama-70b"}[r.IntN(3)]
		u := store.Usage{EventID: fmt.Sprintf("%s/r%d", id, i), Account: account, Project: "shared", GuestSession: guest, Model: model,
			PromptTokens: r.Int64N(stepBound.PromptTokens + 1), CompletionTokens: r.Int64N(stepBound.CompletionTokens + 1), Hold: id}
		c, err := s.LogUsage(ctx, u)
		if err != nil {
			res.err = fmt.Errorf("step %d of an admitted run refused: %w", i, err)
			return res
		}
		// A retry of the same event changes nothing.
		if c2, err := s.LogUsage(ctx, u); err != nil || !c2.Duplicate || c2.Gross != c.Gross {
			res.err = fmt.Errorf("resent step %d: %+v %v", i, c2, err)
			return res
		}
		res.charged += c.Gross
		res.steps++
	}
	return res
}

// TestConcurrentRunsNeverPassTheCeiling starts 30 runs at once on an account
// a little under its ceiling: every step of every admitted run is billed
// (none is refused at the ceiling half-way), the balance never passes the
// ceiling, and the runs that could not be covered were refused before any
// step. On the code before holds the admitted runs' late steps were refused
// at the ceiling and never billed.
func TestConcurrentRunsNeverPassTheCeiling(t *testing.T) {
	s := harness.Store(t)
	ctx := context.Background()
	harness.EnsureAccount(t, s, "crowd")
	ceiling := 2 * money.Dollar
	if err := s.SetCeiling(ctx, "crowd", ceiling); err != nil {
		t.Fatal(err)
	}
	// Just under the ceiling: room for a few runs' worst case, not 30.
	if _, err := s.LogUsage(ctx, store.Usage{EventID: "earlier", Account: "crowd", Project: "p", Model: "si-simulator-large", PromptTokens: 600_000}); err != nil {
		t.Fatal(err)
	}
	const runs, steps = 30, 8
	results := make([]runResult, runs)
	var wg sync.WaitGroup
	for i := range runs {
		wg.Go(func() {
			results[i] = holdRun(ctx, s, fmt.Sprintf("consensus-crowd-%d", i), "crowd", "", steps, uint64(i))
		})
	}
	wg.Wait()
	admitted := 0
	var charged money.Micros
	for i, r := range results {
		if r.err != nil {
			t.Fatalf("run %d: %v", i, r.err)
		}
		if r.admitted {
			admitted++
			if r.steps != steps {
				t.Fatalf("run %d was admitted and billed %d of %d steps", i, r.steps, steps)
			}
		}
		charged += r.charged
	}
	a, _ := s.AccountByID(ctx, "crowd")
	b, _ := s.Books(ctx, "crowd")
	events, _ := s.UsageSince(ctx, "crowd", time.Time{}, 1000)
	if admitted == 0 || admitted == runs {
		t.Fatalf("%d of %d runs admitted: the test wants the ceiling to bind", admitted, runs)
	}
	if len(events) != 1+admitted*steps || !b.Balanced() {
		t.Fatalf("%d events for %d admitted runs of %d steps; books %+v", len(events), admitted, steps, b)
	}
	if a.Unbilled > ceiling {
		t.Fatalf("unbilled %s passed the %s ceiling (%d runs admitted, %s charged)", a.Unbilled, ceiling, admitted, charged)
	}
	t.Logf("%d of %d runs admitted, unbilled %s of a %s ceiling", admitted, runs, a.Unbilled, ceiling)
}

// TestConcurrentGuestRunsNeverPassTheQuota is the same for a guest session:
// the host pays at most the quota, and every step of an admitted run is
// billed in full (never capped, never refused).
func TestConcurrentGuestRunsNeverPassTheQuota(t *testing.T) {
	s := harness.Store(t)
	ctx := context.Background()
	harness.EnsureAccount(t, s, "hosting")
	quota := 60 * money.Cent
	invite(t, s, "inv-crowd", "hosting", quota, time.Now().Add(time.Hour))
	if _, err := s.AcceptInvite(ctx, "inv-crowd", "gs-crowd", secretHash("gs-crowd"), time.Now()); err != nil {
		t.Fatal(err)
	}
	const runs, steps = 30, 8
	results := make([]runResult, runs)
	var wg sync.WaitGroup
	for i := range runs {
		wg.Go(func() {
			results[i] = holdRun(ctx, s, fmt.Sprintf("consensus-guest-%d", i), "hosting", "gs-crowd", steps, uint64(100+i))
		})
	}
	wg.Wait()
	admitted := 0
	var charged money.Micros
	for i, r := range results {
		if r.err != nil {
			t.Fatalf("run %d: %v", i, r.err)
		}
		if r.admitted {
			admitted++
			if r.steps != steps {
				t.Fatalf("run %d billed %d of %d steps", i, r.steps, steps)
			}
		}
		charged += r.charged
	}
	g, _ := s.GuestSessionByID(ctx, "gs-crowd")
	if admitted == 0 || admitted == runs {
		t.Fatalf("%d of %d runs admitted: the test wants the quota to bind", admitted, runs)
	}
	if g.Remaining < 0 || quota-g.Remaining != charged {
		t.Fatalf("session spent %s, runs charged %s (quota %s)", quota-g.Remaining, charged, quota)
	}
	events, _ := s.UsageSince(ctx, "hosting", time.Time{}, 1000)
	for _, e := range events {
		p := prices[e.Model]
		if p == ([2]money.Micros{}) {
			p = prices["*"]
		}
		full, _ := store.PriceBound(p[0], p[1], 1_030_000, store.TokenBound{PromptTokens: e.PromptTokens, CompletionTokens: e.CompletionTokens})
		if e.Gross != full {
			t.Fatalf("event %s charged %s, its tokens cost %s: a held step was capped", e.Usage.EventID, e.Gross, full)
		}
	}
}

func TestHoldRules(t *testing.T) {
	s := harness.Store(t)
	ctx := context.Background()
	harness.EnsureAccount(t, s, "holder")
	harness.EnsureAccount(t, s, "other")
	if err := s.SetCeiling(ctx, "holder", money.Dollar); err != nil {
		t.Fatal(err)
	}
	req := store.HoldRequest{ID: "h1", Account: "holder", Target: 40 * money.Cent, TTL: time.Hour}
	h, err := s.ReserveHold(ctx, req)
	if err != nil || h.Amount != 40*money.Cent || h.Multiplier != 1_030_000 || h.PromptPrice != 2_500_000 || h.CompletionPrice != 10_000_000 {
		t.Fatalf("hold %+v %v", h, err)
	}
	// A retried reserve takes nothing more; a lower target never lowers it.
	for _, target := range []money.Micros{40 * money.Cent, 10 * money.Cent} {
		req.Target = target
		if h, err = s.ReserveHold(ctx, req); err != nil || h.Amount != 40*money.Cent {
			t.Fatalf("reserve again at %s: %+v %v", target, h, err)
		}
	}
	// A second run sees only what the first left.
	_, err = s.ReserveHold(ctx, store.HoldRequest{ID: "h2", Account: "holder", Target: 61 * money.Cent, TTL: time.Hour})
	var he *store.HeadroomError
	if !errors.As(err, &he) || he.Need != 61*money.Cent || he.Available != 60*money.Cent {
		t.Fatalf("second hold past the ceiling: %v", err)
	}
	if _, err := s.ReserveHold(ctx, store.HoldRequest{ID: "h2", Account: "holder", Target: 60 * money.Cent, TTL: time.Hour}); err != nil {
		t.Fatalf("second hold within the ceiling: %v", err)
	}
	// Credits add headroom.
	if _, err := s.AddCredits(ctx, "holder", 5*money.Cent, "grant"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.ReserveHold(ctx, store.HoldRequest{ID: "h3", Account: "holder", Target: 5 * money.Cent, TTL: time.Hour}); err != nil {
		t.Fatalf("hold within the credits: %v", err)
	}
	// Another account cannot settle against or raise this hold.
	if _, err := s.ReserveHold(ctx, store.HoldRequest{ID: "h1", Account: "other", Target: money.Cent, TTL: time.Hour}); err == nil {
		t.Fatal("another account raised h1")
	}
	if _, err := s.LogUsage(ctx, store.Usage{EventID: "o1", Account: "other", Project: "p", Model: "m", PromptTokens: 10, Hold: "h1"}); err != nil {
		t.Fatal(err)
	}
	if h, _ := s.HoldByID(ctx, "h1"); h.Settled != 0 {
		t.Fatalf("another account's usage settled against h1: %+v", h)
	}
	// Releasing frees the rest, twice is harmless, and a released hold cannot be raised.
	for range 2 {
		if _, err := s.ReleaseHold(ctx, "h1"); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.ReserveHold(ctx, store.HoldRequest{ID: "h1", Account: "holder", Target: 50 * money.Cent, TTL: time.Hour}); err == nil {
		t.Fatal("a released hold was raised")
	}
	if _, err := s.ReserveHold(ctx, store.HoldRequest{ID: "h4", Account: "holder", Target: 40 * money.Cent, TTL: time.Hour}); err != nil {
		t.Fatalf("the released headroom: %v", err)
	}
	// An expired hold frees its headroom (a run that died without releasing).
	if _, err := s.ReserveHold(ctx, store.HoldRequest{ID: "h5", Account: "other", Target: 99 * money.Dollar, TTL: time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(5 * time.Millisecond)
	if _, err := s.ReserveHold(ctx, store.HoldRequest{ID: "h6", Account: "other", Target: 99 * money.Dollar, TTL: time.Hour}); err != nil {
		t.Fatalf("an expired hold still held: %v", err)
	}
	// An unknown account is not found.
	if _, err := s.ReserveHold(ctx, store.HoldRequest{ID: "h7", Account: "ghost", Target: 1, TTL: time.Hour}); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("unknown account: %v", err)
	}
	// Another host's guest session is as absent as none.
	harness.EnsureAccount(t, s, "host-b")
	invite(t, s, "inv-b", "host-b", money.Dollar, time.Now().Add(time.Hour))
	if _, err := s.AcceptInvite(ctx, "inv-b", "gs-b", secretHash("gs-b"), time.Now()); err != nil {
		t.Fatal(err)
	}
	if _, err := s.ReserveHold(ctx, store.HoldRequest{ID: "h8", Account: "holder", GuestSession: "gs-b", Target: 1, TTL: time.Hour}); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("a hold on another host's session: %v", err)
	}
}

// TestHeldUsageIsBilledPastTheCeiling: a call that ran under a hold is
// billed even when the account was suspended meanwhile (here by a failed
// payment); one without a hold is still refused.
func TestHeldUsageIsBilledPastTheCeiling(t *testing.T) {
	s := harness.Store(t)
	ctx := context.Background()
	harness.EnsureAccount(t, s, "late")
	if _, err := s.ReserveHold(ctx, store.HoldRequest{ID: "run-late", Account: "late", Target: money.Dollar, TTL: time.Hour}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Pool.Exec(ctx, `UPDATE accounts SET status = 'suspended', suspended_reason = 'payment_failed' WHERE id = 'late'`); err != nil {
		t.Fatal(err)
	}
	if err := s.SetCeiling(ctx, "late", 1); err != nil {
		t.Fatal(err)
	}
	c, err := s.LogUsage(ctx, store.Usage{EventID: "run-late/r1-logos", Account: "late", Project: "p", Model: "m", PromptTokens: 1000, Hold: "run-late"})
	if err != nil || c.Gross == 0 {
		t.Fatalf("held usage on a suspended account: %+v %v", c, err)
	}
	// Past the ceiling, the suspension keeps its reason: a flush must not lift a failed payment's.
	if a, _ := s.AccountByID(ctx, "late"); a.Status != "suspended" || a.SuspendedReason != "payment_failed" {
		t.Fatalf("account %+v after held usage past the ceiling", a)
	}
	if h, _ := s.HoldByID(ctx, "run-late"); h.Settled != c.Gross {
		t.Fatalf("hold %+v after a %s charge", h, c.Gross)
	}
	if _, err := s.LogUsage(ctx, store.Usage{EventID: "unheld", Account: "late", Project: "p", Model: "m", PromptTokens: 1000, Hold: "no-such-hold"}); !errors.Is(err, store.ErrSuspended) {
		t.Fatalf("usage naming no real hold on a suspended account: %v", err)
	}
	if _, err := s.ReserveHold(ctx, store.HoldRequest{ID: "run-late-2", Account: "late", Target: 1, TTL: time.Hour}); !errors.Is(err, store.ErrSuspended) {
		t.Fatalf("a new hold on a suspended account: %v", err)
	}
}
