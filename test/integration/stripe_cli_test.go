package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/superinstance/mesh/internal/billing"
	"github.com/superinstance/mesh/internal/cli"
	"github.com/superinstance/mesh/internal/store"
	"github.com/superinstance/mesh/test/harness"
)

// operatorSI runs the command line in-process with its output and exit code.
func operatorSI(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	var out, errb bytes.Buffer
	code := cli.Main(args, &out, &errb)
	return out.String(), errb.String(), code
}

func siJSON(t *testing.T, v any, args ...string) {
	t.Helper()
	out, errb, code := operatorSI(t, append(args, "--json")...)
	if code != 0 {
		t.Fatalf("si %s: exit %d: %s", strings.Join(args, " "), code, errb)
	}
	if err := json.Unmarshal([]byte(out), v); err != nil {
		t.Fatalf("si %s --json: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// si stripe setup run twice creates nothing the second time and keeps the
// ids and the secret in the database; an account created after it is
// subscribed to the metered price once, even when its signup is run again.
func TestStripeSetupCommandAndSignup(t *testing.T) {
	db := harness.DatabaseURL(t)
	proxy := harness.NewStripeProxy(t, harness.StripeMock(t))
	stripeFlags := []string{"--database-url", db, "--stripe-key", "sk_test_mesh", "--stripe-api-base", proxy.URL}
	setup := append([]string{"stripe", "setup", "--public-url", "https://mesh.example.com", "--webhook-secret", "whsec_cli"}, stripeFlags...)
	if _, errb, code := operatorSI(t, "stripe", "setup", "--database-url", db, "--stripe-key", "sk_test_mesh"); code == 0 || !strings.Contains(errb, "--public-url is required") {
		t.Fatalf("setup without --public-url: exit %d, %s", code, errb)
	}
	if _, errb, code := operatorSI(t, append(setup[:2:2], append([]string{"--public-url", "mesh.example.com"}, stripeFlags...)...)...); code == 0 || !strings.Contains(errb, "not an http(s) base URL") {
		t.Fatalf("setup with a bad --public-url: exit %d, %s", code, errb)
	}
	// An account signed up before the setup is subscribed by it.
	early := append([]string{"account", "create", "--account", "early", "--email", "early@acme.example"}, stripeFlags...)
	if out, errb, code := operatorSI(t, early...); code != 0 || !strings.Contains(out, "si stripe setup subscribes it") {
		t.Fatalf("account create before setup: exit %d\n%s%s", code, out, errb)
	}
	var first, second struct {
		billing.SetupResult
		Subscribed []string `json:"subscribed_accounts"`
	}
	siJSON(t, &first, setup...)
	if len(first.Subscribed) != 1 || first.Subscribed[0] != "early" {
		t.Fatalf("setup subscribed %v; want [early]", first.Subscribed)
	}
	if len(first.Created) != 3 || first.PriceID == "" || first.WebhookSecret != "whsec_cli" {
		t.Fatalf("first setup %+v", first)
	}
	siJSON(t, &second, setup...)
	if len(second.Created) != 0 || len(second.Subscribed) != 0 || second.MeterID != first.MeterID || second.PriceID != first.PriceID || second.WebhookEndpointID != first.WebhookEndpointID {
		t.Fatalf("second setup %+v after %+v", second, first)
	}
	st, err := store.Open(context.Background(), db)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	rec, err := st.StripeSetup(context.Background())
	if err != nil || rec != first.SetupResult.StripeSetup {
		t.Fatalf("recorded %+v, %v; want %+v", rec, err, first.SetupResult.StripeSetup)
	}

	create := append([]string{"account", "create", "--account", "acme", "--email", "ops@acme.example"}, stripeFlags...)
	var acct struct {
		StripeCustomerID   string `json:"stripe_customer_id"`
		StripeSubscription string `json:"stripe_subscription"`
	}
	siJSON(t, &acct, create...)
	if acct.StripeCustomerID == "" || acct.StripeSubscription == "" {
		t.Fatalf("account create: %+v", acct)
	}
	siJSON(t, &acct, create...)
	keys := proxy.Keys("POST /v1/subscriptions")
	if len(keys) != 2 || keys[billing.UsageSubscriptionKey("acme")] != 1 || keys[billing.UsageSubscriptionKey("early")] != 1 {
		t.Fatalf("subscriptions asked for by idempotency key: %v; want one, once", keys)
	}
	subs := proxy.Requests("POST /v1/subscriptions")
	if f := subs[len(subs)-1].Form; f.Get("customer") != acct.StripeCustomerID || f.Get("items[0][price]") != first.PriceID {
		t.Fatalf("subscription request %v", f)
	}
}

func TestPriceAndThresholdCommands(t *testing.T) {
	db := harness.DatabaseURL(t)
	ctx := context.Background()
	st, err := store.Open(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	harness.EnsureAccount(t, st, "pricey")

	var p struct {
		Model      string `json:"model"`
		Prompt     int64  `json:"prompt_per_mtok_micros"`
		Completion int64  `json:"completion_per_mtok_micros"`
	}
	siJSON(t, &p, "price", "set", "--database-url", db, "--model", "llama-3-70b", "--prompt", "0.59", "--completion", "$0.79")
	if p.Model != "llama-3-70b" || p.Prompt != 590_000 || p.Completion != 790_000 {
		t.Fatalf("price set: %+v", p)
	}
	var all []struct {
		Model string `json:"model"`
	}
	siJSON(t, &all, "price", "ls", "--database-url", db)
	if len(all) < 2 || all[len(all)-1].Model != "*" {
		t.Fatalf("price ls: %+v (want the default last)", all)
	}
	// Usage is priced with it: a million prompt tokens cost $0.59, times 1.03.
	c, err := st.LogUsage(ctx, store.Usage{EventID: "pricey-1", Account: "pricey", Project: "p", Model: "llama-3-70b", PromptTokens: 1_000_000})
	if err != nil || c.CostBasis != 590_000 {
		t.Fatalf("usage after si price set: %+v, %v", c, err)
	}
	for args, want := range map[string]string{
		"price set --prompt 1 --completion 1":                   "--model is required",
		"price set --model a\tb --prompt 1 --completion 1":      "invalid model name",
		"price set --model m --prompt -1 --completion 1":        "cannot be negative",
		"price set --model m --prompt 0.0000001 --completion 1": "more than 6 decimal places",
		"price set --model m --prompt 1":                        "--completion is required",
		"billing threshold set --account nobody --amount 10":    "account nobody not found",
		"billing threshold set --account pricey --amount 0.001": "at least one cent",
		"billing threshold set --account pricey --amount ten":   "invalid amount",
		"billing threshold set --account pricey":                "--amount is required",
	} {
		fields := strings.Split(args, " ")
		_, errb, code := operatorSI(t, append(fields, "--database-url", db)...)
		if code == 0 || !strings.Contains(errb, want) {
			t.Errorf("si %s: exit %d, %q; want %q", args, code, errb, want)
		}
	}
	var a struct {
		FlushThreshold int64 `json:"flush_threshold_micros"`
	}
	siJSON(t, &a, "billing", "threshold", "set", "--database-url", db, "--account", "pricey", "--amount", "10.00")
	if a.FlushThreshold != 10_000_000 {
		t.Fatalf("threshold set: %+v", a)
	}
	if got, _ := st.AccountByID(ctx, "pricey"); got.FlushThreshold != 10_000_000 {
		t.Fatalf("stored threshold %s", got.FlushThreshold)
	}
}
