// Package server runs the cloud's roles in one process: the bridge hubs dial
// and the cloud worker; each can run alone so that it scales on its own.
package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/trace"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/worker"

	"github.com/superinstance/mesh/activities"
	"github.com/superinstance/mesh/hub/bridge"
	"github.com/superinstance/mesh/internal/api"
	"github.com/superinstance/mesh/internal/billing"
	"github.com/superinstance/mesh/internal/blob"
	"github.com/superinstance/mesh/internal/mail"
	"github.com/superinstance/mesh/internal/pki"
	"github.com/superinstance/mesh/internal/runner"
	"github.com/superinstance/mesh/internal/store"
	"github.com/superinstance/mesh/internal/synapse"
	"github.com/superinstance/mesh/internal/telemetry"
	"github.com/superinstance/mesh/workers"
	"github.com/superinstance/mesh/workflows"
)

// Roles a server process can run.
const (
	RoleAPI    = "api"
	RoleBridge = "bridge"
	RoleWorker = "worker"
	// RoleCA signs device certificates (renewals) on the ca task queue:
	// the only role that needs the CA's private key.
	RoleCA = "ca"
)

// ParseRoles reads a comma-separated role list.
func ParseRoles(s string) (map[string]bool, error) {
	roles := map[string]bool{}
	for _, r := range strings.Split(s, ",") {
		switch r = strings.TrimSpace(r); r {
		case RoleAPI, RoleBridge, RoleWorker, RoleCA:
			roles[r] = true
		case "":
		default:
			return nil, fmt.Errorf("unknown role %q: use api, bridge, worker and/or ca", r)
		}
	}
	if len(roles) == 0 {
		return nil, errors.New("no role given: use --roles api,bridge,worker")
	}
	return roles, nil
}

// BridgeLimits are the bridge's per-device bounds (see bridge.Options).
type BridgeLimits struct {
	Recheck           time.Duration
	ConnsPerDevice    int
	StreamsPerConn    int
	StreamReadTimeout time.Duration
	// NoTCP turns off the TCP fallback listener.
	NoTCP bool
	// NoEnroll refuses new hubs' enrollment with a one-time token
	// (pki.EnrollALPN); EnrollPerMinute bounds one source's attempts.
	NoEnroll        bool
	EnrollPerMinute int
}

// Options configures a server.
type Options struct {
	Roles map[string]bool
	// BridgeListen is the bridge's UDP address.
	BridgeListen string
	// BridgeHosts are the names and addresses in the bridge's certificate
	// when it is issued from CADir.
	BridgeHosts []string
	// BridgeLimits bounds what one device may hold on the bridge and how
	// often connected devices are checked for revocation and expiry; zero
	// fields take bridge.Options' defaults.
	BridgeLimits BridgeLimits
	// CADir holds the mesh CA; the bridge trusts it and, without
	// ServerCertFile, gets its certificate from it.
	CADir                         string
	ServerCertFile, ServerKeyFile string
	// DeviceCertTTL is how long the certificates the CA role signs for
	// renewing hubs last. Default pki.DefaultDeviceTTL (24h).
	DeviceCertTTL time.Duration
	// MetricsListen serves /metrics, /healthz, /ready, the Stripe webhook and,
	// with the api role, the HTTP API; empty disables it.
	MetricsListen string
	Temporal      client.Client
	Store         *store.Store
	Inference     *activities.Inference
	// Stripe receives flushes; nil leaves balances unflushed.
	Stripe *billing.Stripe
	// FlushEvery is how often the billing sweep flushes small balances. Default 1h.
	FlushEvery time.Duration
	// WebhookSecret verifies Stripe webhooks at POST /v1/stripe/webhook; empty disables the route.
	WebhookSecret string
	Logger        *slog.Logger
	// Blob holds adapters; nil leaves LoRA push and loading off.
	Blob *blob.Store
	// LoRACacheDir is where adapters are put for the inference server to
	// load (a directory it can read). LoRACapacity bounds how many stay loaded.
	LoRACacheDir string
	LoRACapacity int
	// Mailer sends handover emails; PublicURL is the base of the links in
	// them (this server's HTTP address as the recipient reaches it).
	Mailer    *mail.Mailer
	PublicURL string
	// TemporalUIURL is the Temporal Web UI's base URL; the live page links
	// each run there for operators. Empty hides the link.
	TemporalUIURL string
	// Namespace is the Temporal namespace, where the mesh's search
	// attributes are registered. Default "default".
	Namespace string
	// Registry collects the metrics /metrics serves (give the same one to
	// the Temporal client's SDK metrics handler); nil makes one.
	Registry *prometheus.Registry
	// StopTimeout is how long Stop waits for the worker's activities in
	// flight. Default 60s.
	StopTimeout time.Duration
	// Tracer traces inference calls as spans of the activity's trace; nil
	// traces nothing.
	Tracer trace.TracerProvider
}

// Server is the running roles.
type Server struct {
	Bridge     *bridge.Bridge
	MetricsURL string
	stops      []func()
}

// Start starts the roles in o.
func Start(o Options) (s *Server, err error) {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	s = &Server{}
	started := s // s is nil when an error is returned; stop what was started
	defer func() {
		if err != nil {
			started.Stop()
		}
	}()
	if o.Registry == nil {
		o.Registry = prometheus.NewRegistry()
	}
	if o.StopTimeout <= 0 {
		o.StopTimeout = 60 * time.Second
	}
	metrics := bridge.NewMetricsIn(o.Registry)
	own := telemetry.NewMetrics(o.Registry)
	if o.Namespace == "" {
		o.Namespace = "default"
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	err = workers.RegisterSearchAttributes(ctx, o.Temporal, o.Namespace)
	cancel()
	if err != nil {
		return nil, err
	}
	if o.Roles[RoleCA] {
		ca, err := pki.LoadCA(o.CADir)
		if err != nil {
			return nil, fmt.Errorf("the ca role signs with the CA's key: %w", err)
		}
		w := workers.NewCA(o.Temporal, &activities.CA{CA: ca, Store: o.Store, TTL: o.DeviceCertTTL}, worker.Options{WorkerStopTimeout: o.StopTimeout})
		if err := w.Start(); err != nil {
			return nil, fmt.Errorf("ca worker: %w", err)
		}
		s.stops = append(s.stops, w.Stop)
	}
	if o.Roles[RoleWorker] {
		inf := *o.Inference
		inf.Metrics = own
		if o.Tracer != nil {
			inf = *activities.WrapHTTP(&inf, func(hc *http.Client) *http.Client { return telemetry.HTTPClient(o.Tracer, hc) })
		}
		o.Inference = &inf
		deps := workers.CloudDeps(o.Temporal, o.Store, o.Inference)
		deps.Ledger.Metrics = own
		deps.Handovers.Mailer, deps.Handovers.PublicURL, deps.Handovers.Stripe = o.Mailer, o.PublicURL, o.Stripe
		if o.Blob != nil {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			err := o.Blob.EnsureBucket(ctx)
			cancel()
			if err != nil {
				return nil, err
			}
			deps.Adapters = newAdapters(o)
			inf := *o.Inference
			inf.Adapters = deps.Adapters
			deps.Inference = &inf
			deps.Handovers.Blob = o.Blob
		}
		if o.Stripe != nil {
			deps.Billing = &activities.Billing{Store: o.Store, Stripe: o.Stripe, Metrics: own}
			if err := ensureSweep(o.Temporal, o.FlushEvery); err != nil {
				return nil, err
			}
		}
		// Stop waits this long for the activities in flight to finish.
		w := workers.NewCloud(o.Temporal, deps, worker.Options{WorkerStopTimeout: o.StopTimeout})
		if err := w.Start(); err != nil {
			return nil, fmt.Errorf("cloud worker: %w", err)
		}
		// Stop waits for activities in flight.
		s.stops = append(s.stops, w.Stop)
	}
	if o.Roles[RoleBridge] {
		tc, caPEM, err := bridgeTLS(o)
		if err != nil {
			return nil, err
		}
		// New hubs enroll with a one-time token: the bridge relays it to
		// the CA role (EnrollWorkflow) and holds no CA key for it.
		var enroller bridge.Enroller
		if o.BridgeLimits.NoEnroll {
			caPEM = nil
		} else {
			enroller = &bridge.Temporal{Client: o.Temporal}
		}
		// Hub workers reach Temporal only through this proxy, for their own queue.
		px, err := bridge.NewProxy(bridge.ProxyOptions{Upstream: o.Temporal.WorkflowService(), Namespace: o.Namespace, Logger: o.Logger})
		if err != nil {
			return nil, err
		}
		s.stops = append(s.stops, px.Close)
		b, err := bridge.Listen(bridge.Options{
			Addr: o.BridgeListen, TLS: tc, Store: o.Store, Metrics: metrics, Logger: o.Logger,
			Escalator: &bridge.Temporal{Client: o.Temporal, Projects: o.Store}, Prewarmer: &bridge.Temporal{Client: o.Temporal, LoRAs: o.Store},
			Renewer:         &bridge.Temporal{Client: o.Temporal},
			Flush:           flushStarter(o.Temporal, o.Store),
			RecheckInterval: o.BridgeLimits.Recheck, MaxConnsPerDevice: o.BridgeLimits.ConnsPerDevice,
			MaxStreamsPerConn: o.BridgeLimits.StreamsPerConn, StreamReadTimeout: o.BridgeLimits.StreamReadTimeout,
			NoTCP: o.BridgeLimits.NoTCP, Proxy: px,
			Enroller: enroller, EnrollCA: caPEM, EnrollPerMinute: o.BridgeLimits.EnrollPerMinute,
		})
		if err != nil {
			return nil, err
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() {
			defer close(done)
			if err := b.Serve(ctx); err != nil {
				o.Logger.Error("bridge", "error", err)
			}
		}()
		s.Bridge = b
		s.stops = append(s.stops, func() { cancel(); <-done })
	}
	if o.MetricsListen != "" {
		l, err := net.Listen("tcp", o.MetricsListen)
		if err != nil {
			return nil, fmt.Errorf("metrics on %s: %w", o.MetricsListen, err)
		}
		mux := http.NewServeMux()
		metrics.Registry.MustRegister(newConversion(o.Store), newOpenFlushes(o.Store))
		mux.Handle("GET /metrics", metrics.Handler())
		var webhook http.Handler
		if o.WebhookSecret != "" {
			webhook = &billing.Webhook{Secret: o.WebhookSecret, Accounts: o.Store, Payments: o.Store, Logger: o.Logger,
				PaymentSaved: runner.PaymentSaved(o.Temporal)}
		}
		if o.Roles[RoleAPI] {
			as := &api.Server{Store: o.Store, Temporal: o.Temporal, Webhook: webhook, PublicURL: o.PublicURL, Blob: o.Blob,
				TemporalUIURL: o.TemporalUIURL, TemporalNamespace: o.Namespace}
			if o.Inference != nil && o.Inference.LLM != nil {
				as.ServedModels = o.Inference.LLM.BaseModels
			}
			mux.Handle("/", as.Handler())
		} else if webhook != nil {
			mux.Handle("POST /v1/stripe/webhook", webhook)
		}
		mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) })
		mux.HandleFunc("GET /ready", readiness(o.Logger, dependencies(o.Store, o.Temporal, o.Blob)))
		// Stopping ends the event streams (their requests' context is
		// base's), then waits for requests in flight.
		base, endStreams := context.WithCancel(context.Background())
		srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, BaseContext: func(net.Listener) context.Context { return base }}
		go func() { _ = srv.Serve(l) }()
		s.MetricsURL = "http://" + l.Addr().String() + "/metrics"
		s.stops = append(s.stops, func() {
			endStreams()
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if err := srv.Shutdown(ctx); err != nil {
				_ = srv.Close()
			}
		})
	}
	return s, nil
}

// SweepScheduleID is the Temporal schedule that flushes small balances.
const SweepScheduleID = "billing-sweep"

// ensureSweep creates the billing sweep's schedule, or leaves the existing one.
func ensureSweep(c client.Client, every time.Duration) error {
	if every <= 0 {
		every = time.Hour
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := c.ScheduleClient().Create(ctx, client.ScheduleOptions{
		ID:   SweepScheduleID,
		Spec: client.ScheduleSpec{Intervals: []client.ScheduleIntervalSpec{{Every: every}}},
		Action: &client.ScheduleWorkflowAction{ID: "billing-sweep-run", Workflow: workflows.SweepWorkflow,
			TaskQueue: workers.CloudQueue},
	})
	if errors.Is(err, temporal.ErrScheduleAlreadyRunning) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("billing sweep schedule: %w", err)
	}
	return nil
}

// bridgeTLS is the bridge's TLS configuration and the mesh CA's certificate.
func bridgeTLS(o Options) (*tls.Config, []byte, error) {
	var pair tls.Certificate
	var caPEM []byte
	if o.ServerCertFile != "" {
		// Given its certificate, a bridge needs only the CA's certificate,
		// never its key.
		var err error
		if caPEM, err = os.ReadFile(filepath.Join(o.CADir, pki.CACertFile)); err != nil {
			return nil, nil, fmt.Errorf("the mesh CA's certificate (si ca init writes it): %w", err)
		}
		if pair, err = tls.LoadX509KeyPair(o.ServerCertFile, o.ServerKeyFile); err != nil {
			return nil, nil, fmt.Errorf("bridge certificate: %w", err)
		}
	} else {
		ca, err := pki.LoadCA(o.CADir)
		if err != nil {
			return nil, nil, fmt.Errorf("%w (or give the bridge --server-cert and --server-key, and it needs no CA key)", err)
		}
		caPEM = ca.CertPEM
		hosts := o.BridgeHosts
		if len(hosts) == 0 {
			h, _ := os.Hostname()
			hosts = []string{h, "localhost", "127.0.0.1", "::1"}
		}
		is, err := ca.IssueServer(hosts, 90*24*time.Hour, time.Now())
		if err != nil {
			return nil, nil, err
		}
		if pair, err = tls.X509KeyPair(is.CertPEM, is.KeyPEM); err != nil {
			return nil, nil, err
		}
	}
	st := o.Store
	tc, err := pki.ServerTLS(caPEM, pair, func(ctx context.Context, id pki.Identity, serial string) error {
		return st.CheckCert(ctx, id.DeviceID, id.Account, serial)
	})
	return tc, caPEM, err
}

// Stop stops the roles: the bridge first (hubs reconnect elsewhere), then the
// worker once its activities in flight finish.
func (s *Server) Stop() {
	for i := len(s.stops) - 1; i >= 0; i-- {
		s.stops[i]()
	}
	s.stops = nil
}

// flushStarter starts an account's flush as the ledger activity does; an
// account with nothing to flush, no Stripe customer or no usage
// subscription is not an error (nothing is billable yet).
func flushStarter(c client.Client, st *store.Store) func(context.Context, string) error {
	f := workers.Flushes(c, st)
	return func(ctx context.Context, account string) error {
		_, err := f.Start(ctx, account)
		if errors.Is(err, store.ErrNothingToFlush) || errors.Is(err, store.ErrNoStripeCustomer) || errors.Is(err, store.ErrNoUsageSubscription) {
			return nil
		}
		return err
	}
}

// newAdapters is the worker's adapter registry and cache, over the backend
// Logos asks with an adapter: its own (--logos-llm-base-url) when it has
// one, else the shared one. Loads and base-model listings go there.
func newAdapters(o Options) *activities.Adapters {
	llmc := o.Inference.LLM
	if c := o.Inference.Backends[synapse.Logos].LLM; c != nil {
		llmc = c
	}
	return activities.NewAdapters(o.Store, o.Blob, llmc, o.LoRACacheDir, o.LoRACapacity, llmc.BaseModels)
}
