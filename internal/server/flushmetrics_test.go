package server_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

	"go.temporal.io/sdk/client"

	"github.com/superinstance/mesh/internal/server"
	"github.com/superinstance/mesh/internal/simulator"
	"github.com/superinstance/mesh/internal/store"
	"github.com/superinstance/mesh/test/harness"
)

// TestMetricsShowFlushesInDoubt: a flush whose answer was lost is counted
// on /metrics as in doubt, with its cents.
func TestMetricsShowFlushesInDoubt(t *testing.T) {
	c := harness.Client(t)
	st := harness.Store(t)
	ctx := context.Background()
	harness.EnsureAccount(t, st, "acct")
	if err := st.SetStripeCustomer(ctx, "acct", "cus_acct"); err != nil {
		t.Fatal(err)
	}
	if _, err := st.LogUsage(ctx, store.Usage{EventID: "e1", Account: "acct", Project: "p", Model: "si-simulator-large", PromptTokens: 1_000_000}); err != nil {
		t.Fatal(err)
	}
	f, _, err := st.ReserveFlush(ctx, "acct")
	if err != nil {
		t.Fatal(err)
	}
	if err := st.FlushAttempt(ctx, f.ID, "stripe 500", true); err != nil {
		t.Fatal(err)
	}
	body := apiMetrics(t, c, st)
	for _, want := range []string{`si_flushes_open{state="in_doubt"} 1`, `si_flushes_open{state="pending"} 0`,
		fmt.Sprintf(`si_flushes_open_cents{state="in_doubt"} %d`, f.AmountCents), "si_flushes_up 1"} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}

// apiMetrics starts an API role on st and returns what its /metrics serves.
func apiMetrics(t *testing.T, c client.Client, st *store.Store) string {
	t.Helper()
	_, llmURL := harness.Simulator(t, simulator.Options{})
	s, err := server.Start(server.Options{Roles: map[string]bool{server.RoleAPI: true}, MetricsListen: "127.0.0.1:0",
		Temporal: c, Store: st, Inference: harness.Inference(llmURL)})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Stop()
	resp, err := http.Get(s.MetricsURL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(body)
}
