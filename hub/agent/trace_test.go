package agent_test

import (
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/superinstance/mesh/hub/agent"
)

// TestLocalAPITraces: each escalation and usage record is a span with its
// id, and no span carries the prompt or the API secret.
func TestLocalAPITraces(t *testing.T) {
	secret, err := agent.LoadOrCreateSecret(filepath.Join(t.TempDir(), agent.SecretFile))
	if err != nil {
		t.Fatal(err)
	}
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	srv := httptest.NewServer(agent.HandlerWith(agent.New(agent.Options{}), secret, tp))
	t.Cleanup(srv.Close)
	good := func(r *http.Request) {
		r.Header.Set("Content-Type", "application/json")
		r.Header.Set("Authorization", "Bearer "+secret)
	}
	if code, line := do(t, srv, http.MethodPost, "/v1/usage", `{"event_id":"traced-1","model":"llama"}`, good); code != 202 {
		t.Fatalf("usage: %d %s", code, line)
	}
	if code, line := do(t, srv, http.MethodPost, "/v1/escalate", `{"prompt":"a private question","request_id":"traced-2"}`, good); code != 200 {
		t.Fatalf("escalate: %d %s", code, line)
	}
	// The escalation's span ends when its caller leaves (the link is down).
	seen := map[string]string{}
	for deadline := time.Now().Add(5 * time.Second); len(seen) < 2 && time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		for _, s := range exp.GetSpans() {
			var attrs []string
			for _, kv := range s.Attributes {
				attrs = append(attrs, string(kv.Key)+"="+kv.Value.Emit())
			}
			seen[s.Name] = strings.Join(attrs, " ")
		}
	}
	if !strings.Contains(seen["hub.usage"], "si.event_id=traced-1") || !strings.Contains(seen["hub.escalate"], "si.request_id=traced-2") {
		t.Fatalf("spans %v", seen)
	}
	for name, attrs := range seen {
		if strings.Contains(attrs, "private question") || strings.Contains(attrs, secret) {
			t.Errorf("span %s carries %s", name, attrs)
		}
	}
}
