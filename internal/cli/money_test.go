package cli

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// Money prints as dollars and cents, with more decimals only when there is
// a sub-cent part; --json keeps micro-dollars.
func TestMoneyPrintsAsDollarsAndCents(t *testing.T) {
	t.Setenv("HOME", t.TempDir())
	t.Setenv("SI_TOKEN", "si_alice")
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/v1/balance":
			_, _ = w.Write([]byte(`{"account":"alice","status":"active","tier":"managed","credits_micros":30000000,"unbilled_micros":1200,"credit_ceiling_micros":100000000}`))
		case "/v1/usage":
			_, _ = w.Write([]byte(`{"events":[{"event_id":"e1","project":"p","model":"m","prompt_tokens":1,"completion_tokens":2,"charged_micros":412,"credits_applied_micros":50000,"at":"2026-12-01T12:00:00Z"}]}`))
		default:
			http.NotFound(w, r)
		}
	}))
	defer api.Close()
	t.Setenv("SI_API_URL", api.URL)
	for args, want := range map[string][]string{
		"balance":        {"credits   $30.00\n", "unbilled  $0.0012\n", "ceiling   $100.00\n"},
		"usage":          {"$0.05  ", "$0.000412\n"},
		"balance --json": {`"credits_micros": 30000000`, `"unbilled_micros": 1200`},
		"usage --json":   {`"charged_micros": 412`},
	} {
		var out, errb bytes.Buffer
		if code := Main(strings.Fields(args), &out, &errb); code != 0 {
			t.Fatalf("si %s: exit %d: %s", args, code, errb.String())
		}
		for _, w := range want {
			if !strings.Contains(out.String(), w) {
				t.Errorf("si %s does not print %q:\n%s", args, w, out.String())
			}
		}
		if strings.Contains(out.String(), "00000") && !strings.Contains(args, "--json") {
			t.Errorf("si %s prints six decimals:\n%s", args, out.String())
		}
	}
}
