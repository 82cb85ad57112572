package cli

import (
	"encoding/json"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/superinstance/mesh/hub/agent"
)

// TestEscalateWaitsForTheLinkThenTimesOut runs si escalate against a real
// hub API whose link is down: it says on stderr that it waits, gives up at
// --timeout, and with --json prints a JSON error, never nothing. The hub
// keeps the request, under the id the CLI names in its error.
func TestEscalateWaitsForTheLinkThenTimesOut(t *testing.T) {
	dir := t.TempDir()
	secretFile := filepath.Join(dir, agent.SecretFile)
	secret, err := agent.LoadOrCreateSecret(secretFile)
	if err != nil {
		t.Fatal(err)
	}
	a := agent.New(agent.Options{})
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: agent.Handler(a, secret)}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { _ = srv.Close() })

	for _, asJSON := range []bool{true, false} {
		args := []string{"escalate", "--hub-api", l.Addr().String(), "--hub-secret-file", secretFile, "--timeout", "400ms"}
		if asJSON {
			args = append(args, "--json")
		}
		var out, errb strings.Builder
		start := time.Now()
		code := Main(append(args, "anyone there?"), &out, &errb)
		if took := time.Since(start); code == 0 || took > 5*time.Second {
			t.Fatalf("--json=%v: exit %d after %v", asJSON, code, took)
		}
		if !strings.Contains(errb.String(), "waiting for the link") {
			t.Errorf("--json=%v: stderr does not say it waits for the link: %q", asJSON, errb.String())
		}
		if !asJSON {
			if !strings.Contains(errb.String(), "no result after 400ms") {
				t.Errorf("stderr %q", errb.String())
			}
			continue
		}
		var e struct {
			Error struct {
				Code      string `json:"code"`
				RequestID string `json:"request_id"`
				Message   string `json:"message"`
			} `json:"error"`
		}
		if err := json.Unmarshal([]byte(out.String()), &e); err != nil || e.Error.Code != "timeout" || e.Error.RequestID == "" ||
			!strings.Contains(e.Error.Message, "--request-id "+e.Error.RequestID) {
			t.Fatalf("--json on timeout printed %q (%v)", out.String(), err)
		}
	}
	if st := a.Status(); st.Queued != 2 {
		t.Fatalf("the hub keeps %d requests, want 2", st.Queued)
	}
}
