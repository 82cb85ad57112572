package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"go/parser"
	"go/token"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/superinstance/mesh/internal/client"
)

// customer lists the commands a customer runs; they reach the mesh through
// the API alone.
var customer = [][]string{{"ask"}, {"eval"}, {"push"}, {"lora", "ls"}, {"lora", "show"}, {"lora", "rm"}, {"balance"}, {"usage"},
	{"login"}, {"logout"}, {"whoami"}, {"token", "ls"}, {"token", "revoke"}, {"invite"}, {"invite", "ls"}, {"invite", "revoke"},
	{"join"}, {"handover", "start"}, {"handover", "ls"}, {"handover", "accept"}, {"handover", "decline"}, {"handover", "cancel"}}

func find(t *testing.T, path []string) *Command {
	t.Helper()
	c := Root()
	for _, n := range path {
		if c = c.find(n); c == nil {
			t.Fatalf("no command si %s", strings.Join(path, " "))
		}
	}
	return c
}

// A customer command takes no operator credential and no account: the
// account comes from the token.
func TestCustomerCommandsTakeNoOperatorSettings(t *testing.T) {
	forbidden := []string{"temporal", "database", "dev-dir", "s3-", "stripe", "account", "tls-", "namespace"}
	for _, path := range customer {
		c := find(t, path)
		if c.Operator {
			t.Errorf("si %s is marked an operator command", strings.Join(path, " "))
		}
		fs := flag.NewFlagSet("x", flag.ContinueOnError)
		if c.Flags != nil {
			c.Flags(fs)
		}
		fs.VisitAll(func(f *flag.Flag) {
			for _, bad := range forbidden {
				if strings.Contains(f.Name, bad) {
					t.Errorf("si %s has --%s", strings.Join(path, " "), f.Name)
				}
			}
		})
	}
}

// The files that hold customer commands import neither the store, the
// runner, the object store nor a Temporal client.
func TestCustomerCommandFilesImportOnlyTheClient(t *testing.T) {
	fset := token.NewFileSet()
	for _, file := range []string{"ask.go", "eval.go", "lora.go", "login.go", "invite.go", "handover.go"} {
		f, err := parser.ParseFile(fset, file, nil, parser.ImportsOnly)
		if err != nil {
			t.Fatal(err)
		}
		for _, imp := range f.Imports {
			p, _ := strconv.Unquote(imp.Path.Value)
			for _, bad := range []string{"/internal/store", "/internal/runner", "/internal/blob", "go.temporal.io/", "/activities", "aws-sdk-go"} {
				if strings.Contains(p, bad) {
					t.Errorf("%s imports %s", file, p)
				}
			}
		}
	}
}

// Finding stuck handovers reads Temporal directly: it is the operator's.
func TestHandoverStuckIsAnOperatorCommand(t *testing.T) {
	if !find(t, []string{"handover", "stuck"}).Operator {
		t.Fatal("si handover stuck is not marked an operator command")
	}
}

func TestLoginStoresTheTokenForItsAccount(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("XDG_CONFIG_HOME", dir)
	t.Setenv("HOME", dir)
	t.Setenv("SI_TOKEN", "")
	t.Setenv("SI_API_URL", "")
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1/me" {
			http.NotFound(w, r)
			return
		}
		if r.Header.Get("Authorization") != "Bearer si_good" {
			w.WriteHeader(401)
			_, _ = w.Write([]byte(`{"error":{"code":"unauthenticated","message":"unknown or revoked API token"}}`))
			return
		}
		_, _ = w.Write([]byte(`{"kind":"account","account":"alice"}`))
	}))
	defer api.Close()
	run := func(stdin string, args ...string) (string, error) {
		var out, errb bytes.Buffer
		err := Execute(context.Background(), &Env{Stdin: strings.NewReader(stdin), Stdout: &out, Stderr: &errb}, args)
		return out.String() + errb.String(), err
	}

	// A bad token is refused and nothing is stored.
	if out, err := run("si_bad\n", "login", "--with-token", "--api-url", api.URL); err == nil || !strings.Contains(err.Error(), "unknown or revoked") {
		t.Fatalf("login with a bad token: %v\n%s", err, out)
	}
	path := filepath.Join(dir, "si", "credentials.json")
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Fatalf("a refused token was stored: %v", err)
	}

	out, err := run("si_good\n", "login", "--with-token", "--api-url", api.URL)
	if err != nil || !strings.Contains(out, "as account alice") {
		t.Fatalf("login: %v\n%s", err, out)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("credentials %s: %v, mode %v; want 0600", path, err, fi.Mode())
	}
	var cred client.Credentials
	b, _ := os.ReadFile(path)
	if err := json.Unmarshal(b, &cred); err != nil || cred.Token != "si_good" || cred.APIURL != api.URL || cred.Account != "alice" {
		t.Fatalf("stored %s: %v", b, err)
	}
	if out, err := run("", "whoami"); err != nil || !strings.Contains(out, "account alice at "+api.URL) {
		t.Fatalf("whoami after login: %v\n%s", err, out)
	}

	// SI_TOKEN wins over the stored token.
	t.Setenv("SI_TOKEN", "si_bad")
	if _, err := run("", "whoami"); err == nil {
		t.Fatal("SI_TOKEN was not used")
	}
	t.Setenv("SI_TOKEN", "")

	if out, err := run("", "logout"); err != nil || !strings.Contains(out, "logged out") {
		t.Fatalf("logout: %v\n%s", err, out)
	}
	if _, err := run("", "whoami"); err == nil || !strings.Contains(err.Error(), "si login") {
		t.Fatalf("whoami after logout: %v", err)
	}
}
