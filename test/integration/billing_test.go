package integration

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"go.temporal.io/sdk/temporal"

	"github.com/superinstance/mesh/activities"
	"github.com/superinstance/mesh/internal/money"
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
