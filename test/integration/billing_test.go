package integration

import (
	"context"
	"crypto/sha256"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"go.temporal.io/sdk/temporal"

	"github.com/superinstance/mesh/activities"
	"github.com/superinstance/mesh/internal/money"
	"github.com/superinstance/mesh/internal/runner"
	"github.com/superinstance/mesh/internal/simulator"
	"github.com/superinstance/mesh/internal/store"
	"github.com/superinstance/mesh/test/harness"
	"github.com/superinstance/mesh/workflows"
)

// TestConsensusBillsEveryCallOnce runs consensuses against the real ledger:
// each agent call is one usage event keyed by workflow and activity id,
// credits go first, and an account at its ceiling is refused.
func TestConsensusBillsEveryCallOnce(t *testing.T) {
	m := harness.StartMesh(t, simulator.Options{})
	m.Account(t, "payer")
	ctx := context.Background()
	if _, err := m.Store.AddCredits(ctx, "payer", 100, "welcome"); err != nil {
		t.Fatal(err)
	}
	id, st, err := ask(t, m, workflows.ConsensusInput{Prompt: "bill me [sim:disagree]", MaxRounds: 2, Account: "payer", Project: "books"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	events, err := m.Store.UsageSince(ctx, "payer", time.Time{}, 100)
	if err != nil {
		t.Fatal(err)
	}
	if len(events) != st.Steps {
		t.Fatalf("%d usage events for %d agent calls", len(events), st.Steps)
	}
	var credits money.Micros
	for _, e := range events {
		if !strings.HasPrefix(e.Usage.EventID, id+"/") || e.Project != "books" || e.Charged+e.CreditsApplied != e.Gross || e.Multiplier != 1_030_000 {
			t.Fatalf("event %+v", e)
		}
		credits += e.CreditsApplied
	}
	b, _ := m.Store.Books(ctx, "payer")
	a, _ := m.Store.AccountByID(ctx, "payer")
	if credits != 100 || a.Credits != 0 || !b.Balanced() || b.Charged == 0 {
		t.Fatalf("credits applied %s, account %+v, books %+v", credits, a, b)
	}

	// A ceiling below what was charged suspends at the next call; the next consensus is refused.
	if err := m.Store.SetCeiling(ctx, "payer", 1); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Store.LogUsage(ctx, store.Usage{EventID: "manual-1", Account: "payer", Project: "books", Model: "m", PromptTokens: 10}); err != nil {
		t.Fatal(err)
	}
	_, _, err = ask(t, m, workflows.ConsensusInput{Prompt: "more", Account: "payer"}, nil)
	var ae *temporal.ApplicationError
	if !errors.As(err, &ae) || ae.Type() != activities.ErrCreditCeiling || !strings.HasPrefix(err.Error(), "credit ceiling reached") {
		t.Fatalf("error %v, want the credit ceiling", err)
	}
	_, _, err = ask(t, m, workflows.ConsensusInput{Prompt: "who?", Account: "nobody"}, nil)
	if !errors.As(err, &ae) || ae.Type() != activities.ErrUnknownAccount {
		t.Fatalf("error %v, want an unknown account", err)
	}
}

// worstCase is what admission reserves for in, at the migration's most
// expensive model and the managed multiplier.
func worstCase(t *testing.T, in workflows.ConsensusInput) money.Micros {
	t.Helper()
	norm, err := in.Normalize()
	if err != nil {
		t.Fatal(err)
	}
	bounds, _ := workflows.WorstCase(norm)
	var sum money.Micros
	for _, b := range bounds {
		p, err := store.PriceBound(2_500_000, 10_000_000, 1_030_000, b)
		if err != nil {
			t.Fatal(err)
		}
		sum += p
	}
	return sum
}

// crowd starts n runs of in at once and waits for them all; it returns the
// workflow ids and each run's error.
func crowd(t *testing.T, m *harness.Mesh, in workflows.ConsensusInput, n int) ([]string, []error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	ids := make([]string, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		ids[i] = harness.UniqueID("consensus")
		if _, err := runner.Start(ctx, m.Client, ids[i], in); err != nil {
			t.Fatal(err)
		}
	}
	for i := range n {
		wg.Go(func() { errs[i] = m.Client.GetWorkflow(ctx, ids[i], "").Get(ctx, nil) })
	}
	wg.Wait()
	return ids, errs
}

// admissionOutcome checks a crowd's runs against the ledger: a refused run
// ran no inference and billed nothing; an admitted run billed every agent
// call it made under its hold, and released the hold. It returns how many
// were admitted and the sum they were charged (gross).
func admissionOutcome(t *testing.T, m *harness.Mesh, account string, ids []string, errs []error, refusedType string) (int, money.Micros) {
	t.Helper()
	ctx := context.Background()
	events, err := m.Store.UsageSince(ctx, account, time.Time{}, 10_000)
	if err != nil {
		t.Fatal(err)
	}
	byRun := map[string][]store.UsageRow{}
	for _, e := range events {
		wid, _, _ := strings.Cut(e.Usage.EventID, "/")
		byRun[wid] = append(byRun[wid], e)
	}
	admitted, calls := 0, 0
	var gross money.Micros
	for i, id := range ids {
		var ae *temporal.ApplicationError
		if errs[i] != nil && errors.As(errs[i], &ae) && ae.Type() == refusedType {
			if len(byRun[id]) != 0 {
				t.Fatalf("refused run %s billed %d events", id, len(byRun[id]))
			}
			continue
		}
		if errs[i] != nil {
			t.Fatalf("run %s: %v", id, errs[i])
		}
		admitted++
		v, err := m.Client.QueryWorkflow(ctx, id, "", workflows.QueryState)
		if err != nil {
			t.Fatal(err)
		}
		var st workflows.ConsensusState
		if err := v.Get(&st); err != nil {
			t.Fatal(err)
		}
		if len(byRun[id]) != len(st.Usage) || len(st.Usage) == 0 {
			t.Fatalf("run %s made %d agent steps and billed %d", id, len(st.Usage), len(byRun[id]))
		}
		for _, u := range st.Usage {
			calls++
			if u.Repaired {
				calls++
			}
		}
		for _, e := range byRun[id] {
			gross += e.Gross
		}
		h, err := m.Store.HoldByID(ctx, id)
		if err != nil || h.State != "released" || h.Settled > h.Amount {
			t.Fatalf("hold of %s: %+v %v", id, h, err)
		}
	}
	// Every chat completion the simulator served belongs to an admitted run's billed steps.
	if got := m.Sim.Requests(); got != int64(calls) {
		t.Fatalf("the simulator served %d completions, the admitted runs billed %d calls", got, calls)
	}
	return admitted, gross
}

// TestConcurrentRunsJustUnderTheCeiling: 30 runs at once on an account with
// room for the worst case of three. Each admitted run bills every agent call
// (repairs included) and the balance stays under the ceiling (the written
// bound: zero overshoot with a server that honours max_tokens, as the
// simulator does); the others are refused before any inference. Before
// admission all 30 started, and the steps past the ceiling were refused by
// the ledger and never billed.
func TestConcurrentRunsJustUnderTheCeiling(t *testing.T) {
	// Slow calls keep the admitted runs' holds open while the rest ask.
	m := harness.StartMesh(t, simulator.Options{Latency: 300 * time.Millisecond})
	m.Account(t, "crowd")
	ctx := context.Background()
	if _, err := m.Store.LogUsage(ctx, store.Usage{EventID: "earlier", Account: "crowd", Project: "p", Model: simulator.ModelLarge, PromptTokens: 1_000_000}); err != nil {
		t.Fatal(err)
	}
	in := workflows.ConsensusInput{Prompt: "split the bill [sim:disagree] [sim:malformed-once]", MaxRounds: 2, Account: "crowd", MaxTokens: 256}
	w := worstCase(t, in)
	a, _ := m.Store.AccountByID(ctx, "crowd")
	ceiling := a.Unbilled + 3*w + w/2
	if err := m.Store.SetCeiling(ctx, "crowd", ceiling); err != nil {
		t.Fatal(err)
	}
	ids, errs := crowd(t, m, in, 30)
	admitted, _ := admissionOutcome(t, m, "crowd", ids, errs, activities.ErrInsufficientHeadroom)
	a, _ = m.Store.AccountByID(ctx, "crowd")
	b, _ := m.Store.Books(ctx, "crowd")
	t.Logf("%d of %d runs admitted; unbilled %s of a %s ceiling", admitted, len(ids), a.Unbilled, ceiling)
	// A run that ends releases its hold, so a late starter may take its place.
	if admitted < 3 || admitted == len(ids) || a.Unbilled > ceiling || !b.Balanced() {
		t.Fatalf("%d runs admitted (room for 3), unbilled %s of a %s ceiling, books %+v", admitted, a.Unbilled, ceiling, b)
	}
	// The refusal is one clear line.
	for i := range errs {
		var ae *temporal.ApplicationError
		if errors.As(errs[i], &ae) && ae.Type() == activities.ErrInsufficientHeadroom {
			if !strings.HasPrefix(ae.Message(), "not enough headroom under the credit ceiling") || strings.Contains(ae.Message(), "\n") {
				t.Fatalf("refusal %q", ae.Message())
			}
			break
		}
	}
}

// TestConcurrentGuestRunsWithinTheQuota is the same for a guest session's
// quota: the host pays at most the quota, and every admitted call in full.
func TestConcurrentGuestRunsWithinTheQuota(t *testing.T) {
	m := harness.StartMesh(t, simulator.Options{Latency: 300 * time.Millisecond})
	m.Account(t, "host")
	ctx := context.Background()
	in := workflows.ConsensusInput{Prompt: "plan the trip [sim:disagree]", MaxRounds: 2, MaxTokens: 256, GuestSession: "gs-crowd"}
	w := worstCase(t, in)
	quota := 2*w + w/2
	h := sha256.Sum256([]byte("si_inv_crowd"))
	if _, err := m.Store.CreateInvite(ctx, store.Invite{ID: "inv-crowd", TokenHash: h[:], Project: "trip", Host: "host",
		Role: store.RoleEditor, Quota: quota, ExpiresAt: time.Now().Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	crowdHash := sha256.Sum256([]byte(store.GuestSecretPrefix + "gs-crowd"))
	if _, err := m.Store.AcceptInvite(ctx, "inv-crowd", "gs-crowd", crowdHash[:], time.Now()); err != nil {
		t.Fatal(err)
	}
	ids, errs := crowd(t, m, in, 30)
	admitted, gross := admissionOutcome(t, m, "host", ids, errs, activities.ErrInsufficientHeadroom)
	g, _ := m.Store.GuestSessionByID(ctx, "gs-crowd")
	t.Logf("%d of %d runs admitted; the session spent %s of %s", admitted, len(ids), quota-g.Remaining, quota)
	if admitted < 2 || admitted == len(ids) || g.Remaining < 0 || quota-g.Remaining != gross {
		t.Fatalf("%d runs admitted (room for 2), session spent %s of %s, runs charged %s", admitted, quota-g.Remaining, quota, gross)
	}
}

// TestFailedRunIsBilled: every reply is unusable, so Pathos fails after its
// repair prompt; both calls are billed, under the run's hold, and the hold
// is released by the workflow's failure path.
func TestFailedRunIsBilled(t *testing.T) {
	m := harness.StartMesh(t, simulator.Options{})
	m.Account(t, "unlucky")
	id, _, err := ask(t, m, workflows.ConsensusInput{Prompt: "hi [sim:malformed]", Account: "unlucky"}, nil)
	var ae *temporal.ApplicationError
	if !errors.As(err, &ae) || ae.Type() != workflows.ErrRoundFailed {
		t.Fatalf("error %v", err)
	}
	events, _ := m.Store.UsageSince(context.Background(), "unlucky", time.Time{}, 10)
	if len(events) != 1 || events[0].Usage.EventID != id+"/r1-pathos" || events[0].Gross == 0 || m.Sim.Requests() != 2 {
		t.Fatalf("events %+v after %d calls", events, m.Sim.Requests())
	}
	if h, err := m.Store.HoldByID(context.Background(), id); err != nil || h.State != "released" || h.Settled != events[0].Gross {
		t.Fatalf("hold %+v %v", h, err)
	}
}
