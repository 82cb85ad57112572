package harness

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/superinstance/mesh/activities"
	"github.com/superinstance/mesh/internal/billing"
	"github.com/superinstance/mesh/internal/devstack"
	"github.com/superinstance/mesh/workers"
)

// StripeMock starts stripe-mock (built by `make tools`; SI_STRIPE_MOCK names
// another binary) until cleanup and returns its base URL.
func StripeMock(t testing.TB) string {
	t.Helper()
	bin := tool(t, "stripe-mock", "SI_STRIPE_MOCK")
	httpPort, err := devstack.FreePort("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	httpsPort, err := devstack.FreePort("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-http-port", fmt.Sprint(httpPort), "-https-port", fmt.Sprint(httpsPort))
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	addr := fmt.Sprintf("127.0.0.1:%d", httpPort)
	deadline := time.Now().Add(20 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			_ = c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("stripe-mock did not listen on %s", addr)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return "http://" + addr
}

// WithStripe gives the cloud worker billing activities that talk to baseURL.
func WithStripe(baseURL string) func(*Mesh, *workers.Cloud) {
	return func(m *Mesh, c *workers.Cloud) {
		m.Stripe = billing.NewStripe(baseURL, "sk_test_mesh", "")
		c.Billing = &activities.Billing{Store: m.Store, Stripe: m.Stripe}
	}
}

// StripeProxy forwards to a Stripe API (stripe-mock) and injects faults: a
// request on a path set to fail reaches Stripe, and then its response is
// replaced by a 500, as when Stripe commits a change and the reply is lost.
// It records the idempotency keys each path saw.
type StripeProxy struct {
	URL      string
	upstream string
	mu       sync.Mutex
	fail     map[string]int
	refuse   map[string]int
	keys     map[string]map[string]int
	requests []StripeRequest
}

// StripeRequest is one request the proxy forwarded: its route, idempotency
// key and form body.
type StripeRequest struct {
	Route, Key string
	Form       url.Values
}

// NewStripeProxy starts a proxy in front of upstream until cleanup.
func NewStripeProxy(t testing.TB, upstream string) *StripeProxy {
	t.Helper()
	p := &StripeProxy{upstream: upstream, fail: map[string]int{}, refuse: map[string]int{}, keys: map[string]map[string]int{}}
	srv := httptest.NewServer(p)
	t.Cleanup(srv.Close)
	p.URL = srv.URL
	return p
}

// Fail makes the next n requests to "METHOD /path" fail after reaching Stripe.
func (p *StripeProxy) Fail(route string, n int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.fail[route] = n
}

// Refuse makes the next n requests to "METHOD /path" get a 400 without
// reaching Stripe, as a permanent refusal would.
func (p *StripeProxy) Refuse(route string, n int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.refuse[route] = n
}

// Requests returns the requests forwarded so far, in order; with a route
// prefix ("POST /v1/prices"), only those whose route starts with it.
func (p *StripeProxy) Requests(prefix string) []StripeRequest {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []StripeRequest
	for _, r := range p.requests {
		if strings.HasPrefix(r.Route, prefix) {
			out = append(out, r)
		}
	}
	return out
}

// Keys returns how many requests "METHOD /path" received under each idempotency key.
func (p *StripeProxy) Keys(route string) map[string]int {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := map[string]int{}
	for k, n := range p.keys[route] {
		out[k] = n
	}
	return out
}

func (p *StripeProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	route := r.Method + " " + r.URL.Path
	p.mu.Lock()
	refuse := p.refuse[route] > 0
	if refuse {
		p.refuse[route]--
	}
	p.mu.Unlock()
	if refuse {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		_, _ = io.WriteString(w, `{"error":{"type":"invalid_request_error","code":"resource_missing","message":"injected refusal: No such customer"}}`)
		return
	}
	body, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	req, err := http.NewRequestWithContext(r.Context(), r.Method, p.upstream+r.URL.RequestURI(), bytes.NewReader(body))
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	req.Header = r.Header.Clone()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	p.mu.Lock()
	if p.keys[route] == nil {
		p.keys[route] = map[string]int{}
	}
	p.keys[route][r.Header.Get("Idempotency-Key")]++
	form, _ := url.ParseQuery(string(body))
	p.requests = append(p.requests, StripeRequest{Route: route, Key: r.Header.Get("Idempotency-Key"), Form: form})
	fail := p.fail[route] > 0
	if fail {
		p.fail[route]--
	}
	p.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	if fail {
		w.WriteHeader(http.StatusInternalServerError)
		_, _ = io.WriteString(w, `{"error":{"type":"api_error","message":"injected fault after the request reached Stripe"}}`)
		return
	}
	w.WriteHeader(resp.StatusCode)
	_, _ = w.Write(out)
}
