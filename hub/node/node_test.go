package node_test

import (
	"context"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/superinstance/mesh/hub/agent"
	"github.com/superinstance/mesh/hub/node"
	"github.com/superinstance/mesh/internal/pki"
	"github.com/superinstance/mesh/internal/simulator"
	meshv1 "github.com/superinstance/mesh/proto/meshv1"
	"github.com/superinstance/mesh/test/harness"
)

func TestMain(m *testing.M) { harness.Main(m) }

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestMetricsRefusePages: a web page that DNS-rebinds its own name to the
// hub's loopback metrics address (so the browser sends Host: its name),
// or that calls it across origins, reads neither /metrics nor /ready.
func TestMetricsRefusePages(t *testing.T) {
	p := harness.NewPKI(t)
	c := p.Enroll(t, harness.Store(t), pki.Identity{DeviceID: "gpu-ops-page", Account: "acme"}, time.Hour)
	n, err := node.Start(node.Options{
		Agent:         agent.Options{Bridge: "127.0.0.1:9", TLS: c, DeviceID: "gpu-ops-page"},
		MetricsListen: "127.0.0.1:0", DeviceID: "gpu-ops-page",
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(n.Stop)
	for _, path := range []string{"/metrics", "/ready"} {
		for name, h := range map[string]http.Header{
			"rebound Host":   {"Host": {"evil.example:" + n.MetricsAddr()[strings.LastIndex(n.MetricsAddr(), ":")+1:]}},
			"another origin": {"Origin": {"https://evil.example"}},
		} {
			req, _ := http.NewRequest(http.MethodGet, "http://"+n.MetricsAddr()+path, nil)
			req.Header = h
			if host := h.Get("Host"); host != "" {
				req.Host = host
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode < 400 || strings.Contains(string(b), "si_hub") || strings.Contains(string(b), "certificate") {
				t.Errorf("%s %s: %d %s", name, path, resp.StatusCode, b)
			}
		}
		// The operator's own scrape still works (/ready: 503, the link is down).
		want := map[string]int{"/metrics": http.StatusOK, "/ready": http.StatusServiceUnavailable}[path]
		if code, body := get(t, "http://"+n.MetricsAddr()+path); code != want {
			t.Errorf("%s from the hub itself: %d %s", path, code, body)
		}
	}
}

// TestMetricsAndReady: /ready is 503 until the link is up, then 200;
// /metrics shows the link, the outbox and the certificate. Neither needs
// the API secret, so neither may show it, the bridge's address or an
// error text, and the metrics address serves nothing of the local API.
func TestMetricsAndReady(t *testing.T) {
	m := harness.StartMesh(t, simulator.Options{})
	p := harness.NewPKI(t)
	b := harness.StartBridge(t, m, p, "127.0.0.1:0")
	addr := b.Addr().String()
	b.Stop() // down at first
	c := p.Enroll(t, m.Store, pki.Identity{DeviceID: "gpu-ops", Account: "acme"}, time.Hour)
	dir := t.TempDir()
	n, err := node.Start(node.Options{
		Agent:     agent.Options{Bridge: addr, TLS: c, DeviceID: "gpu-ops", Interval: 100 * time.Millisecond, Backoff: agent.Backoff{Min: 50 * time.Millisecond, Max: 200 * time.Millisecond}},
		APIListen: "127.0.0.1:0", APISecretFile: filepath.Join(dir, agent.SecretFile), OutboxFile: filepath.Join(dir, agent.OutboxFile),
		MetricsListen: "127.0.0.1:0", DeviceID: "gpu-ops",
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(n.Stop)
	secret, err := agent.ReadSecret(filepath.Join(dir, agent.SecretFile))
	if err != nil {
		t.Fatal(err)
	}
	base := "http://" + n.MetricsAddr()
	if err := n.Agent.RecordUsage(nil); err == nil {
		t.Fatal("an empty usage record queued")
	}
	for i := range 2 {
		if err := n.Agent.RecordUsage(&meshv1.UsageRecord{EventId: "ops-" + string(rune('a'+i)), Model: "m"}); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(1100 * time.Millisecond)

	code, body := get(t, base+"/ready")
	if code != http.StatusServiceUnavailable || !strings.Contains(body, `"link":"down`) || !strings.Contains(body, "valid until") {
		t.Fatalf("/ready with the link down: %d %s", code, body)
	}
	_, metrics := get(t, base+"/metrics")
	for _, want := range []string{"si_hub_link_up 0", `si_hub_outbox_depth{kind="usage"} 2`, `si_hub_outbox_depth{kind="escalation"} 0`, "si_hub_certificate_expiry_timestamp_seconds 1."} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	if !strings.Contains(metrics, "si_hub_outbox_oldest_age_seconds 1.") {
		t.Errorf("oldest age: %s", grep(metrics, "oldest"))
	}
	for _, leak := range []string{secret, addr, "dial", "127.0.0.1"} {
		if strings.Contains(body, leak) || strings.Contains(metrics, leak) {
			t.Errorf("/ready or /metrics shows %q", leak)
		}
	}
	// The metrics address is not the local API: nothing there starts work.
	req, _ := http.NewRequest(http.MethodPost, base+"/v1/escalate", strings.NewReader(`{"prompt":"q"}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set(agent.SecretHeader, "Bearer "+secret)
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode < 400 {
		t.Fatalf("the metrics address took an escalation: %v %v", resp, err)
	}

	harness.StartBridge(t, m, p, addr)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := n.Agent.WaitConnected(ctx); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		code, body = get(t, base+"/ready")
		_, metrics = get(t, base+"/metrics")
		if code == http.StatusOK && strings.Contains(metrics, `si_hub_outbox_depth{kind="usage"} 0`) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("/ready with the link up: %d %s\n%s", code, body, grep(metrics, "si_hub"))
		}
	}
	for _, want := range []string{"si_hub_link_up 1", "si_hub_link_sessions_total 1", "si_hub_outbox_oldest_age_seconds 0"} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %q:\n%s", want, grep(metrics, "si_hub"))
		}
	}
}

func grep(text, word string) string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		if strings.Contains(l, word) && !strings.HasPrefix(l, "#") {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
