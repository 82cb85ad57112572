// Package config turns flags into configuration: every flag also reads an
// SI_ environment variable (--database-url reads SI_DATABASE_URL), and the
// groups of flags that several commands share live here.
package config

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/pflag"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/interceptor"
	sdklog "go.temporal.io/sdk/log"

	"github.com/superinstance/mesh/activities"
	"github.com/superinstance/mesh/internal/llm"
	"github.com/superinstance/mesh/internal/simulator"
	"github.com/superinstance/mesh/internal/synapse"
)

// EnvName is the environment variable that sets a flag: SI_ and the flag's
// name in upper case with '-' as '_'.
func EnvName(flagName string) string {
	return "SI_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// ApplyEnv sets every flag that the command line left unset from its
// environment variable. Command-line values win.
func ApplyEnv(fs *flag.FlagSet) error {
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	var errs []error
	fs.VisitAll(func(f *flag.Flag) {
		if set[f.Name] {
			return
		}
		if v, ok := os.LookupEnv(EnvName(f.Name)); ok {
			if err := fs.Set(f.Name, v); err != nil {
				errs = append(errs, fmt.Errorf("%s=%q: %w", EnvName(f.Name), v, err))
			}
		}
	})
	return errors.Join(errs...)
}

// HomeDir is ~/.si, where si keeps its local state.
func HomeDir() string {
	if h, err := os.UserHomeDir(); err == nil {
		return filepath.Join(h, ".si")
	}
	return ".si"
}

// Temporal holds the flags that reach a Temporal frontend; they mirror the
// temporal CLI's.
type Temporal struct {
	Address       string
	Namespace     string
	APIKey        string
	TLS           bool
	TLSCertPath   string
	TLSKeyPath    string
	TLSCAPath     string
	TLSServerName string

	// Set by the program, not by flags: client interceptors (tracing), the
	// SDK's metrics handler, and the logger for the SDK's own lines (which
	// carry the workflow id). Nil keeps the defaults.
	Interceptors   []interceptor.ClientInterceptor
	MetricsHandler client.MetricsHandler
	Logger         *slog.Logger
}

// Register adds the flags to fs, with defaultAddress as --temporal-address's default.
func (t *Temporal) Register(fs *flag.FlagSet, defaultAddress, addressUsage string) {
	fs.StringVar(&t.Address, "temporal-address", defaultAddress, addressUsage)
	fs.StringVar(&t.Namespace, "namespace", "default", "Temporal namespace")
	fs.StringVar(&t.APIKey, "api-key", "", "API key for Temporal Cloud (implies --tls)")
	fs.BoolVar(&t.TLS, "tls", false, "connect to Temporal over TLS")
	fs.StringVar(&t.TLSCertPath, "tls-cert-path", "", "client certificate for mutual TLS with Temporal")
	fs.StringVar(&t.TLSKeyPath, "tls-key-path", "", "client key for mutual TLS with Temporal")
	fs.StringVar(&t.TLSCAPath, "tls-ca-path", "", "CA bundle that signs the Temporal server's certificate")
	fs.StringVar(&t.TLSServerName, "tls-server-name", "", "server name to verify in Temporal's certificate")
}

// Options builds SDK client options. Logs below warn are dropped.
func (t *Temporal) Options() (client.Options, error) {
	logger := t.Logger
	if logger == nil {
		logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	o := client.Options{
		HostPort:       t.Address,
		Namespace:      t.Namespace,
		Logger:         sdklog.NewStructuredLogger(logger),
		Interceptors:   t.Interceptors,
		MetricsHandler: t.MetricsHandler,
	}
	if t.APIKey != "" {
		o.Credentials = client.NewAPIKeyStaticCredentials(t.APIKey)
	}
	if t.TLS || t.APIKey != "" || t.TLSCertPath != "" || t.TLSCAPath != "" {
		tc := &tls.Config{ServerName: t.TLSServerName, MinVersion: tls.VersionTLS12}
		if t.TLSCertPath != "" || t.TLSKeyPath != "" {
			cert, err := tls.LoadX509KeyPair(t.TLSCertPath, t.TLSKeyPath)
			if err != nil {
				return o, fmt.Errorf("temporal client certificate: %w", err)
			}
			tc.Certificates = []tls.Certificate{cert}
		}
		if t.TLSCAPath != "" {
			pem, err := os.ReadFile(t.TLSCAPath)
			if err != nil {
				return o, fmt.Errorf("temporal CA: %w", err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return o, fmt.Errorf("temporal CA %s holds no PEM certificate", t.TLSCAPath)
			}
			tc.RootCAs = pool
		}
		o.ConnectionOptions.TLS = tc
	}
	return o, nil
}

// Dial connects to Temporal, failing within timeout with an error that says
// what to do when the server is not there.
func (t *Temporal) Dial(timeout time.Duration) (client.Client, error) {
	o, err := t.Options()
	if err != nil {
		return nil, err
	}
	done := make(chan struct{})
	var c client.Client
	go func() {
		c, err = client.Dial(o)
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(timeout):
		return nil, fmt.Errorf("cannot reach Temporal at %s within %s: start `si dev`, or pass --temporal-address", t.Address, timeout)
	}
	if err != nil {
		return nil, fmt.Errorf("cannot reach Temporal at %s: %v: start `si dev`, or pass --temporal-address", t.Address, firstLine(err.Error()))
	}
	return c, nil
}

// LLM holds the flags that reach the inference backend: a shared one, and
// optionally a server, key and completion bound of each agent's own.
type LLM struct {
	BaseURL                       string
	APIKey                        string
	Pathos, Logos, Ethos, Arbiter string
	// Roles holds each agent's own backend flags; an empty field takes the
	// shared value.
	Roles map[synapse.Role]*RoleLLM
	// NoStream asks every backend for whole responses instead of streams.
	NoStream bool
	// StallTimeout cuts a streamed response that sends nothing for longer;
	// 0 is no bound (the flag defaults to llm.DefaultStallTimeout).
	StallTimeout time.Duration
}

// RoleLLM is one agent's backend flags.
type RoleLLM struct {
	BaseURL, APIKey string
	MaxTokens       int
}

// Roles are the agents, in the order their flags are listed.
var Roles = []synapse.Role{synapse.Pathos, synapse.Logos, synapse.Ethos, synapse.Arbiter}

// Register adds the flags to fs. defaultURL is the base URL when none is given.
func (l *LLM) Register(fs *flag.FlagSet, defaultURL string) {
	fs.StringVar(&l.BaseURL, "llm-base-url", defaultURL, "OpenAI-compatible base URL (vLLM, Ollama, llama.cpp, a hosted API), ending in /v1")
	fs.StringVar(&l.APIKey, "llm-api-key", "", "bearer token for the inference backend")
	fs.StringVar(&l.Pathos, "model-pathos", simulator.ModelSmall, "model for Pathos (intent)")
	fs.StringVar(&l.Logos, "model-logos", simulator.ModelSmall, "model for Logos (solution)")
	fs.StringVar(&l.Ethos, "model-ethos", simulator.ModelSmall, "model for Ethos (verification)")
	fs.StringVar(&l.Arbiter, "model-arbiter", simulator.ModelLarge, "model for the Arbiter (a stronger one)")
	fs.BoolVar(&l.NoStream, "llm-no-stream", false, "ask the inference backends for whole responses instead of streams (a backend that refuses stream is detected without it)")
	fs.DurationVar(&l.StallTimeout, "llm-stall-timeout", llm.DefaultStallTimeout,
		"cut a streamed completion whose server sends nothing for this long, with a retryable error, instead of waiting for the step's timeout (0: no bound)")
	l.Roles = map[synapse.Role]*RoleLLM{}
	for _, role := range Roles {
		r := &RoleLLM{}
		l.Roles[role] = r
		fs.StringVar(&r.BaseURL, string(role)+"-llm-base-url", "", fmt.Sprintf("OpenAI-compatible base URL for %s alone (default --llm-base-url)", role))
		fs.StringVar(&r.APIKey, string(role)+"-llm-api-key", "", fmt.Sprintf("bearer token for %s's backend (default --llm-api-key when %s has no base URL of its own)", role, role))
		fs.IntVar(&r.MaxTokens, string(role)+"-max-tokens", 0, fmt.Sprintf("cap on %s's max_tokens per call, below the run's --max-tokens (0: the run's)", role))
	}
}

// Inference builds the inference activities: one client per distinct
// backend (base URL and key), so what a backend refuses is remembered
// across the agents it serves.
func (l *LLM) Inference() *activities.Inference {
	clients := map[[2]string]*llm.Client{}
	client := func(url, key string) *llm.Client {
		k := [2]string{url, key}
		if c, ok := clients[k]; ok {
			return c
		}
		c := &llm.Client{BaseURL: url, APIKey: key, StallTimeout: l.StallTimeout}
		if l.StallTimeout <= 0 {
			c.StallTimeout = -1 // the flag's 0 is no bound; the client's is the default
		}
		clients[k] = c
		return c
	}
	inf := &activities.Inference{
		LLM:      client(l.BaseURL, l.APIKey),
		Models:   activities.Models{Pathos: l.Pathos, Logos: l.Logos, Ethos: l.Ethos, Arbiter: l.Arbiter},
		NoStream: l.NoStream,
	}
	for role, r := range l.Roles {
		if r == nil || (r.BaseURL == "" && r.APIKey == "" && r.MaxTokens <= 0) {
			continue
		}
		url, key := l.BaseURL, l.APIKey
		if r.BaseURL != "" {
			// Another server does not get the shared server's key.
			url, key = r.BaseURL, ""
		}
		if r.APIKey != "" {
			key = r.APIKey
		}
		if inf.Backends == nil {
			inf.Backends = map[synapse.Role]activities.Backend{}
		}
		inf.Backends[role] = activities.Backend{LLM: client(url, key), MaxTokens: max(r.MaxTokens, 0)}
	}
	return inf
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	return s
}

// ApplyEnvFlags is ApplyEnv for the command line's parsed flags: every flag
// the command line left unset takes its environment variable's value.
func ApplyEnvFlags(fs *pflag.FlagSet) error {
	var errs []error
	fs.VisitAll(func(f *pflag.Flag) {
		if f.Changed || f.Name == "help" {
			return
		}
		if v, ok := os.LookupEnv(EnvName(f.Name)); ok {
			if err := fs.Set(f.Name, v); err != nil {
				errs = append(errs, fmt.Errorf("%s=%q: %w", EnvName(f.Name), v, err))
			}
		}
	})
	return errors.Join(errs...)
}
