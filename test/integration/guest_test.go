package integration

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"go.temporal.io/sdk/temporal"

	"github.com/superinstance/mesh/activities"
	"github.com/superinstance/mesh/internal/simulator"
	"github.com/superinstance/mesh/internal/store"
	"github.com/superinstance/mesh/test/harness"
	"github.com/superinstance/mesh/workflows"
)

// secretHash is the hash of a made-up guest session secret.
func secretHash(session string) []byte {
	h := sha256.Sum256([]byte(store.GuestSecretPrefix + session))
	return h[:]
}

// A guest's consensus bills the host and draws down the session's quota;
// once what is left cannot cover a run's worst case the guest's next run is
// refused before any inference, and the host never owes more than the quota.
func TestGuestConsensusBillsHostUpToQuota(t *testing.T) {
	m := harness.StartMesh(t, simulator.Options{})
	ctx := context.Background()
	m.Account(t, "host")
	in := workflows.ConsensusInput{Prompt: "Summarise the plan [sim:agree]", GuestSession: "gs-g",
		Placement: workflows.PlacementCloud, MaxRounds: 1, MaxTokens: 64}
	w := worstCase(t, in)
	quota := 2 * w
	h := sha256.Sum256([]byte("tok"))
	if _, err := m.Store.CreateInvite(ctx, store.Invite{ID: "inv-g", TokenHash: h[:], Project: "team", Host: "host",
		Role: store.RoleEditor, Quota: quota, ExpiresAt: time.Now().Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Store.AcceptInvite(ctx, "inv-g", "gs-g", secretHash("gs-g"), time.Now()); err != nil {
		t.Fatal(err)
	}
	if _, _, err := ask(t, m, in, nil); err != nil {
		t.Fatal(err)
	}
	g, _ := m.Store.GuestSessionByID(ctx, "gs-g")
	a, _ := m.Store.AccountByID(ctx, "host")
	if g.Remaining >= quota || a.Unbilled != quota-g.Remaining {
		t.Fatalf("after one run: guest has %s left, host owes %s", g.Remaining, a.Unbilled)
	}
	// Spend all but less than a run's worst case: the next run is refused up front.
	for i := 0; g.Remaining >= w; i++ {
		if _, err := m.Store.LogUsage(ctx, store.Usage{EventID: fmt.Sprintf("gs-g-spend-%d", i), Account: "host", Project: "team",
			GuestSession: "gs-g", Model: simulator.ModelSmall, PromptTokens: 20_000}); err != nil {
			t.Fatal(err)
		}
		g, _ = m.Store.GuestSessionByID(ctx, "gs-g")
	}
	served := m.Sim.Requests()
	for range 2 {
		_, _, err := ask(t, m, in, nil)
		var ae *temporal.ApplicationError
		if !errors.As(err, &ae) || ae.Type() != activities.ErrInsufficientHeadroom || !strings.HasPrefix(ae.Message(), "guest quota too low") {
			t.Fatalf("a run past what the quota covers: %v (remaining %s of a %s worst case)", err, g.Remaining, w)
		}
	}
	a, _ = m.Store.AccountByID(ctx, "host")
	if m.Sim.Requests() != served || a.Unbilled != quota-g.Remaining || a.Unbilled > quota {
		t.Fatalf("refused runs made %d calls; host owes %s of a %s quota", m.Sim.Requests()-served, a.Unbilled, quota)
	}

	// A viewer guest watches but does not run.
	v := sha256.Sum256([]byte("tok-viewer"))
	if _, err := m.Store.CreateInvite(ctx, store.Invite{ID: "inv-v", TokenHash: v[:], Project: "team", Host: "host",
		Role: store.RoleViewer, Quota: 3_000, ExpiresAt: time.Now().Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Store.AcceptInvite(ctx, "inv-v", "gs-v", secretHash("gs-v"), time.Now()); err != nil {
		t.Fatal(err)
	}
	in.GuestSession = "gs-v"
	if _, _, err := ask(t, m, in, nil); err == nil || !strings.Contains(err.Error(), "can watch its runs but not start one") {
		t.Fatalf("a viewer guest's run: %v", err)
	}
	if g, _ := m.Store.GuestSessionByID(ctx, "gs-v"); g.Remaining != 3_000 {
		t.Fatalf("the refused viewer spent %d", 3_000-g.Remaining)
	}
}
