package config

import (
	"flag"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"
)

func TestApplyEnv(t *testing.T) {
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	addr := fs.String("temporal-address", "127.0.0.1:7233", "")
	url := fs.String("database-url", "", "")
	rounds := fs.Int("max-rounds", 3, "")
	t.Setenv("SI_TEMPORAL_ADDRESS", "from-env:1")
	t.Setenv("SI_DATABASE_URL", "postgres://env")
	t.Setenv("SI_MAX_ROUNDS", "5")
	if err := fs.Parse([]string{"--database-url", "postgres://flag"}); err != nil {
		t.Fatal(err)
	}
	if err := ApplyEnv(fs); err != nil {
		t.Fatal(err)
	}
	if *addr != "from-env:1" || *url != "postgres://flag" || *rounds != 5 {
		t.Fatalf("addr %s url %s rounds %d: env fills unset flags, flags win", *addr, *url, *rounds)
	}
}

func TestApplyEnvNamesBadValue(t *testing.T) {
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	fs.Int("max-rounds", 3, "")
	t.Setenv("SI_MAX_ROUNDS", "many")
	_ = fs.Parse(nil)
	if err := ApplyEnv(fs); err == nil || !strings.Contains(err.Error(), `SI_MAX_ROUNDS="many"`) {
		t.Fatalf("error %v should name the variable and value", err)
	}
}

// The command line's parsed flags (pflag, under cobra) follow the same rule.
func TestApplyEnvFlags(t *testing.T) {
	gfs := flag.NewFlagSet("x", flag.ContinueOnError)
	addr := gfs.String("temporal-address", "127.0.0.1:7233", "")
	url := gfs.String("database-url", "", "")
	rounds := gfs.Int("max-rounds", 3, "")
	fs := pflag.NewFlagSet("x", pflag.ContinueOnError)
	fs.AddGoFlagSet(gfs)
	t.Setenv("SI_TEMPORAL_ADDRESS", "from-env:1")
	t.Setenv("SI_DATABASE_URL", "postgres://env")
	t.Setenv("SI_MAX_ROUNDS", "5")
	if err := fs.Parse([]string{"--database-url", "postgres://flag"}); err != nil {
		t.Fatal(err)
	}
	if err := ApplyEnvFlags(fs); err != nil {
		t.Fatal(err)
	}
	if *addr != "from-env:1" || *url != "postgres://flag" || *rounds != 5 {
		t.Fatalf("addr %s url %s rounds %d: env fills unset flags, flags win", *addr, *url, *rounds)
	}
	t.Setenv("SI_MAX_ROUNDS", "many")
	fs = pflag.NewFlagSet("x", pflag.ContinueOnError)
	fs.Int("max-rounds", 3, "")
	_ = fs.Parse(nil)
	if err := ApplyEnvFlags(fs); err == nil || !strings.Contains(err.Error(), `SI_MAX_ROUNDS="many"`) {
		t.Fatalf("error %v should name the variable and value", err)
	}
}

func TestDialFailsClearly(t *testing.T) {
	tc := Temporal{Address: "127.0.0.1:1", Namespace: "default"}
	_, err := tc.Dial(3 * time.Second)
	if err == nil || !strings.Contains(err.Error(), "cannot reach Temporal at 127.0.0.1:1") || strings.Contains(err.Error(), "\n") {
		t.Fatalf("error %q", err)
	}
}

func TestTLSOptions(t *testing.T) {
	tc := Temporal{Address: "x:7233", APIKey: "k"}
	o, err := tc.Options()
	if err != nil || o.ConnectionOptions.TLS == nil || o.Credentials == nil {
		t.Fatalf("an API key implies TLS: %+v %v", o.ConnectionOptions, err)
	}
	tc = Temporal{Address: "x:7233", TLSCAPath: "/nonexistent/ca.pem"}
	if _, err := tc.Options(); err == nil || !strings.Contains(err.Error(), "temporal CA") {
		t.Fatalf("missing CA: %v", err)
	}
}
