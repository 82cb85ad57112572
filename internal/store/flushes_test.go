package store_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/superinstance/mesh/internal/money"
	"github.com/superinstance/mesh/internal/store"
	"github.com/superinstance/mesh/test/harness"
)

func billable(t *testing.T, s *store.Store, id string, usage int) {
	t.Helper()
	ctx := context.Background()
	if _, err := s.CreateAccount(ctx, id, ""); err != nil && !errors.Is(err, store.ErrExists) {
		t.Fatal(err)
	}
	if err := s.SetStripeCustomer(ctx, id, "cus_"+id); err != nil {
		t.Fatal(err)
	}
	addUsage(t, s, id, usage)
}

var usageSeq int

func addUsage(t *testing.T, s *store.Store, id string, n int) {
	t.Helper()
	for range n {
		usageSeq++
		if _, err := s.LogUsage(context.Background(), store.Usage{EventID: fmt.Sprintf("%s-%d", id, usageSeq), Account: id,
			Project: "p", Model: "si-simulator-large", PromptTokens: 100_000, CompletionTokens: 1_000}); err != nil {
			t.Fatal(err)
		}
	}
}

// TestReserveFlushNeverReusesOrBurnsAnID: nothing to flush and no customer
// take no id; an open flush is returned instead of a second; ids a caller
// chose before the sequence are stepped over.
func TestReserveFlushNeverReusesOrBurnsAnID(t *testing.T) {
	s := harness.Store(t)
	ctx := context.Background()
	if _, err := s.CreateAccount(ctx, "nocus", ""); err != nil {
		t.Fatal(err)
	}
	addUsage(t, s, "nocus", 1)
	if _, _, err := s.ReserveFlush(ctx, "nocus"); !errors.Is(err, store.ErrNoStripeCustomer) {
		t.Fatalf("no customer: %v", err)
	}
	billable(t, s, "seq", 0)
	if _, _, err := s.ReserveFlush(ctx, "seq"); !errors.Is(err, store.ErrNothingToFlush) {
		t.Fatalf("nothing to flush: %v", err)
	}
	if _, _, err := s.ReserveFlush(ctx, "ghost"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("unknown account: %v", err)
	}
	addUsage(t, s, "seq", 2)
	f, created, err := s.ReserveFlush(ctx, "seq")
	if err != nil || !created || f.ID != "flush-seq-1" || f.State != store.FlushPending || f.StripeIdentifier != f.ID {
		t.Fatalf("first reservation %+v %v %v", f, created, err)
	}
	again, created, err := s.ReserveFlush(ctx, "seq")
	if err != nil || created || again.ID != f.ID {
		t.Fatalf("second reservation while open %+v %v %v", again, created, err)
	}
	// Another account's flushes are its own.
	billable(t, s, "other", 1)
	if o, created, err := s.ReserveFlush(ctx, "other"); err != nil || !created || o.ID != "flush-other-1" {
		t.Fatalf("other account %+v %v %v", o, created, err)
	}
	if _, err := s.CompleteFlush(ctx, f.ID); err != nil {
		t.Fatal(err)
	}
	// A run from before the sequence chose flush-seq-2 itself.
	addUsage(t, s, "seq", 1)
	if old, err := s.StartFlush(ctx, "seq", "flush-seq-2"); err != nil {
		t.Fatal(err)
	} else if _, err := s.CompleteFlush(ctx, old.ID); err != nil {
		t.Fatal(err)
	}
	addUsage(t, s, "seq", 1)
	next, created, err := s.ReserveFlush(ctx, "seq")
	if err != nil || !created || next.ID != "flush-seq-3" {
		t.Fatalf("after an id taken outside the sequence: %+v %v %v", next, created, err)
	}
	if b, _ := s.Books(ctx, "seq"); !b.Balanced() || b.InDoubt != money.Micros(next.AmountCents)*money.Cent {
		t.Fatalf("books %+v", b)
	}
}

// TestConcurrentReservationsMakeOneFlush: racing triggers (threshold, sweep,
// CLI) reserve one flush between them.
func TestConcurrentReservationsMakeOneFlush(t *testing.T) {
	s := harness.Store(t)
	billable(t, s, "race", 3)
	var wg sync.WaitGroup
	var mu sync.Mutex
	ids, createdN := map[string]bool{}, 0
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			f, created, err := s.ReserveFlush(context.Background(), "race")
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			defer mu.Unlock()
			ids[f.ID] = true
			if created {
				createdN++
			}
		}()
	}
	wg.Wait()
	if len(ids) != 1 || createdN != 1 || !ids["flush-race-1"] {
		t.Fatalf("ids %v, %d created", ids, createdN)
	}
}

// TestAFlushInDoubtIsNeverFailedByItsBudget: after an attempt with an
// unknown outcome the flush is in doubt; FailFlush (the retry budget ran
// out) refuses to fail it, only RefuseFlush (Stripe's definite refusal)
// does; while open its cents are in doubt in the books and still count
// toward the ceiling.
func TestAFlushInDoubtIsNeverFailedByItsBudget(t *testing.T) {
	s := harness.Store(t)
	ctx := context.Background()
	billable(t, s, "doubt", 2)
	f, _, err := s.ReserveFlush(ctx, "doubt")
	if err != nil {
		t.Fatal(err)
	}
	if sending, err := s.FlushSending(ctx, f.ID); err != nil || sending.FirstAttemptAt.IsZero() {
		t.Fatalf("sending %+v %v", sending, err)
	}
	if err := s.FlushAttempt(ctx, f.ID, "stripe 500", true); err != nil {
		t.Fatal(err)
	}
	got, err := s.FailFlush(ctx, f.ID, "budget spent")
	if !errors.Is(err, store.ErrFlushInDoubt) || got.State != store.FlushInDoubt {
		t.Fatalf("FailFlush on a flush in doubt: %+v %v", got, err)
	}
	a, _ := s.AccountByID(ctx, "doubt")
	b, _ := s.Books(ctx, "doubt")
	cents := money.Micros(f.AmountCents) * money.Cent
	if !b.Balanced() || b.InDoubt != cents || b.Owed != a.Unbilled || b.Unbilled != a.Unbilled-cents {
		t.Fatalf("books %+v, account %+v", b, a)
	}
	st, err := s.FlushStats(ctx)
	if err != nil || st.InDoubt != 1 || st.InDoubtCents != f.AmountCents {
		t.Fatalf("stats %+v %v", st, err)
	}
	if got, err := s.RefuseFlush(ctx, f.ID, "400 resource_missing"); err != nil || got.State != store.FlushFailed {
		t.Fatalf("RefuseFlush %+v %v", got, err)
	}
	if b, _ := s.Books(ctx, "doubt"); !b.Balanced() || b.InDoubt != 0 || b.Unbilled != a.Unbilled {
		t.Fatalf("books after the refusal %+v", b)
	}
	if again, err := s.RefuseFlush(ctx, f.ID, "retried"); err != nil || again.State != store.FlushFailed || again.Error != "400 resource_missing" {
		t.Fatalf("refusing a failed flush again: %+v %v", again, err)
	}
	if _, err := s.CompleteFlush(ctx, f.ID); err == nil {
		t.Fatal("a failed flush was completed")
	}
}

// TestNoFlushForAnAccountNotSubscribed: once si stripe setup has recorded
// the metered price, an account with a customer but no subscription to it
// gets no flush by either path (Stripe would invoice none of it), its cents
// stay unbilled, and no id is taken; once subscribed it flushes. Accounts
// are flushed as before while no setup is recorded.
func TestNoFlushForAnAccountNotSubscribed(t *testing.T) {
	s := harness.Store(t)
	ctx := context.Background()
	billable(t, s, "early", 2)
	if err := s.SaveStripeSetup(ctx, store.StripeSetup{MeterID: "mtr_1", MeterEvent: "si_usage_cents", ProductID: "si_cloud", PriceID: "price_1",
		WebhookEndpointID: "we_1", WebhookURL: "https://mesh.example.com/v1/stripe/webhook"}); err != nil {
		t.Fatal(err)
	}
	before, _ := s.AccountByID(ctx, "early")
	if _, _, err := s.ReserveFlush(ctx, "early"); !errors.Is(err, store.ErrNoUsageSubscription) {
		t.Fatalf("reserve, not subscribed: %v", err)
	}
	if _, err := s.StartFlush(ctx, "early", "flush-early-chosen"); !errors.Is(err, store.ErrNoUsageSubscription) {
		t.Fatalf("start, not subscribed: %v", err)
	}
	if after, _ := s.AccountByID(ctx, "early"); after.Unbilled != before.Unbilled || after.Unbilled == 0 {
		t.Fatalf("unbilled %s -> %s: want it kept", before.Unbilled, after.Unbilled)
	}
	if err := s.SetUsageSubscription(ctx, "early", "sub_1"); err != nil {
		t.Fatal(err)
	}
	f, created, err := s.ReserveFlush(ctx, "early")
	if err != nil || !created || f.ID != "flush-early-1" {
		t.Fatalf("reserve, subscribed: %+v %v %v; want the first id", f, created, err)
	}
}
