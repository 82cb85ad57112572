package integration

import (
	"context"
	"crypto/sha256"
	"strings"
	"testing"
	"time"

	"github.com/superinstance/mesh/internal/money"
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
// once it is spent the guest's next run is refused before any inference.
func TestGuestConsensusBillsHostUpToQuota(t *testing.T) {
	m := harness.StartMesh(t, simulator.Options{})
	ctx := context.Background()
	m.Account(t, "host")
	h := sha256.Sum256([]byte("tok"))
	if _, err := m.Store.CreateInvite(ctx, store.Invite{ID: "inv-g", TokenHash: h[:], Project: "team", Host: "host",
		Role: store.RoleEditor, Quota: 3_000, ExpiresAt: time.Now().Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Store.AcceptInvite(ctx, "inv-g", "gs-g", secretHash("gs-g"), time.Now()); err != nil {
		t.Fatal(err)
	}
	in := workflows.ConsensusInput{Prompt: "Summarise the plan [sim:agree]", GuestSession: "gs-g",
		Placement: workflows.PlacementCloud}
	if _, _, err := ask(t, m, in, nil); err != nil {
		t.Fatal(err)
	}
	g, _ := m.Store.GuestSessionByID(ctx, "gs-g")
	a, _ := m.Store.AccountByID(ctx, "host")
	if g.Remaining >= 3_000 || a.Unbilled != money.Micros(3_000)-g.Remaining {
		t.Fatalf("after one run: guest has %d left, host owes %d", g.Remaining, a.Unbilled)
	}
	// Spend the rest; the run that crosses the quota is charged what was left.
	var err error
	for range 60 {
		if _, _, err = ask(t, m, in, nil); err != nil {
			break
		}
	}
	if err == nil || !strings.Contains(err.Error(), "guest quota exhausted") {
		g, _ = m.Store.GuestSessionByID(ctx, "gs-g")
		t.Fatalf("runs past the quota: %v (remaining %d)", err, g.Remaining)
	}
	a, _ = m.Store.AccountByID(ctx, "host")
	if a.Unbilled != 3_000 {
		t.Fatalf("host owes %d after the guest spent a 3000 quota", a.Unbilled)
	}
	if _, _, err := ask(t, m, in, nil); err == nil || !strings.Contains(err.Error(), "guest quota exhausted") {
		t.Fatalf("a run after the quota is spent: %v", err)
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
