package harness

import (
	"context"
	"crypto/tls"
	"net"
	"sync"
	"testing"
	"time"

	"go.temporal.io/sdk/worker"

	"github.com/superinstance/mesh/hub/agent"
	"github.com/superinstance/mesh/hub/bridge"
	"github.com/superinstance/mesh/hub/node"
	"github.com/superinstance/mesh/internal/devstack"
	"github.com/superinstance/mesh/internal/pki"
	"github.com/superinstance/mesh/internal/store"
	meshv1 "github.com/superinstance/mesh/proto/meshv1"
)

// PKI is a mesh CA and the bridge's server certificate for 127.0.0.1.
type PKI struct {
	CA     *pki.CA
	Server tls.Certificate
}

// NewPKI creates a CA in a temporary directory.
func NewPKI(t testing.TB) *PKI {
	t.Helper()
	now := time.Now()
	ca, err := pki.InitCA(t.TempDir(), false, now)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := ca.IssueServer([]string{"127.0.0.1", "localhost"}, 24*time.Hour, now)
	if err != nil {
		t.Fatal(err)
	}
	pair, err := tls.X509KeyPair(srv.CertPEM, srv.KeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return &PKI{CA: ca, Server: pair}
}

// ServerTLS is the bridge's TLS config, checking certificates against s.
func (p *PKI) ServerTLS(t testing.TB, s *store.Store) *tls.Config {
	t.Helper()
	c, err := pki.ServerTLS(p.CA.CertPEM, p.Server, func(ctx context.Context, id pki.Identity, serial string) error {
		return s.CheckCert(ctx, id.DeviceID, id.Account, serial)
	})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// Enroll issues and registers a device certificate, creating its billing
// account if needed, and returns the hub's TLS config.
func (p *PKI) Enroll(t testing.TB, s *store.Store, id pki.Identity, ttl time.Duration) *tls.Config {
	t.Helper()
	EnsureAccount(t, s, id.Account)
	is, err := p.CA.IssueDevice(id, nil, ttl, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if err := s.RegisterCert(context.Background(), id.DeviceID, id.Account, pki.Serial(is.Cert), is.Cert.NotAfter); err != nil {
		t.Fatal(err)
	}
	c, err := pki.ClientTLS(p.CA.CertPEM, is.CertPEM, is.KeyPEM, "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// RunningBridge is a bridge serving until Stop or cleanup.
type RunningBridge struct {
	*bridge.Bridge
	// Proxy is the Temporal proxy the bridge's hubs reach.
	Proxy *bridge.Proxy
	stop  func()
}

// Stop shuts the bridge down and waits for it.
func (b *RunningBridge) Stop() { b.stop() }

// StartBridge serves a bridge on addr ("127.0.0.1:0" for any port) that runs
// escalations and pre-warms on m's Temporal server and proxies hub workers
// to it. It writes heartbeats to the registry every 100ms unless a modifier
// says otherwise.
func StartBridge(t testing.TB, m *Mesh, p *PKI, addr string, mods ...func(*bridge.Options)) *RunningBridge {
	t.Helper()
	px, err := bridge.NewProxy(bridge.ProxyOptions{Upstream: m.Client.WorkflowService(), Namespace: devstack.Namespace})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(px.Close)
	opts := bridge.Options{
		Addr: addr, TLS: p.ServerTLS(t, m.Store), Store: m.Store,
		Escalator: &bridge.Temporal{Client: m.Client, Poll: 20 * time.Millisecond, Projects: m.Store}, Prewarmer: &bridge.Temporal{Client: m.Client, LoRAs: m.Store},
		Proxy:         px,
		FlushInterval: 100 * time.Millisecond, HeartbeatInterval: 200 * time.Millisecond,
	}
	for _, mod := range mods {
		mod(&opts)
	}
	b, err := bridge.Listen(opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := b.Serve(ctx); err != nil {
			t.Errorf("bridge: %v", err)
		}
	}()
	var once sync.Once
	rb := &RunningBridge{Bridge: b, Proxy: px, stop: func() { once.Do(func() { cancel(); <-done }) }}
	t.Cleanup(rb.Stop)
	return rb
}

// StartAgent runs a hub agent until cleanup.
func StartAgent(t testing.TB, opts agent.Options) *agent.Agent {
	t.Helper()
	if opts.Interval == 0 {
		opts.Interval = 100 * time.Millisecond
	}
	if opts.Backoff.Min == 0 {
		opts.Backoff = agent.Backoff{Min: 50 * time.Millisecond, Max: 500 * time.Millisecond}
	}
	a := agent.New(opts)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = a.Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return a
}

// StartHubNode runs a hub as si hub does, until cleanup: its agent dials
// the bridge at addr with tc, and its worker (m's inference) reaches
// Temporal only through the bridge. It returns once the worker polls. mods
// change the agent's options.
func StartHubNode(t testing.TB, m *Mesh, addr string, tc *tls.Config, deviceID string, vitals func() *meshv1.HardwareVitals, mods ...func(*agent.Options)) *node.Node {
	t.Helper()
	ao := agent.Options{Bridge: addr, TLS: tc, DeviceID: deviceID, Vitals: vitals, Interval: 100 * time.Millisecond,
		Backoff: agent.Backoff{Min: 50 * time.Millisecond, Max: 500 * time.Millisecond}}
	for _, mod := range mods {
		mod(&ao)
	}
	n, err := node.Start(node.Options{
		Agent:     ao,
		Inference: m.Inference, Namespace: devstack.Namespace, DeviceID: deviceID,
		Worker: worker.Options{WorkerStopTimeout: 5 * time.Second},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(n.Stop)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := n.WaitWorker(ctx); err != nil {
		t.Fatalf("hub %s: worker did not start through the bridge: %v (%s)", deviceID, err, n.Agent.Status().LastError)
	}
	return n
}

// FixedVitals returns a reader that always reports one GPU at util% and temp °C.
func FixedVitals(util, temp uint32) func() *meshv1.HardwareVitals {
	return func() *meshv1.HardwareVitals {
		return &meshv1.HardwareVitals{NvmlAvailable: true, CpuCount: 2, Gpus: []*meshv1.GPUVitals{{
			Index: 0, Name: "simulated GPU (test)", UtilizationPercent: util, TemperatureC: temp,
			MemoryTotalBytes: 80 << 30,
		}}}
	}
}

// LossyRelay forwards UDP between clients and target, dropping each packet
// with probability loss in either direction. It stops at cleanup.
func LossyRelay(t testing.TB, target string, loss float64, seed uint64) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dst, err := net.ResolveUDPAddr("udp", target)
	if err != nil {
		t.Fatal(err)
	}
	r := &relay{pc: pc, dst: dst, loss: loss, state: seed | 1, upstream: map[string]*net.UDPConn{}}
	go r.run()
	t.Cleanup(r.close)
	return pc.LocalAddr().String()
}

type relay struct {
	pc       net.PacketConn
	dst      *net.UDPAddr
	loss     float64
	mu       sync.Mutex
	state    uint64
	upstream map[string]*net.UDPConn
}

func (r *relay) drop() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.state ^= r.state << 13
	r.state ^= r.state >> 7
	r.state ^= r.state << 17
	return float64(r.state%10000)/10000 < r.loss
}

func (r *relay) run() {
	buf := make([]byte, 65536)
	for {
		n, from, err := r.pc.ReadFrom(buf)
		if err != nil {
			return
		}
		r.mu.Lock()
		up, ok := r.upstream[from.String()]
		if !ok {
			up, err = net.DialUDP("udp", nil, r.dst)
			if err != nil {
				r.mu.Unlock()
				continue
			}
			r.upstream[from.String()] = up
			go r.back(up, from)
		}
		r.mu.Unlock()
		if !r.drop() {
			_, _ = up.Write(buf[:n])
		}
	}
}

func (r *relay) back(up *net.UDPConn, client net.Addr) {
	buf := make([]byte, 65536)
	for {
		n, err := up.Read(buf)
		if err != nil {
			return
		}
		if !r.drop() {
			_, _ = r.pc.WriteTo(buf[:n], client)
		}
	}
}

func (r *relay) close() {
	_ = r.pc.Close()
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, u := range r.upstream {
		_ = u.Close()
	}
}
