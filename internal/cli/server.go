package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/superinstance/mesh/hub/bridge"
	"github.com/superinstance/mesh/internal/billing"
	"github.com/superinstance/mesh/internal/blob"
	"github.com/superinstance/mesh/internal/config"
	"github.com/superinstance/mesh/internal/pki"
	"github.com/superinstance/mesh/internal/server"
	"github.com/superinstance/mesh/internal/store"
	"github.com/superinstance/mesh/internal/telemetry"
)

func serverCommand() *Command {
	var (
		o        server.Options
		roles    string
		hosts    string
		t        config.Temporal
		db       config.Database
		l        config.LLM
		sc       config.Stripe
		bc       config.Blob
		mc       config.Mail
		tr       telemetry.Tracing
		logLevel string
	)
	return &Command{
		Name:  "server",
		Short: "run the cloud's roles (bridge, worker) against real services",
		Long: `si server is the production cloud process. Its roles run together or alone
(--roles api,bridge,worker,ca) so each scales on its own: the HTTP API, the
bridge hubs dial over QUIC, the cloud worker on task queue "cloud", and the
CA on task queue "ca", which signs hubs' certificate renewals and is the only
role that needs the CA's private key (a bridge given --server-cert and
--server-key reads only ca.pem). It serves /metrics, /healthz
and /ready, and on SIGTERM stops the bridge, then lets the worker finish the
activities in flight.`,
		Flags: func(fs *flag.FlagSet) {
			fs.StringVar(&roles, "roles", "api,bridge,worker,ca", "roles to run: api, bridge, worker, ca (ca signs hubs' certificate renewals and is the only role that reads the CA key)")
			fs.DurationVar(&o.DeviceCertTTL, "device-cert-ttl", pki.DefaultDeviceTTL, "with the ca role, how long the certificates it signs for renewing hubs last (hubs renew at two thirds of it)")
			fs.StringVar(&o.BridgeListen, "bridge-listen", "0.0.0.0:7443", "the bridge's UDP address; the TCP fallback listens on the same port")
			fs.BoolVar(&o.BridgeLimits.NoTCP, "bridge-no-tcp", false, "do not listen on TCP for hubs whose UDP is blocked")
			fs.BoolVar(&o.BridgeLimits.NoEnroll, "bridge-no-enroll", false, "refuse new hubs' enrollment with one-time tokens (si hub enroll); they then need certificates from si device enroll")
			fs.IntVar(&o.BridgeLimits.EnrollPerMinute, "bridge-enroll-per-minute", 6, "enrollment attempts one source (IP address, IPv6 /64) may make a minute")
			fs.StringVar(&hosts, "bridge-hosts", "", "comma-separated names and IPs for the bridge certificate (default: hostname, localhost, 127.0.0.1)")
			fs.StringVar(&o.CADir, "ca-dir", defaultCADir(), "the mesh CA's directory")
			fs.DurationVar(&o.BridgeLimits.Recheck, "bridge-recheck", 30*time.Second, "how often the bridge closes the connections of devices revoked or expired since they connected")
			fs.IntVar(&o.BridgeLimits.ConnsPerDevice, "bridge-max-conns-per-device", 4, "connections one device may hold open on the bridge; more are closed with a reason")
			fs.IntVar(&o.BridgeLimits.StreamsPerConn, "bridge-max-streams-per-conn", 100, "streams one hub connection may have open at once")
			fs.DurationVar(&o.BridgeLimits.StreamReadTimeout, "bridge-stream-read-timeout", 10*time.Second, "how long a new stream has to name its kind and send its first message")
			fs.StringVar(&o.ServerCertFile, "server-cert", "", "bridge certificate (default: issued from the CA at start)")
			fs.StringVar(&o.ServerKeyFile, "server-key", "", "bridge key")
			fs.StringVar(&o.MetricsListen, "metrics-listen", "127.0.0.1:9464", "address of /metrics, /healthz, /ready and the Stripe webhook (empty disables)")
			fs.StringVar(&logLevel, "log-level", "info", "debug, info, warn or error")
			t.Register(fs, "127.0.0.1:7233", "Temporal frontend host:port")
			db.Register(fs)
			l.Register(fs, "http://127.0.0.1:8300/v1")
			sc.Register(fs)
			fs.DurationVar(&o.FlushEvery, "flush-every", time.Hour, "how often small balances are flushed to Stripe")
			fs.StringVar(&o.WebhookSecret, "stripe-webhook-secret", "", "signing secret of the Stripe webhook served at POST /v1/stripe/webhook (default: the one si stripe setup recorded)")
			bc.Register(fs)
			fs.StringVar(&o.LoRACacheDir, "lora-cache-dir", filepath.Join(config.HomeDir(), "adapter-cache"), "where adapters are put for the inference server to load (a directory it can read)")
			fs.IntVar(&o.LoRACapacity, "lora-capacity", 8, "how many adapters stay loaded in the inference server (least recently used go first)")
			mc.Register(fs)
			tr.Register(fs)
			fs.DurationVar(&o.StopTimeout, "stop-timeout", time.Minute, "how long stopping waits for the worker's activities in flight")
			fs.StringVar(&o.PublicURL, "public-url", "", "base URL of the HTTP API as users reach it, for links in emails (default: http:// and --metrics-listen)")
			fs.StringVar(&o.TemporalUIURL, "temporal-ui-url", "", "base URL of the Temporal Web UI, e.g. http://temporal-ui:8080; the live page links each run there for operators (default: no link)")
		},
		Run: func(ctx context.Context, env *Env, _ []string) error {
			var err error
			if o.Roles, err = server.ParseRoles(roles); err != nil {
				return err
			}
			if (o.ServerCertFile == "") != (o.ServerKeyFile == "") {
				return errors.New("--server-cert and --server-key go together")
			}
			if hosts != "" {
				o.BridgeHosts = strings.Split(hosts, ",")
			}
			var lvl slog.Level
			if err := lvl.UnmarshalText([]byte(logLevel)); err != nil {
				return fmt.Errorf("--log-level: %w", err)
			}
			o.Logger = slog.New(slog.NewJSONHandler(env.Stderr, &slog.HandlerOptions{Level: lvl}))
			if o.Roles[server.RoleBridge] {
				gc, restore := bridge.TuneGC()
				defer restore()
				setBy := "si server for the bridge role (bridge.GCPercent)"
				if os.Getenv("GOGC") != "" {
					setBy = "the GOGC environment variable"
				}
				o.Logger.Info("Go collector target", "gogc", gc, "set_by", setBy)
			}
			if o.Store, err = db.Open(ctx); err != nil {
				return err
			}
			defer o.Store.Close()
			ins, err := tr.Instrument(ctx, "si-server")
			if err != nil {
				return err
			}
			defer func() { _ = ins.Shutdown(context.Background()) }()
			t.Interceptors, t.MetricsHandler, t.Logger = append(t.Interceptors, ins.Interceptor), ins.SDKMetrics, o.Logger
			o.Registry, o.Tracer = ins.Registry, ins.Tracer
			c, err := t.Dial(10 * time.Second)
			if err != nil {
				return err
			}
			defer c.Close()
			o.Temporal, o.Inference = c, l.Inference()
			if sc.Key != "" {
				base, key, _ := sc.Resolve()
				o.Stripe = billing.NewStripe(base, key, sc.MeterEvent)
				// What si stripe setup recorded: the metered price new accounts
				// are subscribed to, and the webhook's signing secret.
				setup, err := o.Store.StripeSetup(ctx)
				switch {
				case errors.Is(err, store.ErrNotFound):
					fmt.Fprintln(env.Stderr, "si server: no si stripe setup in this database: usage is metered, but no account is subscribed to a price, so Stripe invoices nothing")
				case err != nil:
					return err
				case setup.MeterEvent != sc.MeterEvent:
					return fmt.Errorf("--stripe-meter-event %q is not the meter si stripe setup made (%q): use that one, or run si stripe setup with it", sc.MeterEvent, setup.MeterEvent)
				case o.WebhookSecret == "":
					o.WebhookSecret = setup.WebhookSecret
				}
			} else {
				fmt.Fprintln(env.Stderr, "si server: no --stripe-key: balances are not flushed to Stripe")
			}
			if bc.Config.Bucket != "" {
				if o.Blob, err = blob.New(bc.Config); err != nil {
					return err
				}
			} else {
				fmt.Fprintln(env.Stderr, "si server: no --s3-bucket: LoRA push and loading are off")
			}
			if mc.Addr != "" {
				o.Mailer = &mc.Mailer
			} else {
				fmt.Fprintln(env.Stderr, "si server: no --smtp-addr: handovers cannot email their recipients")
			}
			if o.PublicURL == "" {
				o.PublicURL = "http://" + o.MetricsListen
			}
			o.Namespace = t.Namespace
			s, err := server.Start(o)
			if err != nil {
				return err
			}
			fmt.Fprintf(env.Stdout, "si server: roles %s", roles)
			if s.Bridge != nil {
				fmt.Fprintf(env.Stdout, "; bridge on %s (udp)", s.Bridge.Addr())
			}
			if s.MetricsURL != "" {
				fmt.Fprintf(env.Stdout, "; metrics %s", s.MetricsURL)
			}
			fmt.Fprintln(env.Stdout)
			<-ctx.Done()
			fmt.Fprintln(env.Stdout, stoppingMessage(o.Roles))
			s.Stop()
			return nil
		},
	}
}

// stoppingMessage says what a server with roles stops, in the order
// server.Stop stops it.
func stoppingMessage(roles map[string]bool) string {
	var steps []string
	if roles[server.RoleAPI] {
		steps = append(steps, "the API's requests and event streams")
	}
	if roles[server.RoleBridge] {
		steps = append(steps, "the bridge")
	}
	if roles[server.RoleWorker] {
		steps = append(steps, "the worker's activities in flight")
	}
	if roles[server.RoleCA] {
		steps = append(steps, "the CA's signing")
	}
	return "stopping: " + strings.Join(steps, ", then ")
}
