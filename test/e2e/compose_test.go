package e2e

import (
	"context"
	"crypto/tls"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/superinstance/mesh/activities"
	"github.com/superinstance/mesh/hub/bridge"
	"github.com/superinstance/mesh/internal/pki"
	"github.com/superinstance/mesh/internal/store"
	"github.com/superinstance/mesh/test/harness"
)

// composeService returns the command of deploy/compose.yaml's service name.
func composeService(t *testing.T, name string) []string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "deploy", "compose.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var f struct {
		Services map[string]struct {
			Command []string `yaml:"command"`
		} `yaml:"services"`
	}
	if err := yaml.Unmarshal(b, &f); err != nil {
		t.Fatal(err)
	}
	s, ok := f.Services[name]
	if !ok || len(s.Command) == 0 {
		t.Fatalf("compose.yaml has no %s service with a command", name)
	}
	return s.Command
}

// composeEnroll returns the shell script of deploy/compose.yaml's enroll
// service and its environment.
func composeEnroll(t *testing.T) (script string, env map[string]string) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "deploy", "compose.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var f struct {
		Services map[string]struct {
			Entrypoint  []string          `yaml:"entrypoint"`
			Command     []string          `yaml:"command"`
			Environment map[string]string `yaml:"environment"`
		} `yaml:"services"`
	}
	if err := yaml.Unmarshal(b, &f); err != nil {
		t.Fatal(err)
	}
	s, ok := f.Services["enroll"]
	if !ok || len(s.Command) != 1 || strings.Join(s.Entrypoint, " ") != "/bin/sh -c" {
		t.Fatalf("compose.yaml's enroll service is not one /bin/sh -c script: %+v", s)
	}
	return s.Command[0], s.Environment
}

// The compose file's enrollment, run as written (its volumes in temporary
// directories, its database the harness's): the operator's step succeeds,
// run again it succeeds and changes nothing, nothing hides a failure; the
// hub-enroll service then redeems its one-time token at a bridge of that
// CA (twice: the second run keeps the certificate), and the device it
// enrolls belongs to an account that exists, so the hub's escalations are
// not refused as "unknown account".
func TestComposeEnrollmentRunsAsWritten(t *testing.T) {
	si, _ := binaries(t)
	script, env := composeEnroll(t)
	if strings.Contains(script, "|| true") {
		t.Fatalf("the enroll script hides failures with || true:\n%s", script)
	}
	dir := t.TempDir()
	ca, device, bin := filepath.Join(dir, "ca"), filepath.Join(dir, "device"), filepath.Join(dir, "bin")
	for _, d := range []string{ca, device, bin} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink(si, filepath.Join(bin, "si")); err != nil {
		t.Fatal(err)
	}
	// The volumes' mount points, where a path starts.
	script = regexp.MustCompile(`(^|\s)/(ca|device)\b`).ReplaceAllStringFunc(script, func(m string) string {
		return strings.Replace(strings.Replace(m, "/ca", ca, 1), "/device", device, 1)
	})
	dbURL := harness.DatabaseURL(t)
	runEnv := append(cleanEnv(), "PATH="+bin+string(os.PathListSeparator)+os.Getenv("PATH"), "HOME="+dir, "SI_DATABASE_URL="+dbURL)
	for k := range env {
		if k != "SI_DATABASE_URL" {
			t.Fatalf("the enroll service sets %s, which this test does not model", k)
		}
	}
	for i := range 2 {
		if out, err := run(t, "/bin/sh", runEnv, "", "-c", script); err != nil {
			t.Fatalf("enroll run %d: %v\n%s", i+1, err, out)
		}
	}
	st, err := store.Open(context.Background(), dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()

	// The hub-enroll service, as written, against a bridge with the CA the
	// script made (its server certificate names "bridge", as compose's).
	hubCmd := composeService(t, "hub-enroll")
	caKeys, err := pki.LoadCA(ca)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := caKeys.IssueServer([]string{"bridge"}, time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	pair, err := tls.X509KeyPair(srv.CertPEM, srv.KeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	p := &harness.PKI{CA: caKeys, Server: pair}
	m := &harness.Mesh{Client: harness.Client(t), Store: st, DatabaseURL: dbURL}
	b := harness.StartBridge(t, m, p, "127.0.0.1:0", func(o *bridge.Options) {
		o.Enroller = &activities.CA{CA: caKeys, Store: st, TTL: time.Hour}
		o.EnrollCA = caKeys.CertPEM
	})
	for i, a := range hubCmd {
		a = strings.ReplaceAll(a, "bridge:7443", b.Addr().String())
		if strings.HasPrefix(a, "/device") {
			a = device + strings.TrimPrefix(a, "/device")
		}
		hubCmd[i] = a
	}
	hubEnv := append(cleanEnv(), "HOME="+t.TempDir())
	for i := range 2 {
		if out, err := run(t, si, hubEnv, "", hubCmd...); err != nil {
			t.Fatalf("hub-enroll run %d (si %s): %v\n%s", i+1, strings.Join(hubCmd, " "), err, out)
		}
	}
	h, err := st.DeviceAccount(context.Background(), "compose-hub")
	if err != nil {
		t.Fatalf("the enrolled device: %v", err)
	}
	if _, err := st.AccountByID(context.Background(), h); err != nil {
		t.Fatalf("the device's account %s: %v", h, err)
	}
	if _, err := os.Stat(filepath.Join(device, "cert.pem")); err != nil {
		t.Fatal(err)
	}
}
