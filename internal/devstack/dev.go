package devstack

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/superinstance/mesh/hub/agent"
	"github.com/superinstance/mesh/hub/hubcmd"
	"github.com/superinstance/mesh/hub/node"
	"github.com/superinstance/mesh/hub/vitals"
	"github.com/superinstance/mesh/internal/billing"
	"github.com/superinstance/mesh/internal/blob"
	"github.com/superinstance/mesh/internal/client"
	"github.com/superinstance/mesh/internal/config"
	"github.com/superinstance/mesh/internal/mail"
	"github.com/superinstance/mesh/internal/pgcluster"
	"github.com/superinstance/mesh/internal/pki"
	"github.com/superinstance/mesh/internal/server"
	"github.com/superinstance/mesh/internal/simulator"
	"github.com/superinstance/mesh/internal/store"
	"github.com/superinstance/mesh/internal/telemetry"
	"github.com/superinstance/mesh/workers"
	"github.com/superinstance/mesh/workflows"
)

// DevOptions configures `si dev`. Empty fields take the embedded defaults.
type DevOptions struct {
	DataDir string
	Fresh   bool

	// Temporal is a real frontend to use instead of the embedded server.
	Temporal        config.Temporal
	TemporalListen  string // embedded frontend, default 127.0.0.1:7233
	UIListen        string // embedded Web UI, default 127.0.0.1:8233; "off" disables it
	DatabaseURL     string // a real PostgreSQL instead of the private cluster
	PostgresPort    int    // the private cluster's port
	LLM             config.LLM
	SimulatorListen string // default 127.0.0.1:8300
	Simulator       simulator.Options
	HubID           string // the local hub's device id, default "local"
	Account         string // the local hub's account, default "dev"
	BridgeListen    string // the bridge's UDP address, default 127.0.0.1:7443
	HubAPIListen    string // the local hub's API, default 127.0.0.1:7450
	MetricsListen   string // /metrics, /healthz, /ready; default 127.0.0.1:9464
	// Stripe is a real Stripe (or stripe-mock) to flush to; empty runs
	// stripe-mock when it is installed, else flushes are off.
	Stripe        config.Stripe
	FlushEvery    time.Duration
	WebhookSecret string // verifies Stripe webhooks; default whsec_sidev
	// Blob is an object store to keep adapters in; without a bucket, si dev
	// runs MinIO (when installed) on MinIOListen.
	Blob         config.Blob
	MinIOListen  string
	LoRACapacity int
	// Mail is an SMTP server for handover emails; without one si dev runs
	// Mailpit (when installed) with SMTP on SMTPListen and its web
	// interface on MailpitListen.
	Mail          config.Mail
	SMTPListen    string
	MailpitListen string
	// Tracing sends traces to an OpenTelemetry collector when set.
	Tracing telemetry.Tracing
}

// Dev is a running development mesh.
type Dev struct {
	State    config.DevState
	stops    []func()
	stateDir string
}

// StartDev starts every part of the mesh that DevOptions does not point
// elsewhere, printing progress to out. On error everything already started
// is stopped again.
func StartDev(ctx context.Context, o DevOptions, out io.Writer) (d *Dev, err error) {
	if o.DataDir == "" {
		o.DataDir = config.DevDir()
	}
	if o.TemporalListen == "" {
		o.TemporalListen = "127.0.0.1:7233"
	}
	if o.UIListen == "" {
		o.UIListen = "127.0.0.1:8233"
	}
	if o.SimulatorListen == "" {
		o.SimulatorListen = "127.0.0.1:8300"
	}
	if o.HubID == "" {
		o.HubID = "local"
	}
	if o.Account == "" {
		o.Account = "dev"
	}
	if o.WebhookSecret == "" {
		o.WebhookSecret = "whsec_sidev"
	}
	if o.BridgeListen == "" {
		o.BridgeListen = "127.0.0.1:7443"
	}
	if o.HubAPIListen == "" {
		o.HubAPIListen = "127.0.0.1:7450"
	}
	if o.MetricsListen == "" {
		o.MetricsListen = "127.0.0.1:9464"
	}
	if o.SMTPListen == "" {
		o.SMTPListen = "127.0.0.1:1025"
	}
	if o.MailpitListen == "" {
		o.MailpitListen = "127.0.0.1:8025"
	}
	d = &Dev{stateDir: o.DataDir}
	started := d // d is nil when an error is returned; stop what was started
	defer func() {
		if err != nil {
			started.Stop()
		}
	}()
	pgDir := filepath.Join(o.DataDir, "postgres")
	if o.Fresh {
		_ = pgcluster.StopStale(ctx, pgDir)
		for _, dir := range []string{pgcluster.DataDirFor(pgDir), o.DataDir} {
			if err := os.RemoveAll(dir); err != nil {
				return nil, fmt.Errorf("--fresh: %w", err)
			}
		}
	}
	if err := os.MkdirAll(o.DataDir, 0o755); err != nil {
		return nil, err
	}
	d.State.PID = os.Getpid()
	d.State.HubID = o.HubID

	// Inference: the simulator unless a real backend is given.
	if o.LLM.BaseURL == "" {
		l, err := net.Listen("tcp", o.SimulatorListen)
		if err != nil {
			return nil, fmt.Errorf("inference simulator on %s: %w (pass --sim-listen or --llm-base-url)", o.SimulatorListen, err)
		}
		srv := &http.Server{Handler: simulator.New(o.Simulator), ReadHeaderTimeout: 10 * time.Second}
		go func() { _ = srv.Serve(l) }()
		d.stops = append(d.stops, func() { _ = srv.Close() })
		o.LLM.BaseURL = "http://" + l.Addr().String() + "/v1"
		d.State.Simulator = true
	}
	d.State.LLMBaseURL = o.LLM.BaseURL

	// PostgreSQL: the private cluster unless a real one is given.
	if o.DatabaseURL == "" {
		fmt.Fprintln(out, "starting PostgreSQL (private cluster)...")
		pg, err := pgcluster.Start(ctx, pgcluster.Options{
			Dir: pgDir, Port: o.PostgresPort, Database: "si",
			Log: func(f string, a ...any) { fmt.Fprintf(out, "  "+f+"\n", a...) },
		})
		if err != nil {
			return nil, err
		}
		d.stops = append(d.stops, func() { _ = pg.Stop(context.Background()) })
		o.DatabaseURL = pg.URL()
	}
	st, err := store.Open(ctx, o.DatabaseURL)
	if err != nil {
		return nil, err
	}
	d.stops = append(d.stops, st.Close)
	d.State.DatabaseURL = o.DatabaseURL

	// Temporal: the embedded server unless a real one is given.
	if o.Temporal.Address == "" {
		fmt.Fprintln(out, "starting Temporal (embedded, SQLite)...")
		to := TemporalOptions{
			DatabaseFile:     filepath.Join(o.DataDir, "temporal.db"),
			Address:          o.TemporalListen,
			LogFile:          filepath.Join(o.DataDir, "temporal.log"),
			SearchAttributes: workflows.SearchAttributes(),
		}
		if o.UIListen != "off" {
			to.UIAddress = o.UIListen
		}
		t, err := StartTemporal(to)
		if err != nil {
			return nil, err
		}
		d.stops = append(d.stops, t.Stop)
		o.Temporal.Address = t.Address()
		if o.Temporal.Namespace == "" {
			o.Temporal.Namespace = Namespace
		}
		if t.UIAddress() != "" {
			d.State.UIURL = "http://" + t.UIAddress()
		}
	}
	d.State.TemporalAddress = o.Temporal.Address
	ins, err := o.Tracing.Instrument(ctx, "si-dev")
	if err != nil {
		return nil, err
	}
	d.stops = append(d.stops, func() { _ = ins.Shutdown(context.Background()) })
	o.Temporal.Interceptors = append(o.Temporal.Interceptors, ins.Interceptor)
	o.Temporal.MetricsHandler = ins.SDKMetrics
	c, err := o.Temporal.Dial(30 * time.Second)
	if err != nil {
		return nil, err
	}
	d.stops = append(d.stops, c.Close)

	// Stripe: the one given, or a stripe-mock of our own.
	var stripeClient *billing.Stripe
	ownStripeMock := false
	if o.Stripe.Key != "" {
		base, key, _ := o.Stripe.Resolve()
		stripeClient = billing.NewStripe(base, key, o.Stripe.MeterEvent)
		d.State.StripeURL, d.State.StripeKey = base, key
	} else if url, stop, err := startStripeMock(); err == nil {
		d.stops = append(d.stops, stop)
		stripeClient = billing.NewStripe(url, "sk_test_sidev", o.Stripe.MeterEvent)
		d.State.StripeURL, d.State.StripeKey = url, "sk_test_sidev"
		ownStripeMock = true
	} else {
		fmt.Fprintf(out, "  billing: %v; flushes to Stripe are off\n", err)
	}

	// The object store: the one given, or a MinIO of our own.
	var blobStore *blob.Store
	bc := o.Blob.Config
	if bc.Bucket == "" {
		if bin, err := FindTool("minio"); err != nil {
			fmt.Fprintf(out, "  adapters: %v; LoRA push is off\n", err)
		} else if m, err := StartMinIO(bin, filepath.Join(o.DataDir, "minio", "data"), o.MinIOListen); err != nil {
			fmt.Fprintf(out, "  adapters: %v; LoRA push is off\n", err)
		} else {
			d.stops = append(d.stops, m.Stop)
			bc = m.Config("si-adapters")
		}
	}
	if bc.Bucket != "" {
		if blobStore, err = blob.New(bc); err != nil {
			return nil, err
		}
		d.State.S3Endpoint, d.State.S3Region, d.State.S3Bucket, d.State.S3AccessKey, d.State.S3SecretKey =
			bc.Endpoint, bc.Region, bc.Bucket, bc.AccessKey, bc.SecretKey
	}

	// Email: the server given, or a Mailpit of our own.
	var mailer *mail.Mailer
	if o.Mail.Addr != "" {
		mailer = &o.Mail.Mailer
	} else if bin, err := FindTool("mailpit"); err != nil {
		fmt.Fprintf(out, "  email: %v; handovers cannot email their recipients\n", err)
	} else if mp, err := StartMailpit(bin, filepath.Join(o.DataDir, "mailpit"), o.SMTPListen, o.MailpitListen); err != nil {
		fmt.Fprintf(out, "  email: %v; handovers cannot email their recipients\n", err)
	} else {
		d.stops = append(d.stops, mp.Stop)
		mailer = &mail.Mailer{Addr: mp.SMTP, From: o.Mail.From}
		d.State.MailURL = mp.URL
	}
	if mailer != nil {
		if mailer.From == "" {
			mailer.From = "SuperInstance <mesh@superinstance.local>"
		}
		d.State.SMTPAddr = mailer.Addr
	}
	d.State.PublicURL = "http://" + o.MetricsListen

	// The cloud roles: the bridge (with certificates from a CA of its own),
	// the cloud worker, and the CA role, which signs the hubs' renewals and
	// enrollments (si hub enroll) on its own queue.
	inf := o.LLM.Inference()
	caDir := filepath.Join(o.DataDir, "ca")
	ca, err := pki.LoadCA(caDir)
	if err != nil {
		if ca, err = pki.InitCA(caDir, false, time.Now()); err != nil {
			return nil, err
		}
	}
	logger := slog.New(slog.NewTextHandler(out, &slog.HandlerOptions{Level: slog.LevelWarn}))
	srv, err := server.Start(server.Options{
		Roles:        map[string]bool{server.RoleAPI: true, server.RoleBridge: true, server.RoleWorker: true, server.RoleCA: true},
		BridgeListen: o.BridgeListen, BridgeHosts: []string{"127.0.0.1", "localhost"}, CADir: caDir,
		MetricsListen: o.MetricsListen, Temporal: c, Store: st, Inference: inf, Logger: logger,
		Stripe: stripeClient, FlushEvery: o.FlushEvery, WebhookSecret: o.WebhookSecret,
		Blob: blobStore, LoRACacheDir: filepath.Join(o.DataDir, "adapter-cache"), LoRACapacity: o.LoRACapacity,
		Mailer: mailer, PublicURL: d.State.PublicURL, Namespace: o.Temporal.Namespace, TemporalUIURL: d.State.UIURL,
		Registry: ins.Registry, Tracer: ins.Tracer,
	})
	if err != nil {
		return nil, err
	}
	d.stops = append(d.stops, srv.Stop)
	d.State.BridgeAddress = srv.Bridge.Addr().String()
	d.State.MetricsURL = srv.MetricsURL
	d.State.CADir = caDir

	// With a stripe-mock of its own, si dev sets Stripe up as si stripe
	// setup would (its webhook secret is --stripe-webhook-secret's), so
	// accounts are subscribed to the metered price.
	if ownStripeMock {
		have, err := st.StripeSetup(ctx)
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			return nil, err
		}
		r, err := stripeClient.EnsureSetup(ctx, billing.SetupOptions{PublicURL: d.State.PublicURL, Have: have, WebhookSecret: o.WebhookSecret})
		if err != nil {
			return nil, fmt.Errorf("stripe setup on stripe-mock: %w", err)
		}
		if err := st.SaveStripeSetup(ctx, r.StripeSetup); err != nil {
			return nil, err
		}
	}

	// The local hub's account, and "dev", which si ask bills by default,
	// each with a Stripe customer and its usage subscription when Stripe is on.
	for _, id := range []string{"dev", o.Account} {
		if _, err := st.CreateAccount(ctx, id, ""); err != nil && !errors.Is(err, store.ErrExists) {
			return nil, err
		}
		if stripeClient != nil {
			if _, _, err := stripeClient.Signup(ctx, st, id, id+"@si.dev"); err != nil && !errors.Is(err, billing.ErrNoSetup) {
				return nil, fmt.Errorf("stripe signup of %s: %w", id, err)
			}
		}
	}

	// si ask and the other customer commands find the API and a token of
	// "dev" where si login keeps them, unless someone logged in elsewhere.
	if err := d.login(ctx, st, out); err != nil {
		return nil, err
	}

	// The local hub: enrolled with that CA, connected over QUIC, with its worker.
	is, err := ca.IssueDevice(pki.Identity{DeviceID: o.HubID, Account: o.Account}, nil, pki.DefaultDeviceTTL, time.Now())
	if err != nil {
		return nil, err
	}
	if err := st.RegisterCert(ctx, o.HubID, o.Account, pki.Serial(is.Cert), is.Cert.NotAfter); err != nil {
		return nil, err
	}
	if err := is.Save(filepath.Join(o.DataDir, "hub"), ca.CertPEM); err != nil {
		return nil, err
	}
	tc, err := pki.ClientTLS(ca.CertPEM, is.CertPEM, is.KeyPEM, "127.0.0.1")
	if err != nil {
		return nil, err
	}
	vr := vitals.NewReader(nil)
	d.stops = append(d.stops, vr.Close)
	n, err := node.Start(node.Options{
		Agent: agent.Options{Bridge: d.State.BridgeAddress, TLS: tc, Vitals: vr.Read, DeviceID: o.HubID,
			Version: "dev", Hostname: "si-dev", Logger: logger},
		APIListen: o.HubAPIListen, APISecretFile: filepath.Join(o.DataDir, "hub", agent.SecretFile),
		OutboxFile: filepath.Join(o.DataDir, "hub", agent.OutboxFile), Inference: inf, Namespace: o.Temporal.Namespace, DeviceID: o.HubID,
		// Cloud-to-local commands: only what hub/commands.json admits; without it nothing runs.
		Commands: &hubcmd.Hub{Device: o.HubID, Account: o.Account, AllowList: filepath.Join(o.DataDir, "hub", hubcmd.AllowListFile),
			Audit: hubcmd.NewAudit(filepath.Join(o.DataDir, "hub", hubcmd.AuditFile))},
	})
	if err != nil {
		return nil, err
	}
	d.stops = append(d.stops, n.Stop)
	d.State.HubAPI = n.APIAddr()
	wctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	if err := n.Agent.WaitConnected(wctx); err != nil {
		return nil, fmt.Errorf("the local hub did not reach the bridge at %s: %s", d.State.BridgeAddress, n.Agent.Status().LastError)
	}
	if err := n.WaitWorker(wctx); err != nil {
		return nil, fmt.Errorf("the local hub's worker did not reach Temporal through the bridge at %s: %v", d.State.BridgeAddress, err)
	}
	if err := d.writeState(); err != nil {
		return nil, err
	}
	return d, nil
}

// Banner describes every address of the running mesh.
func (d *Dev) Banner(dataDir string) string {
	s := d.State
	stripe := s.StripeURL
	if stripe == "" {
		stripe = "(off: stripe-mock not installed; make tools builds it)"
	}
	llm := s.LLMBaseURL
	if s.Simulator {
		llm += "   (SIMULATOR: deterministic test double, not a language model)"
	}
	objects := "(off: minio not installed; make tools builds it)"
	if s.S3Bucket != "" {
		objects = s.S3Endpoint + "   bucket " + s.S3Bucket + "   (si push --expert NAME)"
	}
	ui := s.UIURL
	if ui == "" {
		ui = "(off)"
	}
	email := "(off: mailpit not installed; make tools builds it)"
	switch {
	case s.MailURL != "":
		email = "SMTP " + s.SMTPAddr + "   Mailpit " + s.MailURL + "   (handover emails)"
	case s.SMTPAddr != "":
		email = "SMTP " + s.SMTPAddr
	}
	return fmt.Sprintf(`si dev: the SuperInstance mesh on embedded defaults
  data directory      %s
  Temporal frontend   %s
  Temporal Web UI     %s
  PostgreSQL          %s
  inference           %s
  bridge (QUIC, mTLS) %s   (CA in %s)
  local hub           %q on task queue %q, its worker through the bridge over QUIC; its API http://%s
  cloud worker        task queue %q
  HTTP API, metrics    %s   (/v1/consensus, /metrics, /v1/stripe/webhook)
  stripe              %s
  object store        %s
  email               %s
try:  si ask "What is the capital of France?"     si escalate "Why is the sky blue?"     si hubs
Ctrl-C stops everything.
`, dataDir, s.TemporalAddress, ui, s.DatabaseURL, llm, s.BridgeAddress, s.CADir, s.HubID, workers.HubQueue(s.HubID), s.HubAPI,
		workers.CloudQueue, strings.TrimSuffix(s.MetricsURL, "/metrics"), stripe, objects, email)
}

// Stop shuts every part down, last started first.
func (d *Dev) Stop() {
	for i := len(d.stops) - 1; i >= 0; i-- {
		d.stops[i]()
	}
	d.stops = nil
	if d.stateDir != "" {
		_ = os.Remove(filepath.Join(d.stateDir, "dev.json"))
	}
}

// login issues an API token for the "dev" account and stores it with the
// API's URL in the user's si credentials, where si login would; credentials
// that si login stored are kept (si dev says so), and the token always goes
// to <data-dir>/dev-token.
func (d *Dev) login(ctx context.Context, st *store.Store, out io.Writer) error {
	tok, err := st.CreateAPIToken(ctx, "dev", "si dev")
	if err != nil {
		return fmt.Errorf("an API token for dev: %w", err)
	}
	cred := client.Credentials{APIURL: d.State.PublicURL, Token: tok, Account: "dev", Source: client.SourceDev}
	tokenFile := filepath.Join(d.stateDir, "dev-token")
	if err := os.WriteFile(tokenFile, []byte(tok+"\n"), 0o600); err != nil {
		return err
	}
	if cur, err := client.LoadCredentials(); err == nil && cur.Source != client.SourceDev {
		fmt.Fprintf(out, "  credentials: kept your si login for %s; to use this si dev: si login --with-token --api-url %s < %s\n",
			cur.APIURL, d.State.PublicURL, tokenFile)
		return nil
	}
	_, err = client.SaveCredentials(cred)
	return err
}

func (d *Dev) writeState() error {
	b, err := json.MarshalIndent(d.State, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(d.stateDir, "dev.json"), b, 0o600)
}

// startStripeMock runs stripe-mock (from PATH or beside this executable) on
// free ports.
func startStripeMock() (string, func(), error) {
	bin, err := FindTool("stripe-mock")
	if err != nil {
		return "", nil, err
	}
	httpPort, err := FreePort("127.0.0.1")
	if err != nil {
		return "", nil, err
	}
	httpsPort, err := FreePort("127.0.0.1")
	if err != nil {
		return "", nil, err
	}
	cmd := exec.Command(bin, "-http-port", fmt.Sprint(httpPort), "-https-port", fmt.Sprint(httpsPort))
	if err := cmd.Start(); err != nil {
		return "", nil, err
	}
	stop := func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }
	addr := fmt.Sprintf("127.0.0.1:%d", httpPort)
	if err := waitTCP(addr, 20*time.Second); err != nil {
		stop()
		return "", nil, fmt.Errorf("stripe-mock did not start: %w", err)
	}
	return "http://" + addr, stop, nil
}
