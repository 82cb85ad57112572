package store_test

import (
	"context"
	"encoding/json"
	"errors"
	"testing"

	"github.com/superinstance/mesh/internal/store"
	"github.com/superinstance/mesh/test/harness"
)

// An account's evaluations are its own, newest first; one for an account
// that does not exist, or outside the schema's bounds, is refused.
func TestEvalsPerAccount(t *testing.T) {
	s := harness.Store(t)
	ctx := context.Background()
	harness.EnsureAccount(t, s, "alice")
	harness.EnsureAccount(t, s, "bob")
	sums := json.RawMessage(`[{"strategy":"debate","correct":1}]`)
	run := func(account string, n int) (store.EvalRun, error) {
		return s.RecordEval(ctx, store.EvalRun{Account: account, Dataset: "arithmetic", Seed: 1, Questions: n, Budget: 3072, Summaries: sums, Results: json.RawMessage(`[]`)})
	}
	first, err := run("alice", 1)
	if err != nil {
		t.Fatal(err)
	}
	second, err := run("alice", 2)
	if err != nil || second.ID == first.ID {
		t.Fatalf("%v %v", second, err)
	}
	if _, err := run("bob", 3); err != nil {
		t.Fatal(err)
	}
	got, err := s.Evals(ctx, "alice", 10)
	if err != nil || len(got) != 2 || got[0].ID != second.ID || got[1].ID != first.ID || got[0].Results != nil || !sameJSON(got[0].Summaries, sums) {
		t.Fatalf("alice's evals: %+v %v", got, err)
	}
	if got, _ := s.Evals(ctx, "alice", 1); len(got) != 1 {
		t.Fatalf("limit 1: %d", len(got))
	}
	if _, err := run("nobody", 1); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("an unknown account: %v", err)
	}
	if _, err := run("alice", 1001); err == nil {
		t.Fatal("1001 questions stored")
	}
	if _, err := s.RecordEval(ctx, store.EvalRun{Account: "alice", Dataset: "gsm8k", Questions: 1, Budget: 1, Summaries: sums, Results: sums}); err == nil {
		t.Fatal("an unknown data set stored")
	}
}

// sameJSON compares JSON values, not their spelling (jsonb reorders keys).
func sameJSON(a, b json.RawMessage) bool {
	var x, y any
	if json.Unmarshal(a, &x) != nil || json.Unmarshal(b, &y) != nil {
		return false
	}
	ax, _ := json.Marshal(x)
	by, _ := json.Marshal(y)
	return string(ax) == string(by)
}
