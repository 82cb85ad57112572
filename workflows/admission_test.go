package workflows

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/mock"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/testsuite"

	"github.com/superinstance/mesh/activities"
	"github.com/superinstance/mesh/internal/money"
	"github.com/superinstance/mesh/internal/store"
	"github.com/superinstance/mesh/internal/synapse"
)

// fakeLedger stands in for the ledger activities: holds priced like the
// store's (the migration's most expensive model, the managed multiplier),
// and every billed event kept.
type fakeLedger struct {
	mu       sync.Mutex
	reserves []activities.ReserveInput
	hold     store.Hold
	released int
	events   []store.Usage
	charged  money.Micros // the sum of every event's charge
	refuse   error        // Reserve answers this when set
	// firstTTL, when set, is how long the admission's hold lasts (a run
	// that stalled since); later reservations last their TTL.
	firstTTL time.Duration
}

func newLedger(env *testsuite.TestWorkflowEnvironment) *fakeLedger {
	f := &fakeLedger{}
	env.OnActivity(rec.CheckAccount, mock.Anything, mock.Anything).Return(nil).Maybe()
	env.OnActivity(rec.CheckProject, mock.Anything, mock.Anything, mock.Anything).Return(nil).Maybe()
	env.OnActivity(led.Reserve, mock.Anything, mock.Anything).Return(func(_ context.Context, in activities.ReserveInput) (store.Hold, error) {
		f.mu.Lock()
		defer f.mu.Unlock()
		f.reserves = append(f.reserves, in)
		if f.refuse != nil {
			return store.Hold{}, f.refuse
		}
		if f.hold.ID == "" {
			f.hold = store.Hold{ID: in.Hold, Account: in.Account, GuestSession: in.GuestSession, PromptPrice: 2_500_000,
				CompletionPrice: 10_000_000, Multiplier: 1_030_000, State: "active"}
		}
		target := in.Target
		for _, b := range in.Bounds {
			p, err := f.hold.Price(b)
			if err != nil {
				return store.Hold{}, err
			}
			target += p
		}
		f.hold.Amount = max(f.hold.Amount, target)
		ttl := in.TTL
		if len(f.reserves) == 1 && f.firstTTL > 0 {
			ttl = f.firstTTL
		}
		f.hold.ExpiresAt = env.Now().Add(ttl)
		return f.hold, nil
	}).Maybe()
	env.OnActivity(led.Release, mock.Anything, mock.Anything).Return(func(context.Context, string) error {
		f.mu.Lock()
		f.released++
		f.mu.Unlock()
		return nil
	}).Maybe()
	env.OnActivity(led.LogUsage, mock.Anything, mock.Anything).Return(func(_ context.Context, evs []store.Usage) ([]store.Charge, error) {
		f.mu.Lock()
		defer f.mu.Unlock()
		f.events = append(f.events, evs...)
		// Priced as the hold prices (no credits): what each event costs.
		var cs []store.Charge
		for _, e := range evs {
			p, err := f.hold.Price(store.TokenBound{PromptTokens: e.PromptTokens, CompletionTokens: e.CompletionTokens})
			if err != nil {
				return nil, err
			}
			cs = append(cs, store.Charge{EventID: e.EventID, Gross: p, Charged: p})
			f.charged += p
		}
		return cs, nil
	}).Maybe()
	return f
}

func (f *fakeLedger) eventIDs() []string {
	var ids []string
	for _, e := range f.events {
		_, id, _ := strings.Cut(e.EventID, "/")
		ids = append(ids, id)
	}
	return ids
}

// TestRefusedRunRunsNoInference: a run the account cannot cover fails with
// InsufficientHeadroom before any agent runs, and holds nothing.
func TestRefusedRunRunsNoInference(t *testing.T) {
	env := newEnv(t)
	f := newLedger(env)
	f.refuse = temporal.NewNonRetryableApplicationError("not enough headroom under the credit ceiling: this run may cost up to $1.000000",
		activities.ErrInsufficientHeadroom, nil)
	calls := 0
	env.OnActivity(inf.Pathos, mock.Anything, mock.Anything).Return(func(context.Context, activities.PathosInput) (activities.PathosOutput, error) {
		calls++
		return activities.PathosOutput{}, nil
	})
	_, err := run(t, env, ConsensusInput{Prompt: "q", Account: "acme"})
	var ae *temporal.ApplicationError
	if !errors.As(err, &ae) || ae.Type() != activities.ErrInsufficientHeadroom || !strings.HasPrefix(ae.Message(), "not enough headroom") {
		t.Fatalf("error %v, want InsufficientHeadroom", err)
	}
	if calls != 0 || len(f.events) != 0 {
		t.Fatalf("%d inference calls, %d events for a refused run", calls, len(f.events))
	}
}

// TestAdmissionReservesTheWorstCaseAndBoundsEveryCall: one reservation
// before the first step covers every step's bound; every step is sent a
// budget; the events carry the hold; the hold is released at the end.
func TestAdmissionReservesTheWorstCaseAndBoundsEveryCall(t *testing.T) {
	env := newEnv(t)
	f := newLedger(env)
	st, err := run(t, env, ConsensusInput{Prompt: "q [sim:disagree]", MaxRounds: 2, Account: "acme", Project: "p"})
	if err != nil {
		t.Fatal(err)
	}
	if len(f.reserves) != 1 || len(f.reserves[0].Bounds) != 6 || f.reserves[0].Hold == "" {
		t.Fatalf("reserves %+v, want one covering 6 steps", f.reserves)
	}
	if f.released != 1 || len(f.events) != st.Steps {
		t.Fatalf("released %d, %d events for %d steps", f.released, len(f.events), st.Steps)
	}
	var charged money.Micros
	for _, e := range f.events {
		if e.Hold != f.hold.ID {
			t.Fatalf("event %+v outside the hold %s", e, f.hold.ID)
		}
		c, _ := f.hold.Price(store.TokenBound{PromptTokens: e.PromptTokens, CompletionTokens: e.CompletionTokens})
		charged += c
	}
	if charged > f.hold.Amount {
		t.Fatalf("the steps may cost %s, over the %s hold", charged, f.hold.Amount)
	}
}

// TestFailedStepAfterRepairIsBilled: Pathos's reply is unusable, so is the
// repaired one; the run fails, and both calls are billed under the step's
// id. Before admission the failed step was never billed.
func TestFailedStepAfterRepairIsBilled(t *testing.T) {
	env := newEnv(t)
	f := newLedger(env)
	_, err := run(t, env, ConsensusInput{Prompt: "hi [sim:malformed]", Account: "acme"})
	var ae *temporal.ApplicationError
	if !errors.As(err, &ae) || ae.Type() != ErrRoundFailed {
		t.Fatalf("error %v, want %s", err, ErrRoundFailed)
	}
	if ids := f.eventIDs(); len(ids) != 1 || ids[0] != "r1-pathos" {
		t.Fatalf("billed %v, want the failed r1-pathos", ids)
	}
	e := f.events[0]
	// Two calls: the first prompt and the repair prompt, which holds the first reply.
	if e.PromptTokens == 0 || e.CompletionTokens == 0 || e.Hold == "" {
		t.Fatalf("event %+v", e)
	}
	if f.released != 1 {
		t.Fatalf("released %d times, want once on the failure path", f.released)
	}
}

// TestStepThatFailedAfterUseIsBilledAndRetried: Ethos's call ran and the
// repair call met a transient error; the attempt's usage is billed, and the
// step runs again under a new id (Temporal's own retry would have hidden
// the first attempt's usage).
func TestStepThatFailedAfterUseIsBilledAndRetried(t *testing.T) {
	env := newEnv(t)
	f := newLedger(env)
	attempts := 0
	env.OnActivity(inf.Ethos, mock.Anything, mock.Anything).Return(func(_ context.Context, in activities.EthosInput) (activities.EthosOutput, error) {
		attempts++
		u := activities.AgentUsage{Role: synapse.Ethos, Model: "m", PromptTokens: 300, CompletionTokens: 50}
		if in.Budget.MaxTokens != DefaultMaxTokens || in.Budget.MaxPromptTokens == 0 {
			return activities.EthosOutput{}, temporal.NewNonRetryableApplicationError("no budget", "Test", nil)
		}
		if attempts == 1 {
			return activities.EthosOutput{}, temporal.NewNonRetryableApplicationError("inference server answered 503", activities.ErrFailedAfterUse, nil, u)
		}
		return activities.EthosOutput{Usage: u, Verification: synapse.Verification{Scores: synapse.Scores{Accuracy: 1, Relevance: 1, Safety: 1}}}, nil
	})
	st, err := run(t, env, ConsensusInput{Prompt: "q", Account: "acme"})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"r1-pathos", "r1-logos", "r1-ethos", "r1-ethos-retry1"}
	if ids := f.eventIDs(); strings.Join(ids, ",") != strings.Join(want, ",") || st.Status != StatusConsensus {
		t.Fatalf("billed %v (status %s), want %v", ids, st.Status, want)
	}
	if !st.Usage[2].Failed || st.Usage[3].Failed {
		t.Fatalf("usage %+v: the first ethos attempt is the failed one", st.Usage)
	}
}

// TestHoldIsRaisedWhenAStepNeedsMore: Logos answers far longer than the
// estimate allowed for, so Ethos's exact bound (its prompt holds the answer)
// raises the hold before Ethos runs; a raise the account cannot cover stops
// the run before Ethos, with the steps that ran billed.
func TestHoldIsRaisedWhenAStepNeedsMore(t *testing.T) {
	for _, refuse := range []bool{false, true} {
		env := newEnv(t)
		f := newLedger(env)
		env.OnActivity(inf.Logos, mock.Anything, mock.Anything).Return(func(context.Context, activities.LogosInput) (activities.LogosOutput, error) {
			if refuse {
				f.refuse = temporal.NewNonRetryableApplicationError("not enough headroom", activities.ErrInsufficientHeadroom, nil)
			}
			return activities.LogosOutput{Solution: synapse.Solution{Answer: strings.Repeat("long ", 40_000), Confidence: 0.9},
				Usage: activities.AgentUsage{Model: "m", PromptTokens: 100, CompletionTokens: 1000}}, nil
		})
		ethos := 0
		env.OnActivity(inf.Ethos, mock.Anything, mock.Anything).Return(func(context.Context, activities.EthosInput) (activities.EthosOutput, error) {
			ethos++
			return activities.EthosOutput{Verification: synapse.Verification{Scores: synapse.Scores{Accuracy: 1, Relevance: 1, Safety: 1}}}, nil
		})
		_, err := run(t, env, ConsensusInput{Prompt: "q", MaxRounds: 1, Account: "acme"})
		if len(f.reserves) != 2 || f.reserves[1].Target == 0 {
			t.Fatalf("refuse=%v: reserves %+v, want the admission and one raise", refuse, f.reserves)
		}
		var ae *temporal.ApplicationError
		if refuse {
			if !errors.As(err, &ae) || ae.Type() != activities.ErrInsufficientHeadroom || ethos != 0 {
				t.Fatalf("error %v, ethos ran %d times", err, ethos)
			}
			if ids := f.eventIDs(); len(ids) != 2 || f.released != 1 {
				t.Fatalf("billed %v, released %d", ids, f.released)
			}
			continue
		}
		if err != nil || ethos != 1 {
			t.Fatalf("error %v, ethos ran %d times", err, ethos)
		}
	}
}

// TestHubCannotBillPastTheStepsBound: a hub (it holds only its device
// certificate) reports a step's usage itself; a hub that claims far more
// tokens than the step could use is billed at most the step's bound, and
// negative counts are billed as none, so the run's hold still covers it.
func TestHubCannotBillPastTheStepsBound(t *testing.T) {
	env := newEnv(t)
	f := newLedger(env)
	env.OnActivity(pl.PickHub, mock.Anything, mock.Anything).Return(activities.HubChoice{Queue: "hub.gpu1", Note: "gpu1: the only healthy hub of 1"}, nil)
	var bound activities.Budget
	env.OnActivity(inf.Logos, mock.Anything, mock.Anything).Return(func(_ context.Context, in activities.LogosInput) (activities.LogosOutput, error) {
		bound = in.Budget
		return activities.LogosOutput{Solution: synapse.Solution{Answer: "a", Confidence: 0.9},
			Usage: activities.AgentUsage{Model: "m", PromptTokens: 1 << 40, CompletionTokens: -5, RanOn: "cloud"}}, nil
	})
	if _, err := run(t, env, ConsensusInput{Prompt: "q [sim:agree]", Account: "acme", HubQueue: "hub.gpu1", CloudQueue: "cloud"}); err != nil {
		t.Fatal(err)
	}
	pt, _ := bound.EventBound()
	var logos *store.Usage
	for i, e := range f.events {
		if strings.HasSuffix(e.EventID, "/r1-logos") {
			logos = &f.events[i]
		}
	}
	if logos == nil || logos.PromptTokens != pt || logos.CompletionTokens != 0 {
		t.Fatalf("logos billed %+v, want %d prompt tokens (the bound) and none for a negative count", logos, pt)
	}
	var charged money.Micros
	for _, e := range f.events {
		c, _ := f.hold.Price(store.TokenBound{PromptTokens: e.PromptTokens, CompletionTokens: e.CompletionTokens})
		charged += c
	}
	if charged > f.hold.Amount {
		t.Fatalf("the hub's claims cost %s, over the %s hold", charged, f.hold.Amount)
	}
}

// TestAHoldNearExpiryIsRenewed: a run whose hold is about to lapse (the run
// stalled) renews it before the next step even when the step needs no more:
// a lapsed hold frees its headroom while the run still bills against it.
func TestAHoldNearExpiryIsRenewed(t *testing.T) {
	env := newEnv(t)
	f := newLedger(env)
	f.firstTTL = 30 * time.Second
	env.OnActivity(inf.Logos, mock.Anything, mock.Anything).Return(activities.LogosOutput{
		Solution: synapse.Solution{Answer: "a", Confidence: 0.9}, Usage: activities.AgentUsage{Model: "m", PromptTokens: 10, CompletionTokens: 10}}, nil)
	env.OnActivity(inf.Ethos, mock.Anything, mock.Anything).Return(activities.EthosOutput{
		Verification: synapse.Verification{Scores: synapse.Scores{Accuracy: 1, Relevance: 1, Safety: 1}}}, nil)
	if _, err := run(t, env, ConsensusInput{Prompt: "q", MaxRounds: 1, Account: "acme"}); err != nil {
		t.Fatal(err)
	}
	if len(f.reserves) < 2 || f.reserves[1].TTL <= f.firstTTL || f.reserves[1].Target == 0 {
		t.Fatalf("reserves %+v: the hold was not renewed", f.reserves)
	}
	if !f.hold.ExpiresAt.After(env.Now().Add(time.Minute)) {
		t.Fatalf("the hold expires at %v, now %v", f.hold.ExpiresAt, env.Now())
	}
}

// TestCloudBackendCannotBillPastTheStepsBound: a cloud backend (or an
// agent's own server) that reports a million completion tokens for a step
// sent max_tokens 64 is billed at most the step's bound, and the step's row
// says its usage was clipped.
func TestCloudBackendCannotBillPastTheStepsBound(t *testing.T) {
	env := newEnv(t)
	f := newLedger(env)
	var bound activities.Budget
	env.OnActivity(inf.Logos, mock.Anything, mock.Anything).Return(func(_ context.Context, in activities.LogosInput) (activities.LogosOutput, error) {
		bound = in.Budget
		return activities.LogosOutput{Solution: synapse.Solution{Answer: "a", Confidence: 0.9},
			Usage: activities.AgentUsage{Model: "m", PromptTokens: 10, CompletionTokens: 1_000_000}}, nil
	})
	st, err := run(t, env, ConsensusInput{Prompt: "q [sim:agree]", Account: "acme", MaxTokens: 64, Placement: PlacementCloud})
	if err != nil {
		t.Fatal(err)
	}
	_, ct := bound.EventBound()
	if bound.MaxTokens != 64 || ct <= 0 || ct >= 1_000_000 {
		t.Fatalf("budget %+v, completion bound %d", bound, ct)
	}
	var logos *store.Usage
	for i, e := range f.events {
		if strings.HasSuffix(e.EventID, "/r1-logos") {
			logos = &f.events[i]
		}
	}
	if logos == nil || logos.CompletionTokens > ct || logos.PromptTokens != 10 {
		t.Fatalf("logos billed %+v, want at most %d completion tokens (the bound) and the 10 prompt tokens", logos, ct)
	}
	var row *StepRecord
	for i := range st.StepLog {
		if st.StepLog[i].ID == "r1-logos" {
			row = &st.StepLog[i]
		}
	}
	if row == nil || !row.UsageClipped || row.CompletionTokens > int(ct) {
		t.Fatalf("logos step row %+v, want its usage clipped to the bound", row)
	}
	if f.charged > f.hold.Amount {
		t.Fatalf("the backend's claims cost %s, over the %s hold", f.charged, f.hold.Amount)
	}
}
