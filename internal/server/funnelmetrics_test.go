package server_test

import (
	"context"
	"crypto/sha256"
	"strings"
	"testing"
	"time"

	"github.com/superinstance/mesh/internal/store"
	"github.com/superinstance/mesh/test/harness"
)

// The funnel is on /metrics as counters; a revoked invite stays opened,
// and with the only handover pending there is no handover rate at all
// (not a rate of 0).
func TestMetricsShowTheFunnel(t *testing.T) {
	c := harness.Client(t)
	st := harness.Store(t)
	ctx := context.Background()
	harness.EnsureAccount(t, st, "host")
	if _, err := st.ClaimProject(ctx, "atlas", "host"); err != nil {
		t.Fatal(err)
	}
	hash := sha256.Sum256([]byte("invite"))
	if _, err := st.CreateInvite(ctx, store.Invite{ID: "inv1", TokenHash: hash[:], Project: "atlas", Host: "host", Role: store.RoleViewer,
		Quota: 1_000_000, ExpiresAt: time.Now().Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	if err := st.MarkInviteOpened(ctx, "inv1"); err != nil {
		t.Fatal(err)
	}
	if _, err := st.CloseInvite(ctx, "inv1", store.InviteRevoked); err != nil {
		t.Fatal(err)
	}
	if _, err := st.CreateHandover(ctx, store.Handover{ID: "ho1", Project: "atlas", Host: "host", Recipient: "ada@example.com",
		ExpiresAt: time.Now().Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	m := apiMetrics(t, c, st)
	for _, want := range []string{`si_funnel_invites_total{step="sent"} 1`, `si_funnel_invites_total{step="opened"} 1`,
		`si_funnel_invites_total{step="accepted"} 0`, `si_funnel_handovers_total{step="started"} 1`,
		`si_funnel_handovers_total{step="first_paid"} 0`, `si_conversion_ratio{kind="invite"} 0`, "# TYPE si_funnel_invites_total counter"} {
		if !strings.Contains(m, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	if strings.Contains(m, `si_conversion_ratio{kind="handover"}`) {
		t.Errorf("/metrics has a handover rate with no handover decided")
	}
}
