package api_test

import (
	"context"
	"net/http"
	"strings"
	"testing"

	"github.com/superinstance/mesh/internal/api"
	"github.com/superinstance/mesh/test/harness"
)

// An attacker names a device id no certificate could carry (too long, upper
// case, a slash): the API answers 400 naming the rule before any workflow
// starts, instead of a workflow that retries a database CHECK for minutes
// and a 503. The server here has no Temporal client: reaching it would panic.
func TestHubCommandRefusesAnInvalidDeviceID(t *testing.T) {
	st := harness.Store(t)
	harness.EnsureAccount(t, st, "mallory")
	tok, err := st.CreateAPIToken(context.Background(), "mallory", "")
	if err != nil {
		t.Fatal(err)
	}
	h := (&api.Server{Store: st}).Handler()
	for _, id := range []string{strings.Repeat("a", 401), strings.Repeat("b", 64), "Hub1", "-hub", "hub%2Fx", "hub%00"} {
		rec := send(h, "POST", "/v1/hubs/"+id+"/commands", `{"command":"uptime"}`, nil, map[string]string{"Authorization": "Bearer " + tok})
		if rec.Code != http.StatusBadRequest || !strings.Contains(rec.Body.String(), "device") {
			t.Errorf("device %.20q: %d %s", id, rec.Code, rec.Body)
		}
	}
}
