package harness

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/superinstance/mesh/internal/lora"
	"github.com/superinstance/mesh/internal/money"
	"github.com/superinstance/mesh/internal/runner"
	"github.com/superinstance/mesh/internal/store"
)

// DashboardSeed names what SeedDashboard gave an account.
type DashboardSeed struct {
	Account, Project, Device, Adapter, Recipient string
	Invite, OpenInvite                           store.Invite
	InviteToken                                  string
	Guest                                        store.GuestSession
	GuestSecret                                  string
	Handover                                     store.Handover
	SentFlush, InDoubtFlush                      store.Flush
}

// SeedDashboard gives account something for every section of its
// dashboard: usage over several days, models and projects (its own guest's
// too), a sent and an in-doubt flush, an adapter, a hub with an hour of
// vitals, a project with a guest who has run, an open invite and a pending
// handover. Every name carries the account's id, so a test can look for
// any of it where it must not be. The account must exist and must not
// have a Stripe customer yet.
func SeedDashboard(t testing.TB, m *Mesh, account string) DashboardSeed {
	t.Helper()
	ctx := context.Background()
	st := m.Store
	d := DashboardSeed{Account: account, Project: account + "-studio", Device: account + "-hub-1", Adapter: account + "-legal-lora",
		Recipient: account + "-heir@example.com"}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	if _, err := st.ClaimProject(ctx, d.Project, account); err != nil {
		t.Fatal(err)
	}
	// An invite that was accepted, whose guest ran, and one still open.
	_, inv, err := runner.StartInvite(ctx, st, m.Client, store.Invite{Project: d.Project, Host: account, Role: store.RoleEditor,
		Quota: 2 * money.Dollar, ExpiresAt: time.Now().Add(24 * time.Hour)})
	must(err)
	must(st.MarkInviteOpened(ctx, inv.ID))
	d.Invite = inv
	d.Guest, d.GuestSecret, err = runner.JoinInvite(ctx, st, m.Client, inv.ID)
	must(err)
	d.InviteToken, d.OpenInvite, err = runner.StartInvite(ctx, st, m.Client, store.Invite{Project: d.Project, Host: account,
		Role: store.RoleViewer, Quota: money.Dollar / 2, ExpiresAt: time.Now().Add(48 * time.Hour)})
	must(err)

	// Usage over the last days: two models, two projects, a guest's call.
	models := []string{"si-simulator-small", "si-simulator-large"}
	for day := range 6 {
		for i, model := range models {
			project := []string{"default", d.Project}[(day+i)%2]
			u := store.Usage{EventID: fmt.Sprintf("seed-%s-%d-%d", account, day, i), Account: account, Project: project, Model: model,
				PromptTokens: int64(20_000 * (day + 1)), CompletionTokens: int64(40_000 * (i + 1))}
			if day == 0 && i == 0 {
				u.GuestSession, u.Project = d.Guest.ID, d.Project
			}
			_, err := st.LogUsage(ctx, u)
			must(err)
			_, err = st.Pool.Exec(ctx, `UPDATE usage_events SET created_at = now() - make_interval(days => $2) WHERE event_id = $1`,
				u.EventID, day)
			must(err)
		}
	}

	// A flush Stripe took, and one whose answer was lost.
	must(st.SetStripeCustomer(ctx, account, "cus_"+account))
	f, _, err := st.ReserveFlush(ctx, account)
	must(err)
	d.SentFlush, err = st.CompleteFlush(ctx, f.ID)
	must(err)
	_, err = st.LogUsage(ctx, store.Usage{EventID: "seed-" + account + "-late", Account: account, Project: "default",
		Model: "si-simulator-large", PromptTokens: 300_000, CompletionTokens: 200_000})
	must(err)
	f, _, err = st.ReserveFlush(ctx, account)
	must(err)
	d.InDoubtFlush, err = st.MarkInDoubt(ctx, f.ID, "Stripe did not answer within 10s")
	must(err)

	// An adapter.
	l, _, err := st.RegisterLoRA(ctx, store.LoRA{ID: lora.NewID(), Owner: account, Project: d.Project, Name: d.Adapter,
		BaseModel: "si-simulator-small", Rank: 8, Alpha: 16, TargetModules: []string{"q_proj", "v_proj"}, Config: []byte(`{}`),
		Size: 4 << 20, SHA256: fmt.Sprintf("%064x", len(account)), ObjectKey: "adapters/" + account + "/legal"})
	must(err)
	must(st.SetLoRAState(ctx, l.ID, store.LoRAAvailable))

	// A hub with an hour of vitals.
	must(st.RegisterCert(ctx, d.Device, account, "serial-"+d.Device, time.Now().Add(time.Hour)))
	_, _, err = st.HubConnected(ctx, store.Hub{DeviceID: d.Device, Version: "v1.4.0", Hostname: account + "-rig", Bridge: "bridge-1"})
	must(err)
	now := time.Now()
	for i := 12; i >= 0; i-- {
		at := now.Add(-time.Duration(i) * 5 * time.Minute)
		load := 0.25 + 0.05*float64(i%7)
		must(st.SaveHeartbeats(ctx, []store.HubBeat{{DeviceID: d.Device, At: at, RTTMicros: 900 + 40*i, GPUCount: 1, GPULoad: load,
			GPUTempC: 55 + float64(i), CPULoad: 0.2 + 0.03*float64(i%5), NVML: true, Vitals: `{}`}}))
	}

	// A handover the recipient opened and has not answered.
	d.Handover, err = st.CreateHandover(ctx, store.Handover{ID: "ho_" + account, Project: d.Project, Host: account,
		Recipient: d.Recipient, ExpiresAt: now.Add(72 * time.Hour)})
	must(err)
	must(st.MarkHandoverOpened(ctx, d.Handover.ID))
	return d
}
