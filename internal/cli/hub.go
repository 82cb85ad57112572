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
	"os"
	"path/filepath"
	"text/tabwriter"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	"github.com/superinstance/mesh/hub"
	"github.com/superinstance/mesh/hub/agent"
	"github.com/superinstance/mesh/hub/node"
	"github.com/superinstance/mesh/hub/vitals"
	"github.com/superinstance/mesh/internal/config"
	"github.com/superinstance/mesh/internal/pki"
	"github.com/superinstance/mesh/internal/store"
	"github.com/superinstance/mesh/workers"
)

func hubCommand() *Command {
	var (
		o                  node.Options
		certPath, keyPath  string
		caPath, serverName string
		secretFile         string
		l                  config.LLM
		noWorker           bool
		noRenew            bool
	)
	return &Command{
		Name:  "hub",
		Short: "run this machine as a hub: tunnel to the bridge, vitals, local worker",
		Long: `si hub dials the cloud bridge over QUIC with the device certificate
(si device enroll issues it), says hello, sends a heartbeat with NVML vitals
every interval and a pre-warm signal when a GPU runs hot (load over 0.8 or
over 80°C, with hysteresis), and carries escalations (si escalate) and usage
records. It reconnects by itself after any interruption; what waits meanwhile
is delivered afterwards. It also runs the hub's Temporal worker on
hub.<device-id> and serves a local API for si escalate on loopback, which
answers only requests that carry the secret in --api-secret-file (created
0600 at start, read by si escalate) with a localhost Host and JSON body.

The worker holds no Temporal address or credential: it reaches Temporal
through the bridge, over the same tunnel and device certificate, and the
bridge lets it poll and answer hub.<device-id> and nothing else.`,
		Flags: func(fs *flag.FlagSet) {
			fs.StringVar(&o.Agent.Bridge, "bridge", "127.0.0.1:7443", "the bridge's host:port (UDP)")
			fs.StringVar(&certPath, "cert", "", "device certificate (default ~/.si/devices/<id>/cert.pem)")
			fs.StringVar(&keyPath, "key", "", "device key (default ~/.si/devices/<id>/key.pem)")
			fs.StringVar(&caPath, "ca", "", "mesh CA certificate (default ~/.si/devices/<id>/ca.pem)")
			fs.StringVar(&serverName, "server-name", "", "name in the bridge's certificate (default: the --bridge host)")
			fs.StringVar(&o.DeviceID, "id", "", "device id (default: the certificate's)")
			fs.DurationVar(&o.Agent.Interval, "interval", 5*time.Second, "heartbeat interval (under a minute: the bridge closes a control stream silent for 12 of its heartbeat intervals, 60 s by default)")
			fs.StringVar(&o.APIListen, "api-listen", "127.0.0.1:7450", "local API for si escalate (loopback)")
			fs.StringVar(&secretFile, "api-secret-file", "", "the local API's secret, created 0600 if missing; si escalate reads it (default: "+agent.SecretFile+" beside --cert, ~/.si/devices/<id>/"+agent.SecretFile+")")
			fs.BoolVar(&noWorker, "no-worker", false, "do not run the hub's Temporal worker")
			fs.BoolVar(&noRenew, "no-renew", false, "do not renew the device certificate over the link (by default it is renewed at two thirds of its life with a new key made here, and --cert and --key are rewritten)")
			fs.StringVar(&o.Namespace, "namespace", "default", "the mesh's Temporal namespace (the bridge refuses any other)")
			l.Register(fs, "http://127.0.0.1:8300/v1")
		},
		Run: func(ctx context.Context, env *Env, args []string) error {
			if len(args) > 0 {
				return fmt.Errorf("unexpected argument %q", args[0])
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
			o.APISecretFile = secretFile
			if o.APISecretFile == "" {
				dir := deviceDir(id.DeviceID)
				if certPath != "" {
					dir = filepath.Dir(certPath)
				}
				o.APISecretFile = filepath.Join(dir, agent.SecretFile)
			}
			o.Agent.Version, o.Agent.Hostname = Version, hostname()
			r := vitals.NewReader(nil)
			defer r.Close()
			o.Agent.Vitals = r.Read
			o.Agent.Logger = slog.New(slog.NewTextHandler(env.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
			if !noWorker {
				o.Inference = l.Inference()
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
			fmt.Fprintf(env.Stdout, "hub %s (account %s) -> bridge %s; local API http://%s; %s\n",
				id.DeviceID, id.Account, o.Agent.Bridge, n.APIAddr(), worker)
			<-ctx.Done()
			return nil
		},
		Sub: []*Command{hubVitalsCommand()},
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
	if serverName == "" {
		host, _, err := net.SplitHostPort(bridgeAddr)
		if err != nil {
			return nil, pki.Identity{}, fmt.Errorf("--bridge %q: %w", bridgeAddr, err)
		}
		serverName = host
	}
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
	)
	return &Command{
		Name:  "hubs",
		Short: "list hubs with their vitals and health, as the bridge sees them",
		Flags: func(fs *flag.FlagSet) {
			db.Register(fs)
			fs.BoolVar(&asJSON, "json", false, "print JSON")
		},
		Run: func(ctx context.Context, env *Env, _ []string) error {
			st, err := db.Open(ctx)
			if err != nil {
				return err
			}
			defer st.Close()
			hubs, err := st.Hubs(ctx)
			if err != nil {
				return err
			}
			now := time.Now()
			type row struct {
				store.Hub
				Healthy bool   `json:"healthy"`
				Health  string `json:"health"`
			}
			rows := make([]row, 0, len(hubs))
			for _, h := range hubs {
				ok, why := hub.Policy{}.Check(h, now)
				if ok {
					why = "healthy"
				}
				rows = append(rows, row{h, ok, why})
			}
			if asJSON {
				return printJSON(env.Stdout, rows)
			}
			if len(rows) == 0 {
				fmt.Fprintln(env.Stdout, "no hub has connected yet")
				return nil
			}
			tw := tabwriter.NewWriter(env.Stdout, 0, 2, 2, ' ', 0)
			fmt.Fprintln(tw, "DEVICE\tACCOUNT\tLINK\tLAST SEEN\tRTT\tGPUS\tGPU LOAD\tGPU TEMP\tCPU\tHEALTH")
			for _, r := range rows {
				link := "offline"
				if r.Connected {
					link = "online"
				}
				gpus := fmt.Sprint(r.GPUCount)
				if !r.NVML {
					gpus = "no GPU"
				}
				rtt := "-"
				if r.RTTMicros > 0 {
					rtt = fmt.Sprintf("%.2fms", float64(r.RTTMicros)/1000)
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s ago\t%s\t%s\t%.0f%%\t%.0f°C\t%.0f%%\t%s\n", r.DeviceID, r.Account, link,
					now.Sub(r.LastSeen).Round(time.Second), rtt, gpus, r.GPULoad*100, r.GPUTempC, r.CPULoad*100, r.Health)
			}
			return tw.Flush()
		},
	}
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
				b, err := protojson.MarshalOptions{Multiline: true, EmitUnpopulated: true}.Marshal(v)
				if err != nil {
					return err
				}
				fmt.Fprintln(env.Stdout, string(b))
				return nil
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
