package store_test

import (
	"context"
	"testing"

	"github.com/superinstance/mesh/internal/store"
	"github.com/superinstance/mesh/test/harness"
)

func TestMain(m *testing.M) { harness.Main(m) }

func TestMigrationsAreNumberedContiguously(t *testing.T) {
	ms, err := store.Migrations()
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) == 0 || ms[0].Version != 1 {
		t.Fatalf("migrations %+v", ms)
	}
}

func TestMigrateIsIdempotent(t *testing.T) {
	s := harness.Store(t) // Open has applied every migration
	n, err := store.Migrate(context.Background(), s.Pool)
	if err != nil || n != 0 {
		t.Fatalf("second migrate applied %d: %v", n, err)
	}
}

func TestProjectsAndRuns(t *testing.T) {
	s := harness.Store(t)
	ctx := context.Background()
	if err := s.EnsureProject(ctx, "Bad Name"); err == nil {
		t.Fatal("invalid project id accepted")
	}
	run := store.ConsensusRun{WorkflowID: "w1", Project: "p1", Prompt: "q", Status: "consensus", Score: 0.9, Rounds: 1, Answer: "a", Placement: "cloud"}
	if err := s.RecordConsensus(ctx, run); err != nil {
		t.Fatal(err)
	}
	run.Score, run.Answer = 0.95, "b"
	if err := s.RecordConsensus(ctx, run); err != nil {
		t.Fatal(err)
	}
	got, err := s.ConsensusRun(ctx, "w1")
	if err != nil || got.Score != 0.95 || got.Answer != "b" || got.Project != "p1" {
		t.Fatalf("%+v %v", got, err)
	}
	if _, err := s.ConsensusRun(ctx, "w2"); err != store.ErrNotFound {
		t.Fatalf("missing run: %v", err)
	}
	bad := run
	bad.WorkflowID, bad.Status = "w3", "maybe"
	if err := s.RecordConsensus(ctx, bad); err == nil {
		t.Fatal("a status outside the schema's set was stored")
	}
}

func TestRunStrategyIsStored(t *testing.T) {
	s := harness.Store(t)
	ctx := context.Background()
	for _, c := range []struct{ id, strategy, want string }{
		{"s-vote", "vote", "vote"},
		{"s-single", "single", "single"},
		// A run recorded from a history older than strategies carries none: a debate.
		{"s-old", "", "debate"},
	} {
		run := store.ConsensusRun{WorkflowID: c.id, Project: store.DefaultProject, Account: "acct", Prompt: "q", Status: "consensus", Strategy: c.strategy}
		if err := s.RecordConsensus(ctx, run); err != nil {
			t.Fatal(err)
		}
		got, err := s.ConsensusRun(ctx, c.id)
		if err != nil || got.Strategy != c.want {
			t.Fatalf("%s: strategy %q, want %q (%v)", c.id, got.Strategy, c.want, err)
		}
	}
	runs, err := s.RecentRuns(ctx, store.DefaultProject, "acct", 10)
	if err != nil || len(runs) != 3 {
		t.Fatalf("%+v %v", runs, err)
	}
	for _, r := range runs {
		if r.Strategy == "" {
			t.Fatalf("listed run %s without its strategy", r.WorkflowID)
		}
	}
	bad := store.ConsensusRun{WorkflowID: "s-bad", Project: "p1", Prompt: "q", Status: "consensus", Strategy: "guess"}
	if err := s.RecordConsensus(ctx, bad); err == nil {
		t.Fatal("a strategy outside the schema's set was stored")
	}
}
