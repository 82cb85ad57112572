package config

import (
	"flag"
	"testing"
	"time"

	"github.com/superinstance/mesh/activities"
	"github.com/superinstance/mesh/internal/llm"
	"github.com/superinstance/mesh/internal/synapse"
)

// The README's example: a 7B model for the agents on one server, a 72B
// one for the Arbiter on another with its own key, set by flags and SI_
// variables.
func TestBackendPerAgent(t *testing.T) {
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	var l LLM
	l.Register(fs, "")
	t.Setenv("SI_ARBITER_LLM_BASE_URL", "http://big:8000/v1")
	t.Setenv("SI_ARBITER_LLM_API_KEY", "big-key")
	t.Setenv("SI_ETHOS_MAX_TOKENS", "256")
	if err := fs.Parse([]string{"--llm-base-url", "http://small:8000/v1", "--llm-api-key", "small-key",
		"--model-arbiter", "Qwen/Qwen2.5-72B-Instruct", "--logos-llm-base-url", "http://logos:8000/v1"}); err != nil {
		t.Fatal(err)
	}
	if err := ApplyEnv(fs); err != nil {
		t.Fatal(err)
	}
	inf := l.Inference()
	if inf.LLM.BaseURL != "http://small:8000/v1" || inf.LLM.APIKey != "small-key" || inf.Models.Arbiter != "Qwen/Qwen2.5-72B-Instruct" {
		t.Fatalf("shared %+v models %+v", inf.LLM, inf.Models)
	}
	arb := inf.Backends[synapse.Arbiter]
	if arb.LLM.BaseURL != "http://big:8000/v1" || arb.LLM.APIKey != "big-key" {
		t.Fatalf("arbiter %+v", arb.LLM)
	}
	// Another server never gets the shared server's key.
	if lg := inf.Backends[synapse.Logos].LLM; lg.BaseURL != "http://logos:8000/v1" || lg.APIKey != "" {
		t.Fatalf("logos %s key %q", lg.BaseURL, lg.APIKey)
	}
	// A bound alone keeps the shared client, so refusals are shared with it.
	if e := inf.Backends[synapse.Ethos]; e.LLM != inf.LLM || e.MaxTokens != 256 {
		t.Fatalf("ethos %+v", e)
	}
	if _, ok := inf.Backends[synapse.Pathos]; ok {
		t.Fatal("pathos has no flags of its own and needs no backend entry")
	}
	if len(activities.Clients(inf)) != 3 {
		t.Fatalf("%d distinct clients, want 3", len(activities.Clients(inf)))
	}
	for _, role := range Roles {
		for _, f := range []string{"-llm-base-url", "-llm-api-key", "-max-tokens"} {
			if fl := fs.Lookup(string(role) + f); fl == nil || fl.Usage == "" {
				t.Errorf("flag --%s%s has no help", role, f)
			}
		}
	}
}

// The stall bound reaches every backend's client: 30s by default, set by
// --llm-stall-timeout or SI_LLM_STALL_TIMEOUT, 0 for none.
func TestStallTimeoutFlag(t *testing.T) {
	for _, c := range []struct {
		env  string
		want time.Duration
	}{{"", llm.DefaultStallTimeout}, {"5s", 5 * time.Second}, {"0", -1}} {
		fs := flag.NewFlagSet("x", flag.ContinueOnError)
		var l LLM
		l.Register(fs, "")
		if c.env != "" {
			t.Setenv("SI_LLM_STALL_TIMEOUT", c.env)
		}
		if err := fs.Parse([]string{"--logos-llm-base-url", "http://logos:8000/v1"}); err != nil {
			t.Fatal(err)
		}
		if err := ApplyEnv(fs); err != nil {
			t.Fatal(err)
		}
		inf := l.Inference()
		if inf.LLM.StallTimeout != c.want || inf.Backends[synapse.Logos].LLM.StallTimeout != c.want {
			t.Fatalf("SI_LLM_STALL_TIMEOUT=%q: shared %v, logos %v, want %v", c.env, inf.LLM.StallTimeout, inf.Backends[synapse.Logos].LLM.StallTimeout, c.want)
		}
	}
}
