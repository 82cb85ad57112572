package harness

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
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
	bin := os.Getenv("SI_STRIPE_MOCK")
	if bin == "" {
		_, file, _, _ := runtime.Caller(0)
		bin = filepath.Join(filepath.Dir(file), "..", "..", "bin", "stripe-mock")
	}
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("stripe-mock not found at %s: run `make tools` (or set SI_STRIPE_MOCK)", bin)
	}
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
