package cli

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"text/tabwriter"
	"time"

	"github.com/superinstance/mesh/activities"
	"github.com/superinstance/mesh/hub"
	"github.com/superinstance/mesh/hub/agent"
	"github.com/superinstance/mesh/hub/hubcmd"
	"github.com/superinstance/mesh/hub/node"
	"github.com/superinstance/mesh/hub/vitals"
	"github.com/superinstance/mesh/hub/wire"
	"github.com/superinstance/mesh/internal/config"
	"github.com/superinstance/mesh/internal/pki"
	"github.com/superinstance/mesh/internal/store"
	"github.com/superinstance/mesh/internal/telemetry"
	"github.com/superinstance/mesh/workers"
)

func hubCommand() *Command {
	var (
		o                  node.Options
		certPath, keyPath  string
		caPath, serverName string
		secretFile         string
		outboxFile         string
		l                  config.LLM
		noWorker           bool
		noRenew            bool
		tr                 telemetry.Tracing
		commandsFile       string
		commandsAudit      string
	)
	return &Command{
		Name:  "hub",
		Short: "run this machine as a hub: tunnel to the bridge, vitals, local worker",
		Long: `si hub dials the cloud bridge over QUIC with the device certificate
(si hub enroll redeems a one-time token for it; si device enroll issues one
on the operator's side), says hello, sends a heartbeat with NVML vitals
every interval and a pre-warm signal when a GPU runs hot (load over 0.8 or
over 80°C, with hysteresis) naming the adapters of its latest escalations
(--prewarm-recent; else --prewarm-lora), which the cloud loads ahead of need
if this device's account may use them, and carries escalations (si escalate)
and usage records. Where UDP is blocked it falls back to TLS 1.3 over TCP on the same
port (--protocol) and returns to QUIC once it can. A heartbeat not acked
within one interval ends the link; it then dials the next --bridge address,
waiting at most --redial-max. It reconnects by itself after any interruption;
what waits meanwhile is delivered afterwards. Escalations and usage records
are kept on disk in --outbox until the bridge has answered or acked them, so a
restart (even a kill) loses none, and the cloud runs and bills each once. The
local kernel reports the inference it serves itself with POST /v1/usage on the
local API. It also runs the hub's Temporal worker on
hub.<device-id> and serves a local API for si escalate on loopback, which
answers only requests that carry the secret in --api-secret-file (created
0600 at start, read by si escalate) with a localhost Host and JSON body.

The worker holds no Temporal address or credential: it reaches Temporal
through the bridge, over the same tunnel and device certificate, and the
bridge lets it poll and answer hub.<device-id> and nothing else.

The cloud may ask the hub to run a command (si hub exec) only when the
hub's allow-list admits it; without the file nothing runs.
` + allowListHelp,
		Flags: func(fs *flag.FlagSet) {
			fs.StringVar(&o.Agent.Bridge, "bridge", "127.0.0.1:7443", "the bridge's host:port (QUIC over UDP, TLS over TCP on the same port as the fallback); several comma separated: after a link fails the hub dials the next")
			fs.StringVar(&o.Agent.Protocol, "protocol", agent.ProtocolAuto, "auto (QUIC, falling back to TLS over TCP on the same port when QUIC cannot connect), quic (never TCP) or tcp (only TCP, where UDP is known to be blocked)")
			fs.DurationVar(&o.Agent.QUICRetry, "quic-retry", 30*time.Second, "on the TCP fallback, how often to try QUIC again (the link switches back once it connects)")
			fs.DurationVar(&o.Agent.Backoff.Max, "redial-max", 3*time.Second, "the longest wait between reconnection attempts")
			fs.StringVar(&certPath, "cert", "", "device certificate (default ~/.si/devices/<id>/cert.pem)")
			fs.StringVar(&keyPath, "key", "", "device key (default ~/.si/devices/<id>/key.pem)")
			fs.StringVar(&caPath, "ca", "", "mesh CA certificate (default ~/.si/devices/<id>/ca.pem)")
			fs.StringVar(&serverName, "server-name", "", "name in the bridge's certificate (default: the host of each --bridge address)")
			fs.StringVar(&o.DeviceID, "id", "", "device id (default: the certificate's)")
			fs.DurationVar(&o.Agent.Interval, "interval", 5*time.Second, "heartbeat interval (under a minute: the bridge closes a control stream silent for 12 of its heartbeat intervals, 60 s by default)")
			fs.StringVar(&o.APIListen, "api-listen", "127.0.0.1:7450", "local API for si escalate (loopback)")
			fs.StringVar(&secretFile, "api-secret-file", "", "the local API's secret, created 0600 if missing; si escalate reads it (default: "+agent.SecretFile+" beside --cert, ~/.si/devices/<id>/"+agent.SecretFile+")")
			fs.StringVar(&outboxFile, "outbox", "", "file that keeps escalations and usage records until the bridge answers or acks them, so a restart loses none (default: "+agent.OutboxFile+" beside --api-secret-file)")
			fs.BoolVar(&noWorker, "no-worker", false, "do not run the hub's Temporal worker")
			fs.StringVar(&commandsFile, "commands", "", "the allow-list of commands the cloud may ask this hub to run, read at every request; absent: nothing runs (default: "+hubcmd.AllowListFile+" in ~/.si/devices/<id>/, or beside --cert)")
			fs.StringVar(&commandsAudit, "commands-audit", "", "the append-only audit log of those requests (default: "+hubcmd.AuditFile+" beside --commands)")
			fs.IntVar(&o.Agent.Prewarm.Recent, "prewarm-recent", agent.DefaultPrewarmRecent, fmt.Sprintf("how many adapters of the latest escalations a pre-warm signal asks the cloud to load, most recent first (at most %d)", wire.MaxPrewarmLoRAs))
			fs.StringVar(&o.Agent.Prewarm.LoRA, "prewarm-lora", "", "adapter id a pre-warm signal names while no recent escalation named one (your project's adapter); the cloud loads it only if this device's account may use it")
			fs.StringVar(&o.MetricsListen, "metrics-listen", "127.0.0.1:7451", "serve /metrics (Prometheus) and /ready here, without the API secret (they start nothing and hold no secret); empty serves neither")
			tr.Register(fs)
			fs.BoolVar(&noRenew, "no-renew", false, "do not renew the device certificate over the link (by default it is renewed at two thirds of its life with a new key made here, and --cert and --key are rewritten)")
			fs.StringVar(&o.Namespace, "namespace", "default", "the mesh's Temporal namespace (the bridge refuses any other)")
			l.Register(fs, "http://127.0.0.1:8300/v1")
		},
		Run: func(ctx context.Context, env *Env, args []string) error {
			if len(args) > 0 {
				return fmt.Errorf("unexpected argument %q", args[0])
			}
			if o.Agent.Prewarm.Recent < 1 || o.Agent.Prewarm.Recent > wire.MaxPrewarmLoRAs {
				return fmt.Errorf("--prewarm-recent %d: want 1 to %d", o.Agent.Prewarm.Recent, wire.MaxPrewarmLoRAs)
			}
			if len(o.Agent.Prewarm.LoRA) > wire.MaxIDLen {
				return fmt.Errorf("--prewarm-lora is %d bytes: an adapter id is at most %d (see si lora ls)", len(o.Agent.Prewarm.LoRA), wire.MaxIDLen)
			}
			switch o.Agent.Protocol {
			case agent.ProtocolAuto, agent.ProtocolQUIC, agent.ProtocolTCP:
			default:
				return fmt.Errorf("--protocol %q: want auto, quic or tcp", o.Agent.Protocol)
			}
			tc, id, err := hubTLS(o.DeviceID, certPath, keyPath, caPath, serverName, o.Agent.Bridge)
			if err != nil {
				return err
			}
			o.DeviceID, o.Agent.TLS, o.Agent.DeviceID = id.DeviceID, tc, id.DeviceID
			if !noRenew {
				if o.Agent.Certs, err = hubCerts(id.DeviceID, certPath, keyPath, caPath); err != nil {
					return err
				}
			}
			dir := deviceDir(id.DeviceID)
			if certPath != "" {
				dir = filepath.Dir(certPath)
			}
			o.APISecretFile = secretFile
			if o.APISecretFile == "" {
				o.APISecretFile = filepath.Join(dir, agent.SecretFile)
			}
			commandsNote := ""
			if !noWorker {
				list, audit := hubCommandFiles(dir, commandsFile, commandsAudit)
				o.Commands, commandsNote = hubCommands(id.DeviceID, id.Account, list, audit)
				commandsNote = "; " + commandsNote
			}
			o.OutboxFile = outboxFile
			if o.OutboxFile == "" {
				o.OutboxFile = filepath.Join(filepath.Dir(o.APISecretFile), agent.OutboxFile)
			}
			o.Agent.Version, o.Agent.Hostname = Version, hostname()
			r := vitals.NewReader(nil)
			defer r.Close()
			o.Agent.Vitals = r.Read
			o.Agent.Logger = slog.New(slog.NewTextHandler(env.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
			tp, shutdown, err := tr.Provider(ctx, "si-hub")
			if err != nil {
				return fmt.Errorf("--otlp-endpoint %s: %w", tr.Endpoint, err)
			}
			defer func() {
				sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				_ = shutdown(sctx)
			}()
			o.Tracer = tp
			if !noWorker {
				o.Inference = l.Inference()
				if tr.Endpoint != "" {
					ic, err := telemetry.TemporalInterceptor(tp)
					if err != nil {
						return err
					}
					o.Interceptors = append(o.Interceptors, ic)
					o.Inference = activities.WrapHTTP(o.Inference, func(hc *http.Client) *http.Client { return telemetry.HTTPClient(tp, hc) })
				}
			}
			n, err := node.Start(o)
			if err != nil {
				return err
			}
			defer n.Stop()
			worker := "no worker"
			if !noWorker {
				worker = "worker on " + workers.HubQueue(id.DeviceID) + " through the bridge"
			}
			metrics := ""
			if n.MetricsAddr() != "" {
				metrics = "; metrics http://" + n.MetricsAddr() + "/metrics"
			}
			fmt.Fprintf(env.Stdout, "hub %s (account %s) -> bridge %s; local API http://%s%s; %s%s\n",
				id.DeviceID, id.Account, o.Agent.Bridge, n.APIAddr(), metrics, worker, commandsNote)
			<-ctx.Done()
			return nil
		},
		Sub: []*Command{hubVitalsCommand(), hubEnrollCommand(), hubCommandsCommand(), hubExecCommand(), hubAuditCommand()},
	}
}

// hubTLS loads a device's certificate files, defaulting to ~/.si/devices/<id>/.
func hubTLS(id, certPath, keyPath, caPath, serverName, bridgeAddr string) (*tls.Config, pki.Identity, error) {
	if (certPath == "" || keyPath == "" || caPath == "") && id == "" {
		return nil, pki.Identity{}, errors.New("pass --cert, --key and --ca (or --id to use ~/.si/devices/<id>/)")
	}
	def := func(p *string, file string) {
		if *p == "" {
			*p = filepath.Join(deviceDir(id), file)
		}
	}
	def(&certPath, pki.CertFile)
	def(&keyPath, pki.KeyFile)
	def(&caPath, pki.CACertFile)
	read := func(p string) ([]byte, error) {
		b, err := os.ReadFile(p)
		if err != nil {
			return nil, fmt.Errorf("%w (si device enroll writes it)", err)
		}
		return b, nil
	}
	certPEM, err := read(certPath)
	if err != nil {
		return nil, pki.Identity{}, err
	}
	keyPEM, err := read(keyPath)
	if err != nil {
		return nil, pki.Identity{}, err
	}
	caPEM, err := read(caPath)
	if err != nil {
		return nil, pki.Identity{}, err
	}
	for _, addr := range agent.SplitBridges(bridgeAddr) {
		if _, _, err := net.SplitHostPort(addr); err != nil {
			return nil, pki.Identity{}, fmt.Errorf("--bridge %q: %w (want host:port, several comma separated)", addr, err)
		}
	}
	// Without --server-name each dial checks the certificate against the
	// host it dials (crypto/tls and quic-go take it from the address).
	tc, err := pki.ClientTLS(caPEM, certPEM, keyPEM, serverName)
	if err != nil {
		return nil, pki.Identity{}, err
	}
	leaf, err := x509.ParseCertificate(tc.Certificates[0].Certificate[0])
	if err != nil {
		return nil, pki.Identity{}, err
	}
	ident, err := pki.IdentityOf(leaf)
	if err != nil {
		return nil, pki.Identity{}, err
	}
	if id != "" && id != ident.DeviceID {
		return nil, pki.Identity{}, fmt.Errorf("--id %s does not match the certificate's device %s", id, ident.DeviceID)
	}
	if time.Now().After(leaf.NotAfter) {
		return nil, pki.Identity{}, fmt.Errorf("the device certificate expired on %s: run si device renew --id %s", leaf.NotAfter.Format(time.RFC3339), ident.DeviceID)
	}
	return tc, ident, nil
}

func hostname() string {
	h, _ := os.Hostname()
	return h
}

func hubsCommand() *Command {
	var (
		db     config.Database
		asJSON bool
		policy hub.Policy
	)
	return &Command{
		Name:  "hubs",
		Short: "list hubs with their vitals and health, as the bridge sees them, and enrolled devices that never connected",
		Long: `si hubs lists every hub a bridge has seen: its link (online, or offline
once the registry says so, once its bridge process has stopped beating for
3 s, which is how a hub whose bridge died without closing its link goes
offline, or once it has been silent longer than --max-silence),
its smoothed heartbeat round trip (none while offline), vitals and health.
Devices enrolled (si device enroll) whose hub has never connected follow,
with the link "never connected".`,
		Flags: func(fs *flag.FlagSet) {
			db.Register(fs)
			fs.BoolVar(&asJSON, "json", false, "print JSON")
			fs.DurationVar(&policy.MaxSilence, "max-silence", 15*time.Second, "a hub not heard from for longer is shown offline (three heartbeats at the default interval)")
		},
		Run: func(ctx context.Context, env *Env, _ []string) error {
			if policy.MaxSilence <= 0 {
				return fmt.Errorf("--max-silence %s: want a positive duration such as 15s", policy.MaxSilence)
			}
			st, err := db.Open(ctx)
			if err != nil {
				return err
			}
			defer st.Close()
			hubs, err := st.Hubs(ctx)
			if err != nil {
				return err
			}
			never, err := st.NeverConnected(ctx)
			if err != nil {
				return err
			}
			rows := hubRows(policy, hubs, never, time.Now())
			if asJSON {
				return printJSON(env.Stdout, rows)
			}
			if len(rows) == 0 {
				fmt.Fprintln(env.Stdout, "no device is enrolled yet (si device enroll)")
				return nil
			}
			now := time.Now()
			tw := tabwriter.NewWriter(env.Stdout, 0, 2, 2, ' ', 0)
			fmt.Fprintln(tw, "DEVICE\tACCOUNT\tLINK\tLAST SEEN\tRTT\tGPUS\tGPU LOAD\tGPU TEMP\tCPU\tHEALTH")
			for _, r := range rows {
				if r.NeverConnected {
					fmt.Fprintf(tw, "%s\t%s\t%s\t-\t-\t-\t-\t-\t-\t%s\n", r.DeviceID, r.Account, r.Link, r.Health)
					continue
				}
				gpus := fmt.Sprint(r.GPUCount)
				if !r.NVML {
					gpus = "no GPU"
				}
				rtt := "-"
				if r.RTTMicros > 0 {
					rtt = fmt.Sprintf("%.2fms", float64(r.RTTMicros)/1000)
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s ago\t%s\t%s\t%.0f%%\t%.0f°C\t%.0f%%\t%s\n", r.DeviceID, r.Account, r.Link,
					now.Sub(r.LastSeen).Round(time.Second), rtt, gpus, r.GPULoad*100, r.GPUTempC, r.CPULoad*100, r.Health)
			}
			return tw.Flush()
		},
	}
}

// hubRows are the lines of si hubs. A hub is online by the registry's flag
// and the age rule; an offline hub shows no round trip (its last one says
// nothing about now).
func hubRows(p hub.Policy, hubs []store.Hub, never []store.EnrolledDevice, now time.Time) []hubRow {
	rows := make([]hubRow, 0, len(hubs)+len(never))
	for _, h := range hubs {
		ok, why := p.Check(h, now)
		if ok {
			why = "healthy"
		}
		link := "online"
		if !p.Online(h, now) {
			link = "offline"
			// An offline hub's last round trip says nothing about now.
			h.Connected, h.RTTMicros = false, 0
		}
		r := newHubRow(h, ok, why)
		r.Link = link
		rows = append(rows, r)
	}
	for _, d := range never {
		rows = append(rows, hubRow{DeviceID: d.DeviceID, Account: d.Account, Link: "never connected",
			NeverConnected: true, Health: "enrolled " + d.EnrolledAt.UTC().Format(time.RFC3339) + "; its hub has not connected: run si hub on it"})
	}
	return rows
}

func hubVitalsCommand() *Command {
	var asJSON bool
	return &Command{
		Name:  "vitals",
		Short: "print this machine's hardware vitals once (every GPU through NVML, CPU, memory)",
		Long: `si hub vitals reads every NVIDIA GPU through NVML (utilization, memory,
temperature, power draw and limit, clocks, throttle reasons) and the CPU load
and memory, and prints them once. Without NVML it says "no GPU" and why, and
still prints CPU and memory.`,
		Flags: func(fs *flag.FlagSet) {
			fs.BoolVar(&asJSON, "json", false, "print the reading as JSON")
		},
		Run: func(_ context.Context, env *Env, args []string) error {
			if len(args) > 0 {
				return errors.New("si hub vitals takes no arguments")
			}
			r := vitals.NewReader(nil)
			defer r.Close()
			v := r.Read()
			if asJSON {
				return printProtoJSON(env.Stdout, v, true)
			}
			fmt.Fprintf(env.Stdout, "cpu: load %.2f over %d CPUs, memory %.1f/%.1f GiB used\n", v.CpuLoad, v.CpuCount,
				float64(v.MemoryUsedBytes)/(1<<30), float64(v.MemoryTotalBytes)/(1<<30))
			if !v.NvmlAvailable {
				fmt.Fprintln(env.Stdout, v.NoGpuReason)
				return nil
			}
			fmt.Fprintf(env.Stdout, "nvml: driver %s, %d GPU(s)\n", v.DriverVersion, len(v.Gpus))
			if v.NoGpuReason != "" {
				fmt.Fprintln(env.Stdout, v.NoGpuReason)
			}
			for _, g := range v.Gpus {
				fmt.Fprintln(env.Stdout, vitals.Summary(g))
			}
			return nil
		},
	}
}
