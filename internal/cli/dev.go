package cli

import (
	"context"
	"flag"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/superinstance/mesh/internal/config"
	"github.com/superinstance/mesh/internal/devstack"
	"github.com/superinstance/mesh/internal/simulator"
)

func devCommand() *Command {
	var o devstack.DevOptions
	return &Command{
		Name:  "dev",
		Short: "run the whole mesh on embedded defaults until Ctrl-C",
		Long: `si dev runs the mesh in one process with no configuration at all: an embedded
Temporal server persisting to SQLite with its Web UI, a private PostgreSQL
cluster started from the machine's own binaries (migrations applied), the cloud
worker, the QUIC bridge with a CA of its own, one local hub connected to it
over QUIC (its worker on hub.local), and the inference simulator. It prints every
address and stays up until Ctrl-C, then shuts everything down.

Each part can point at a real service instead: --temporal-address,
--database-url, --llm-base-url, --s3-bucket (adapters go to an embedded MinIO
otherwise).`,
		Flags: func(fs *flag.FlagSet) {
			fs.StringVar(&o.DataDir, "data-dir", config.DevDir(), "where the embedded services keep their data")
			fs.BoolVar(&o.Fresh, "fresh", false, "delete the data directory first")
			o.Temporal.Register(fs, "", "use this Temporal frontend instead of the embedded server")
			fs.StringVar(&o.TemporalListen, "temporal-listen", "127.0.0.1:7233", "address of the embedded Temporal frontend")
			fs.StringVar(&o.UIListen, "ui-listen", "127.0.0.1:8233", `address of the Temporal Web UI ("off" disables it)`)
			fs.StringVar(&o.DatabaseURL, "database-url", "", "use this PostgreSQL instead of the private cluster")
			fs.IntVar(&o.PostgresPort, "postgres-port", 55432, "port of the private PostgreSQL cluster (0 picks a free one)")
			o.LLM.Register(fs, "")
			fs.StringVar(&o.SimulatorListen, "sim-listen", "127.0.0.1:8300", "address of the inference simulator (when --llm-base-url is empty)")
			fs.DurationVar(&o.Simulator.Latency, "sim-latency", 0, "simulator latency per request")
			fs.DurationVar(&o.Simulator.TokenLatency, "sim-token-latency", 0, "simulator latency per completion token")
			fs.DurationVar(&o.Simulator.LoadDelay, "sim-lora-load-latency", simulator.DefaultLoRALoadLatency, "how long the simulator takes to load a LoRA adapter (about vLLM's for a small one; 0 loads at once)")
			fs.StringVar(&o.HubID, "hub-id", "local", "device id of the local hub (its task queue is hub.<id>)")
			fs.StringVar(&o.Account, "account", "dev", "account the local hub's escalations bill to")
			fs.StringVar(&o.BridgeListen, "bridge-listen", "127.0.0.1:7443", "the bridge's UDP address")
			fs.StringVar(&o.HubAPIListen, "hub-api-listen", "127.0.0.1:7450", "the local hub's API (si escalate)")
			fs.StringVar(&o.MetricsListen, "metrics-listen", "127.0.0.1:9464", "address of /metrics, /healthz and /ready")
			o.Stripe.Register(fs)
			fs.DurationVar(&o.FlushEvery, "flush-every", time.Hour, "how often small balances are flushed to Stripe")
			o.Blob.Register(fs)
			fs.StringVar(&o.MinIOListen, "minio-listen", "127.0.0.1:9000", "address of the embedded MinIO (when --s3-bucket is empty)")
			o.Mail.Register(fs)
			o.Tracing.Register(fs)
			fs.StringVar(&o.SMTPListen, "mailpit-smtp-listen", "127.0.0.1:1025", "SMTP address of the embedded Mailpit (when --smtp-addr is empty)")
			fs.StringVar(&o.MailpitListen, "mailpit-listen", "127.0.0.1:8025", "web interface of the embedded Mailpit")
			fs.IntVar(&o.LoRACapacity, "lora-capacity", 8, "how many adapters stay loaded in the inference server")
			fs.StringVar(&o.WebhookSecret, "stripe-webhook-secret", "whsec_sidev", "signing secret of the Stripe webhook (POST /v1/stripe/webhook on --metrics-listen)")
		},
		Run: func(ctx context.Context, env *Env, _ []string) error {
			start := time.Now()
			d, err := devstack.StartDev(ctx, o, env.Stderr)
			if err != nil {
				return err
			}
			fmt.Fprint(env.Stdout, d.Banner(o.DataDir))
			fmt.Fprintf(env.Stdout, "ready in %.1fs\n", time.Since(start).Seconds())
			<-ctx.Done()
			fmt.Fprintln(env.Stdout, "stopping...")
			d.Stop()
			fmt.Fprintln(env.Stdout, "stopped")
			return nil
		},
	}
}

func simulatorCommand() *Command {
	var (
		listen string
		opts   simulator.Options
	)
	return &Command{
		Name:  "simulator",
		Short: "serve the inference simulator (OpenAI-compatible, not a language model)",
		Long: `si simulator serves the mesh's inference SIMULATOR on its own: the OpenAI
chat-completions API and vLLM's LoRA load/unload endpoints, with deterministic
replies shaped for the Cloud Synapse agents. It is a test double, not a model.
An adapter load takes --lora-load-latency (2 s by default, about what vLLM
takes for a small adapter), so a cold start costs what it would.`,
		Flags: func(fs *flag.FlagSet) {
			fs.StringVar(&listen, "listen", "127.0.0.1:8300", "address to serve on")
			fs.DurationVar(&opts.Latency, "latency", 0, "latency per request")
			fs.DurationVar(&opts.TokenLatency, "token-latency", 0, "latency per completion token")
			fs.DurationVar(&opts.LoadDelay, "lora-load-latency", simulator.DefaultLoRALoadLatency, "how long loading a LoRA adapter takes, through /v1/load_lora_adapter or on a cold start (about vLLM's for a small one; 0 loads at once)")
			fs.StringVar(&opts.LoRADir, "lora-dir", "", "where a request naming an adapter that is not loaded finds it (<dir>/<name>, as vLLM's filesystem resolver) and loads it first, taking --lora-load-latency; empty answers such a request 404")
		},
		Run: func(ctx context.Context, env *Env, _ []string) error {
			l, err := net.Listen("tcp", listen)
			if err != nil {
				return err
			}
			srv := &http.Server{Handler: simulator.New(opts), ReadHeaderTimeout: 10 * time.Second}
			fmt.Fprintf(env.Stdout, "inference SIMULATOR on http://%s/v1 (models %s, %s)\n", l.Addr(), simulator.ModelSmall, simulator.ModelLarge)
			go func() {
				<-ctx.Done()
				_ = srv.Close()
			}()
			if err := srv.Serve(l); err != http.ErrServerClosed {
				return err
			}
			return nil
		},
	}
}
