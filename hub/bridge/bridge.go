// Package bridge is the cloud end of the hub tunnel: a QUIC server that
// accepts only hubs with a valid device certificate, registers them, acks
// their heartbeats, turns each escalation stream into a ConsensusWorkflow
// billed to the device's account, and each pre-warm signal into a warm-up
// workflow.
package bridge

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/superinstance/mesh/hub/wire"
	"github.com/superinstance/mesh/internal/pki"
	"github.com/superinstance/mesh/internal/store"
	meshv1 "github.com/superinstance/mesh/proto/meshv1"
)

// Stream kinds: the first byte a hub writes on a stream it opens.
const (
	StreamControl    byte = 'C'
	StreamEscalation byte = 'E'
)

// Application error codes on connection close.
const (
	CodeShutdown   quic.ApplicationErrorCode = 0
	CodeProtocol   quic.ApplicationErrorCode = 1
	CodeReplaced   quic.ApplicationErrorCode = 2
	CodeUnexpected quic.ApplicationErrorCode = 3
	CodeRevoked    quic.ApplicationErrorCode = 4
	CodeExpired    quic.ApplicationErrorCode = 5
	CodeTooMany    quic.ApplicationErrorCode = 6

	streamAbandoned quic.StreamErrorCode = 1
	streamTimedOut  quic.StreamErrorCode = 2
	streamRefused   quic.StreamErrorCode = 3 // a second control stream on one connection
)

// Escalator runs one escalation for a device and streams its responses.
type Escalator interface {
	Escalate(ctx context.Context, id pki.Identity, req *meshv1.EscalationRequest, send func(*meshv1.EscalationResponse) error) error
}

// UnavailableError is a failure the hub should retry later (Temporal
// unreachable, say), as opposed to a request that failed for good.
type UnavailableError struct{ Err error }

func (e *UnavailableError) Error() string { return "unavailable: " + e.Err.Error() }
func (e *UnavailableError) Unwrap() error { return e.Err }

// Escalation error codes. A hub resends a request that got CodeUnavailable.
const (
	ErrCodeInvalid     = "invalid_request"
	ErrCodeFailed      = "failed"
	ErrCodeUnavailable = "unavailable"
)

// Prewarmer reacts to a hub's pre-warm signal.
type Prewarmer interface {
	Prewarm(ctx context.Context, id pki.Identity, sig *meshv1.PrewarmSignal) error
}

// Options configures a Bridge.
type Options struct {
	// Addr is the UDP address to listen on, e.g. 0.0.0.0:7443.
	Addr string
	// TLS comes from pki.ServerTLS.
	TLS *tls.Config
	// Store registers hubs and their usage.
	Store *store.Store
	// Escalator and Prewarmer act on hub requests; nil refuses them.
	Escalator Escalator
	Prewarmer Prewarmer
	// Renewer relays certificate renewals (StreamRenew) to the CA role;
	// nil refuses them.
	Renewer Renewer
	// Enroller relays a new hub's enrollment (pki.EnrollALPN, a one-time
	// token and a certificate request) to the CA role. With EnrollCA, the
	// mesh CA's certificate PEM that the bridge shows such hubs after its
	// own, the bridge takes enrollments; without either it does not, and
	// a hello offering that ALPN fails its handshake.
	Enroller Enroller
	EnrollCA []byte
	// EnrollPerMinute bounds the enrollment attempts one source (an IP
	// address, an IPv6 /56) may make a minute. Default 6.
	EnrollPerMinute int
	// EnrollConcurrent bounds the enrollments in progress in all. Default 32.
	EnrollConcurrent int
	// Flush starts a flush of the account's unbilled usage when a hub's
	// record brings it to its flush threshold, as the cloud's ledger
	// activity does; nil leaves it to the hourly sweep.
	Flush func(ctx context.Context, account string) error
	// Proxy serves the hubs' Temporal workers (StreamTemporal streams);
	// nil refuses them.
	Proxy *Proxy
	// Name identifies this bridge in the hub registry. Default: the listen address.
	Name string
	// HeartbeatInterval is what hubs are told to use. Default 5s.
	HeartbeatInterval time.Duration
	// FlushInterval is how often heartbeats are written to PostgreSQL. Default 1s.
	FlushInterval time.Duration
	// RefreshInterval bounds how long a hub whose reading has not changed
	// goes unwritten: a flush writes a hub whose vitals moved past the
	// deadband (readingChanged) at once, and any other once this much less
	// half a heartbeat interval has passed since its row was last written
	// (with 5 s heartbeats, every heartbeat), which keeps its last_seen
	// well inside hub.Policy's MaxSilence. Default 5s.
	RefreshInterval time.Duration
	// RecheckInterval is how often connected hubs' certificates are checked
	// again, so that a revoked device is dropped without waiting for it to
	// reconnect. Default 30s.
	RecheckInterval time.Duration
	// MaxConnsPerDevice bounds the connections one device may hold open at
	// once; more are closed with CodeTooMany. A hub needs one (two while a
	// reconnect replaces a connection the bridge has not seen end). Default 4.
	MaxConnsPerDevice int
	// MaxStreamsPerConn bounds the streams a connection may have open at
	// once (QUIC's MaxIncomingStreams): a hub that opens more waits for one
	// to end. Default 100.
	MaxStreamsPerConn int
	// StreamReadTimeout bounds how long the bridge waits for what a stream
	// must send first: its kind, then the hello or the escalation request.
	// After the hello a control stream must deliver a message at least
	// every max(StreamReadTimeout, 12 x HeartbeatInterval). Default 10s.
	StreamReadTimeout time.Duration
	// NoTCP turns off the TCP fallback listener (on by default, on the same
	// port number as the UDP socket).
	NoTCP bool
	// StatelessResetKey lets any replica (or a restart) end a hub's
	// connection it does not know at once. Default: derived from the TLS
	// server key, so replicas sharing the server certificate agree.
	StatelessResetKey *quic.StatelessResetKey
	// Metrics receives counters; nil creates a private set.
	Metrics *Metrics
	Logger  *slog.Logger
}

// Bridge serves hubs.
type Bridge struct {
	opts Options
	udp  *net.UDPConn
	tr   *quic.Transport
	ln   *quic.Listener
	tcp  *tcpListener // nil with Options.NoTCP
	m    *Metrics
	// enrollLim bounds enrollment connections (pki.EnrollALPN).
	enrollLim *enrollLimits
	// instance names this process in the registry's bridge_beats.
	instance string
	// reclaim stands in for the store's ReclaimHubs in tests; nil is the store's.
	reclaim func(ctx context.Context, instance string, deviceIDs []string) (int64, error)

	mu    sync.Mutex
	conns map[string]*hubConn // by device id, once a control stream said hello
	all   map[Conn]struct{}
	peers map[string]map[Conn]peer // every connection, by device id, from accept on
	beats map[string]beat
	// flushMu serializes flushes and flushClosing, and guards written
	// (what the registry last took of each connected hub) and what follows.
	flushMu sync.Mutex
	written map[string]writtenRow
	// unwritten holds each hub's latest reading the deadband held back,
	// for flushClosing.
	unwritten map[string]beat
	// spare is the beats map of the flush before last, emptied, and rows
	// the last flush's rows: both reused, so that a flush allocates little.
	spare  map[string]beat
	rows   []store.HubBeat
	docAts []time.Time // when each row's vitals document was marshaled
	// controls are the control streams past their hello; one sweep ends
	// those silent for longer than the idle bound, so a heartbeat arms no
	// read deadline (a timer per hub) of its own.
	controls map[*controlStream]struct{}
	// prewarmed holds the devices whose pre-warm signal was acted on in
	// prewarmMinute (Unix minutes).
	prewarmed     map[string]int64
	prewarmMinute int64
	wg            sync.WaitGroup
}

// prewarmDue reports whether device's pre-warm signal at now is the first
// of its minute, and records it. The map holds only the current minute's
// devices: it is emptied when the minute turns, so it never holds more than
// the devices connected in one minute, and no signal costs a scan.
func (b *Bridge) prewarmDue(device string, now time.Time) bool {
	minute := now.Unix() / 60
	b.mu.Lock()
	defer b.mu.Unlock()
	if minute != b.prewarmMinute {
		clear(b.prewarmed)
		b.prewarmMinute = minute
	}
	if _, ok := b.prewarmed[device]; ok {
		return false
	}
	b.prewarmed[device] = minute
	return true
}

// controlStream is what the idle sweep knows of a control stream.
type controlStream struct {
	conn Conn
	last atomic.Int64 // when its last message arrived, Unix nanoseconds
}

type hubConn struct {
	conn        Conn
	connectedAt time.Time
	id          pki.Identity
	serial      string
}

// peer is what the bridge knows of a connection from its certificate.
type peer struct {
	id       pki.Identity
	serial   string
	notAfter time.Time
	// notBefore lets renew refuse a renewal asked for too early.
	notBefore time.Time
}

// Listen opens the bridge's UDP socket.
func Listen(opts Options) (*Bridge, error) {
	if opts.TLS == nil || opts.Store == nil {
		return nil, errors.New("bridge: TLS and Store are required")
	}
	if opts.MaxConnsPerDevice < 0 || opts.MaxStreamsPerConn < 0 || opts.StreamReadTimeout < 0 || opts.RecheckInterval < 0 || opts.RefreshInterval < 0 {
		return nil, errors.New("bridge: connection and stream limits, the stream read timeout, the re-check interval and the refresh interval must be positive (0 takes the default)")
	}
	if opts.HeartbeatInterval == 0 {
		opts.HeartbeatInterval = 5 * time.Second
	}
	if opts.FlushInterval == 0 {
		opts.FlushInterval = time.Second
	}
	if opts.RefreshInterval == 0 {
		opts.RefreshInterval = 5 * time.Second
	}
	if opts.RecheckInterval == 0 {
		opts.RecheckInterval = 30 * time.Second
	}
	if opts.MaxConnsPerDevice == 0 {
		opts.MaxConnsPerDevice = 4
	}
	if opts.MaxStreamsPerConn == 0 {
		opts.MaxStreamsPerConn = 100
	}
	if opts.StreamReadTimeout == 0 {
		opts.StreamReadTimeout = 10 * time.Second
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if opts.Metrics == nil {
		opts.Metrics = NewMetrics()
	}
	if opts.EnrollPerMinute < 0 || opts.EnrollConcurrent < 0 {
		return nil, errors.New("bridge: enrollment limits must be positive (0 takes the default)")
	}
	if opts.Enroller != nil && opts.EnrollCA != nil {
		tc, err := enrollTLS(opts.TLS, opts.EnrollCA)
		if err != nil {
			return nil, err
		}
		opts.TLS = tc
	}
	resetKey := opts.StatelessResetKey
	if resetKey == nil {
		k, err := DeriveResetKey(opts.TLS)
		if err != nil {
			return nil, err
		}
		resetKey = k
	}
	udp, tcp, err := listenPair(opts.Addr, opts.NoTCP)
	if err != nil {
		return nil, err
	}
	// As quic-go advises for a server with many connections; past the
	// kernel's net.core.rmem_max this needs that sysctl raised (or root).
	_ = udp.SetReadBuffer(udpBuffer)
	_ = udp.SetWriteBuffer(udpBuffer)
	// The bridge owns its socket so that Serve can release it when it returns.
	// The stateless reset key, the same on every replica, lets a restarted
	// or other replica end a hub's dead connection at its next packet.
	tr := &quic.Transport{Conn: udp, StatelessResetKey: resetKey}
	ln, err := tr.Listen(opts.TLS, &quic.Config{
		KeepAlivePeriod:       5 * time.Second,
		MaxIdleTimeout:        30 * time.Second,
		MaxIncomingStreams:    int64(opts.MaxStreamsPerConn),
		HandshakeIdleTimeout:  5 * time.Second,
		MaxIncomingUniStreams: -1,
	})
	if err != nil {
		_ = udp.Close()
		if tcp != nil {
			_ = tcp.Close()
		}
		return nil, fmt.Errorf("bridge listen %s: %w", opts.Addr, err)
	}
	if opts.Name == "" {
		opts.Name = ln.Addr().String()
	}
	b := &Bridge{opts: opts, udp: udp, tr: tr, ln: ln, m: opts.Metrics, instance: newInstance(),
		enrollLim: newEnrollLimits(opts.EnrollPerMinute, opts.EnrollConcurrent), conns: map[string]*hubConn{},
		all: map[Conn]struct{}{}, peers: map[string]map[Conn]peer{}, beats: map[string]beat{}, controls: map[*controlStream]struct{}{},
		prewarmed: map[string]int64{}, written: map[string]writtenRow{}, unwritten: map[string]beat{}}
	if tcp != nil {
		b.tcp = &tcpListener{ln: tcp, tls: opts.TLS, maxStreams: opts.MaxStreamsPerConn, handshake: 5 * time.Second,
			hello: tcpHelloTimeout, perSource: tcpPerSourceLimit, handshakes: make(chan struct{}, maxTCPHandshakes)}
	}
	return b, nil
}

// maxTCPHandshakes bounds the fallback's TLS handshakes in progress from
// every source together.
const maxTCPHandshakes = 1024

// udpBuffer is the socket buffer quic-go asks for (7 MiB, its wiki's
// "UDP Buffer Sizes").
const udpBuffer = 7 << 20

// listenPair opens the UDP socket and, unless noTCP, the TCP listener on the
// same port number. With port 0 it retries a few times for a number free in
// both.
func listenPair(addr string, noTCP bool) (*net.UDPConn, net.Listener, error) {
	ua, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return nil, nil, fmt.Errorf("bridge address %q: %w", addr, err)
	}
	for try := 0; ; try++ {
		udp, err := net.ListenUDP("udp", ua)
		if err != nil {
			return nil, nil, fmt.Errorf("bridge listen %s (UDP): %w", addr, err)
		}
		if noTCP {
			return udp, nil, nil
		}
		port := udp.LocalAddr().(*net.UDPAddr).Port
		host := ""
		if ua.IP != nil {
			host = ua.IP.String()
		}
		tcp, err := net.Listen("tcp", net.JoinHostPort(host, fmt.Sprint(port)))
		if err == nil {
			return udp, tcp, nil
		}
		_ = udp.Close()
		if ua.Port != 0 || try >= 10 {
			return nil, nil, fmt.Errorf("bridge listen %s (TCP, the fallback for hubs without UDP): %w", addr, err)
		}
	}
}

// DeriveResetKey derives the QUIC stateless reset key from the bridge's
// server key, so replicas that share a server certificate share the key
// without configuring one.
func DeriveResetKey(tc *tls.Config) (*quic.StatelessResetKey, error) {
	if len(tc.Certificates) == 0 || tc.Certificates[0].PrivateKey == nil {
		return nil, errors.New("bridge: the TLS configuration has no server key to derive the stateless reset key from: set StatelessResetKey")
	}
	der, err := x509.MarshalPKCS8PrivateKey(tc.Certificates[0].PrivateKey)
	if err != nil {
		return nil, fmt.Errorf("bridge: server key: %w", err)
	}
	k := quic.StatelessResetKey(sha256.Sum256(append([]byte("si-mesh bridge stateless reset key v1\x00"), der...)))
	return &k, nil
}

// Addr is the address the bridge listens on.
func (b *Bridge) Addr() net.Addr { return b.ln.Addr() }

// TCPAddr is the fallback's TCP address, nil with Options.NoTCP.
func (b *Bridge) TCPAddr() net.Addr {
	if b.tcp == nil {
		return nil
	}
	return b.tcp.ln.Addr()
}

// Metrics are the bridge's counters.
func (b *Bridge) Metrics() *Metrics { return b.m }

// Serve accepts hubs until ctx is cancelled, then closes every connection
// and writes the last heartbeats.
func (b *Bridge) Serve(ctx context.Context) error {
	// Alive in the registry before the first hub registers on it.
	b.beat(ctx)
	liveDone := make(chan struct{})
	go func() { defer close(liveDone); b.live(ctx) }()
	flushDone := make(chan struct{})
	go func() {
		defer close(flushDone)
		t := time.NewTicker(b.opts.FlushInterval)
		defer t.Stop()
		recheck := time.NewTicker(b.opts.RecheckInterval)
		defer recheck.Stop()
		sweep := time.NewTicker(max(b.controlIdle()/8, time.Millisecond))
		defer sweep.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				b.flush(ctx)
			case <-recheck.C:
				b.recheck(ctx)
			case now := <-sweep.C:
				b.sweepIdle(now)
			}
		}
	}()
	accepted := make(chan Conn)
	actx, stopAccept := context.WithCancel(ctx)
	defer stopAccept()
	errc := make(chan error, 2)
	go func() {
		for {
			c, err := b.ln.Accept(actx)
			if err != nil {
				errc <- err
				return
			}
			select {
			case accepted <- QUICConn(c):
			case <-actx.Done():
				_ = c.CloseWithError(CodeShutdown, "bridge shutting down")
			}
		}
	}()
	if b.tcp != nil {
		go func() { errc <- b.tcp.accept(actx, accepted) }()
	}
	var err error
loop:
	for {
		var c Conn
		select {
		case c = <-accepted:
		case err = <-errc:
			break loop
		case <-ctx.Done():
			break loop
		}
		b.mu.Lock()
		b.all[c] = struct{}{}
		b.mu.Unlock()
		b.m.transport(c.Transport())
		b.wg.Add(1)
		go func() {
			defer b.wg.Done()
			b.serveConn(ctx, c)
			b.mu.Lock()
			delete(b.all, c)
			b.mu.Unlock()
		}()
	}
	stopAccept()
	if b.tcp != nil {
		_ = b.tcp.ln.Close()
	}
	_ = b.ln.Close()
	b.mu.Lock()
	open := make([]Conn, 0, len(b.all))
	for c := range b.all {
		open = append(open, c)
	}
	b.mu.Unlock()
	for _, c := range open {
		_ = c.CloseWithError(CodeShutdown, "bridge shutting down")
	}
	// Let the close frames go out before the socket does.
	for _, c := range open {
		select {
		case <-c.Context().Done():
		case <-time.After(2 * time.Second):
		}
	}
	b.wg.Wait()
	_ = b.tr.Close()
	_ = b.udp.Close()
	<-flushDone
	b.flush(context.Background())
	<-liveDone
	b.stopped()
	if ctx.Err() != nil {
		return nil
	}
	return err
}

func (b *Bridge) serveConn(ctx context.Context, c Conn) {
	if c.TLS().NegotiatedProtocol == pki.EnrollALPN {
		// A hub with no certificate yet: it may enroll, and nothing else.
		b.enroll(ctx, c)
		return
	}
	id, serial, err := pki.PeerIdentity(c.TLS())
	if err != nil {
		// The handshake's VerifyConnection already refused such peers.
		_ = c.CloseWithError(CodeProtocol, err.Error())
		return
	}
	log := b.opts.Logger.With("device", id.DeviceID, "account", id.Account, "remote", c.RemoteAddr().String())
	leaf := c.TLS().PeerCertificates[0]
	if err := b.admit(c, peer{id: id, serial: serial, notAfter: leaf.NotAfter, notBefore: leaf.NotBefore}); err != nil {
		log.Warn("connection refused", "error", err)
		_ = c.CloseWithError(CodeTooMany, err.Error())
		return
	}
	defer b.release(c, id.DeviceID)
	var controlOpen atomic.Bool
	refusedLogged := false
	for {
		// Streams end with the connection, which Serve closes on shutdown.
		s, err := c.AcceptStream(c.Context())
		if err != nil {
			return
		}
		// A stream that names no kind in time frees its slot.
		_ = s.SetReadDeadline(time.Now().Add(b.opts.StreamReadTimeout))
		kind := make([]byte, 1)
		if _, err := io.ReadFull(s, kind); err != nil {
			s.CancelRead(streamTimedOut)
			s.CancelWrite(streamTimedOut)
			continue
		}
		switch kind[0] {
		case StreamControl:
			// One control stream a connection at a time: a second one's
			// hello would register the hub again, and its end mark it
			// offline while the first still beats.
			if !controlOpen.CompareAndSwap(false, true) {
				if !refusedLogged {
					refusedLogged = true // once a connection: a hub may retry at line rate
					log.Warn("second control stream refused")
				}
				s.CancelRead(streamRefused)
				s.CancelWrite(streamRefused)
				continue
			}
			b.wg.Add(1)
			go func() {
				defer b.wg.Done()
				defer controlOpen.Store(false)
				b.control(ctx, c, s, id, serial, log)
			}()
		case StreamEscalation:
			b.wg.Add(1)
			go func() {
				defer b.wg.Done()
				b.escalation(ctx, s, id, log)
			}()
		case StreamRenew:
			b.wg.Add(1)
			go func() {
				defer b.wg.Done()
				b.renew(ctx, c, s, id, log)
			}()
		case StreamTemporal:
			if b.opts.Proxy == nil {
				s.CancelRead(streamAbandoned)
				s.CancelWrite(streamAbandoned)
				continue
			}
			b.opts.Proxy.ServeConn(id, StreamConn(c, s))
		default:
			log.Warn("unknown stream kind", "kind", kind[0])
			_ = c.CloseWithError(CodeProtocol, "unknown stream kind")
			return
		}
	}
}

// admit records a connection under its device, refusing one past the
// device's cap.
func (b *Bridge) admit(c Conn, p peer) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	mine := b.peers[p.id.DeviceID]
	if len(mine) >= b.opts.MaxConnsPerDevice {
		return fmt.Errorf("device %s already has %d connections open, the most allowed: close one first", p.id.DeviceID, len(mine))
	}
	if mine == nil {
		mine = map[Conn]peer{}
		b.peers[p.id.DeviceID] = mine
	}
	mine[c] = p
	return nil
}

func (b *Bridge) release(c Conn, deviceID string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	delete(b.peers[deviceID], c)
	if len(b.peers[deviceID]) == 0 {
		delete(b.peers, deviceID)
	}
}

// register makes h its device's connection, closing the one it replaces,
// and reports whether it did. A device's connections are ordered by their
// registrations' times (store.HubConnected dates each later than the last
// one written), not by when their hellos get here: two may come back from
// the registry in either order. An older one arriving second is closed
// instead of replacing the newer, which would close that and, as it ended,
// mark the hub offline while the older still beat. So is one dated the
// same, which no registration is: a connection refused here never marks
// the hub offline.
func (b *Bridge) register(h *hubConn) bool {
	b.mu.Lock()
	old := b.conns[h.id.DeviceID]
	if old != nil && old.conn != h.conn && !old.connectedAt.Before(h.connectedAt) {
		b.mu.Unlock()
		_ = h.conn.CloseWithError(CodeReplaced, "replaced by a newer connection")
		return false
	}
	b.conns[h.id.DeviceID] = h
	b.mu.Unlock()
	if old != nil && old.conn != h.conn {
		_ = old.conn.CloseWithError(CodeReplaced, "replaced by a newer connection")
	}
	return true
}

// control serves a hub's control stream: hello, then heartbeats, pre-warm
// signals and usage records until the stream or connection ends.
func (b *Bridge) control(ctx context.Context, c Conn, s Stream, id pki.Identity, serial string, log *slog.Logger) {
	r := wire.NewReader(s)
	var first meshv1.HubMessage
	if err := r.Read(&first); err != nil {
		_ = c.CloseWithError(CodeProtocol, "no hello")
		return
	}
	hello := first.GetHello()
	if hello == nil || wire.ValidateHub(&first) != nil {
		_ = c.CloseWithError(CodeProtocol, "first message must be a valid hello")
		return
	}
	if hello.GetDeviceId() != "" && hello.GetDeviceId() != id.DeviceID {
		// The certificate decides who this is; a payload claiming otherwise changes nothing.
		log.Warn("hello claims another device id; using the certificate's", "claimed", hello.GetDeviceId())
	}
	now, seenBefore, err := b.opts.Store.HubConnected(ctx, store.Hub{DeviceID: id.DeviceID, Version: hello.GetVersion(), Hostname: hello.GetHostname(), Bridge: b.opts.Name,
		BridgeInstance: b.instance, Features: hello.GetFeatures()})
	if err != nil {
		log.Error("register hub", "error", err)
		_ = c.CloseWithError(CodeUnexpected, "registry unavailable")
		return
	}
	if !b.register(&hubConn{conn: c, connectedAt: now, id: id, serial: serial}) {
		log.Info("connection closed: the device has a newer one")
		return
	}
	b.m.hubConnected(seenBefore)
	log.Info("hub connected", "version", hello.GetVersion(), "gpus", len(hello.GetGpus()))
	defer func() {
		b.mu.Lock()
		if cur := b.conns[id.DeviceID]; cur != nil && cur.conn == c {
			delete(b.conns, id.DeviceID)
		}
		b.mu.Unlock()
		// Offline first: queuing the last reading may wait for a flush
		// in progress.
		_ = b.opts.Store.HubDisconnected(context.Background(), id.DeviceID, now)
		b.flushClosing(id.DeviceID)
		b.m.hubDisconnected()
		log.Info("hub disconnected")
	}()
	if hello.GetVitals() != nil {
		b.note(id.DeviceID, hello.GetVitals(), 0)
	}
	var mu sync.Mutex // one writer at a time on the stream
	w := wire.NewWriter(s)
	send := func(m *meshv1.BridgeMessage) error {
		mu.Lock()
		defer mu.Unlock()
		return w.Write(m)
	}
	if err := send(&meshv1.BridgeMessage{Body: &meshv1.BridgeMessage_HelloAck{HelloAck: &meshv1.HelloAck{
		DeviceId: id.DeviceID, Account: id.Account, ServerTimeUnixNano: time.Now().UnixNano(),
		HeartbeatIntervalMs: uint32(b.opts.HeartbeatInterval / time.Millisecond),
	}}}); err != nil {
		return
	}
	// One ack message, refilled for every heartbeat by this goroutine.
	ack := &meshv1.HeartbeatAck{}
	ackMsg := &meshv1.BridgeMessage{Body: &meshv1.BridgeMessage_HeartbeatAck{HeartbeatAck: ack}}
	// From here the idle sweep bounds the silence, not a read deadline.
	cs := &controlStream{conn: c}
	cs.last.Store(time.Now().UnixNano())
	b.mu.Lock()
	b.controls[cs] = struct{}{}
	b.mu.Unlock()
	defer func() {
		b.mu.Lock()
		delete(b.controls, cs)
		b.mu.Unlock()
	}()
	_ = s.SetReadDeadline(time.Time{})
	dec := wire.NewHubDecoder(r)
	for {
		m, err := dec.Read()
		if err != nil {
			return
		}
		cs.last.Store(time.Now().UnixNano())
		if err := wire.ValidateHub(m); err != nil {
			log.Warn("invalid message from hub", "error", err)
			_ = c.CloseWithError(CodeProtocol, "invalid message: "+err.Error())
			return
		}
		switch body := m.GetBody().(type) {
		case *meshv1.HubMessage_Heartbeat:
			hb := body.Heartbeat
			ack.Seq, ack.EchoSentUnixNano, ack.ServerTimeUnixNano = hb.GetSeq(), hb.GetSentUnixNano(), time.Now().UnixNano()
			if err := send(ackMsg); err != nil {
				return
			}
			b.m.heartbeat(hb.GetLastRttMicros())
			b.note(id.DeviceID, hb.GetVitals(), hb.GetLastRttMicros())
		case *meshv1.HubMessage_Prewarm:
			b.m.prewarm()
			// One signal a minute per device is acted on (the warm-up
			// workflow is the minute's anyway); later ones in that minute
			// are dropped here, before any adapter lookup.
			if b.opts.Prewarmer != nil && b.prewarmDue(id.DeviceID, time.Now()) {
				if err := b.opts.Prewarmer.Prewarm(ctx, id, body.Prewarm); err != nil {
					log.Warn("pre-warm", "error", err)
				}
			}
		case *meshv1.HubMessage_Usage:
			u := body.Usage
			err := b.opts.Store.RecordHubUsage(ctx, store.HubUsage{
				EventID: u.GetEventId(), DeviceID: id.DeviceID, Project: u.GetProject(), Model: u.GetModel(),
				PromptTokens: int(u.GetPromptTokens()), CompletionTokens: int(u.GetCompletionTokens()),
				ServedAt: time.Unix(0, u.GetAtUnixNano()),
			})
			if err == nil {
				// Billed to the device's account, keyed by the hub's own event
				// id. The hub served it already: it is billed even on a
				// suspended account, and it counts against the ceiling with
				// the account's open holds (store.Usage.Served).
				var cs []store.Charge
				cs, err = b.opts.Store.LogUsageBatch(ctx, []store.Usage{{
					EventID: "hub/" + id.DeviceID + "/" + u.GetEventId(), Account: id.Account, Project: orDefault(u.GetProject()),
					Model: u.GetModel(), PromptTokens: int64(u.GetPromptTokens()), CompletionTokens: int64(u.GetCompletionTokens()),
					Served: true,
				}})
				if err == nil && len(cs) == 1 && cs[0].Suspended {
					log.Warn("hub usage brought its account to the credit ceiling; new runs are refused", "event", u.GetEventId(),
						"unbilled", cs[0].Unbilled.String())
				}
				if err == nil && len(cs) == 1 && cs[0].FlushDue && b.opts.Flush != nil {
					// The usage is logged whatever this answers; the sweep
					// flushes what a failed start leaves.
					if ferr := b.opts.Flush(ctx, id.Account); ferr != nil {
						log.Warn("starting a flush after hub usage", "error", ferr)
					}
				}
			}
			if err != nil {
				// No ack: the hub keeps the record and sends it again.
				log.Error("record usage", "error", err)
				continue
			}
			if err := send(&meshv1.BridgeMessage{Body: &meshv1.BridgeMessage_UsageAck{UsageAck: &meshv1.UsageAck{EventId: u.GetEventId()}}}); err != nil {
				return
			}
		case *meshv1.HubMessage_Hello:
			log.Warn("second hello ignored")
		}
	}
}

// controlIdle is how long a control stream may go without a message after
// its hello.
func (b *Bridge) controlIdle() time.Duration {
	return max(b.opts.StreamReadTimeout, 12*b.opts.HeartbeatInterval)
}

// sweepIdle closes the connection of every control stream that has had no
// message for controlIdle: at most an eighth of it late, from one ticker
// for every hub.
func (b *Bridge) sweepIdle(now time.Time) {
	idle := b.controlIdle()
	var silent []Conn
	b.mu.Lock()
	for cs := range b.controls {
		if now.UnixNano()-cs.last.Load() > int64(idle) {
			silent = append(silent, cs.conn)
			delete(b.controls, cs)
		}
	}
	b.mu.Unlock()
	for _, c := range silent {
		_ = c.CloseWithError(CodeProtocol, fmt.Sprintf("no message on the control stream for %s", idle))
	}
}

// recheck closes every connection whose certificate has expired or no
// longer passes the registry's check (revoked since it connected), whatever
// streams it opened.
func (b *Bridge) recheck(ctx context.Context) {
	type open struct {
		conn Conn
		peer
	}
	b.mu.Lock()
	var conns []open
	for _, mine := range b.peers {
		for c, p := range mine {
			conns = append(conns, open{c, p})
		}
	}
	b.mu.Unlock()
	now := time.Now()
	live := conns[:0]
	seen := map[store.CertRef]bool{}
	var refs []store.CertRef // each certificate once, however many connections it holds
	for _, o := range conns {
		if now.After(o.notAfter) {
			b.opts.Logger.Warn("closing a hub whose certificate expired", "device", o.id.DeviceID, "not_after", o.notAfter)
			_ = o.conn.CloseWithError(CodeExpired, "certificate expired on "+o.notAfter.UTC().Format(time.RFC3339)+": renew it (si device renew)")
			continue
		}
		live = append(live, o)
		if r := o.ref(); !seen[r] {
			seen[r] = true
			refs = append(refs, r)
		}
	}
	// One query per recheckBatch certificates, not one per hub.
	refused := map[store.CertRef]error{}
	for len(refs) > 0 {
		n := min(len(refs), recheckBatch)
		got, err := b.opts.Store.CheckCerts(ctx, refs[:n])
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			// The registry could not be asked (the database is down): a blip
			// must not drop every hub; the next re-check asks again.
			b.opts.Logger.Warn("re-checking hubs' certificates failed; keeping their connections", "certificates", n, "error", err)
		}
		for r, err := range got {
			refused[r] = err
		}
		refs = refs[n:]
	}
	for _, o := range live {
		if err := refused[o.ref()]; err != nil {
			b.opts.Logger.Warn("closing a hub whose certificate no longer passes", "device", o.id.DeviceID, "error", err)
			_ = o.conn.CloseWithError(CodeRevoked, "certificate revoked")
		}
	}
}

// recheckBatch bounds the certificates one re-check query asks about.
const recheckBatch = 5000

func (p peer) ref() store.CertRef {
	return store.CertRef{DeviceID: p.id.DeviceID, Account: p.id.Account, Serial: p.serial}
}

// beat is a hub's latest heartbeat, kept until the next flush.
type beat struct {
	at     time.Time
	rtt    uint32
	vitals *meshv1.HardwareVitals
}

// note keeps a hub's latest heartbeat for the next flush; the work of
// turning it into a registry row is done once per flush, not per heartbeat.
func (b *Bridge) note(deviceID string, v *meshv1.HardwareVitals, rtt uint32) {
	b.mu.Lock()
	b.beats[deviceID] = beat{at: time.Now(), rtt: rtt, vitals: v}
	b.mu.Unlock()
}

// flushClosing forgets what was written of a hub whose control stream
// ended, and queues its last reading (one the deadband held back
// included), so that the next flush writes it whatever the deadband says.
func (b *Bridge) flushClosing(deviceID string) {
	b.flushMu.Lock()
	defer b.flushMu.Unlock()
	delete(b.written, deviceID)
	held, ok := b.unwritten[deviceID]
	delete(b.unwritten, deviceID)
	if !ok {
		return
	}
	b.mu.Lock()
	if cur, newer := b.beats[deviceID]; !newer || cur.at.Before(held.at) {
		b.beats[deviceID] = held
	}
	b.mu.Unlock()
}

// writtenRow is what the registry last took of a hub: its row, vitals
// document included, when that document was marshaled, and when the
// vitals history last took a reading of it from this bridge (zero for
// not yet).
type writtenRow struct {
	row    store.HubBeat
	docAt  time.Time
	histAt time.Time
}

// docRefresh bounds how old the vitals document of a hub whose figures
// stay inside the deadband may grow: past it, a refresh marshals the
// reading anew.
const docRefresh = 30 * time.Second

// flushTimeout bounds one flush's statements: a hung database holds up
// the next flush, not the bridge.
const flushTimeout = 5 * time.Second

// flush writes the hubs' latest heartbeats to the registry: those whose
// reading changed past the deadband since it was last written, and those
// due a refresh. An idle hub beating every second costs a row about every
// RefreshInterval, not every FlushInterval.
func (b *Bridge) flush(parent context.Context) {
	b.flushMu.Lock()
	defer b.flushMu.Unlock()
	b.mu.Lock()
	if len(b.beats) == 0 {
		b.mu.Unlock()
		return
	}
	pending := b.beats
	if b.spare != nil {
		b.beats, b.spare = b.spare, nil
	} else {
		b.beats = make(map[string]beat, len(pending))
	}
	b.mu.Unlock()
	// A hub due a refresh within half a heartbeat is refreshed now: with
	// beats every RefreshInterval or so, waiting for the full interval
	// would refresh every other beat.
	due := b.opts.RefreshInterval - b.opts.HeartbeatInterval/2
	rows, docAts := b.rows[:0], b.docAts[:0]
	for id, bt := range pending {
		row := store.HubBeat{DeviceID: id, At: bt.at, RTTMicros: int(bt.rtt)}
		v := bt.vitals
		if v != nil {
			row.NVML = v.GetNvmlAvailable()
			row.CPULoad = v.GetCpuLoad()
			row.GPUCount = len(v.GetGpus())
			for _, g := range v.GetGpus() {
				row.GPULoad = max(row.GPULoad, float64(g.GetUtilizationPercent())/100)
				row.GPUTempC = max(row.GPUTempC, float64(g.GetTemperatureC()))
			}
		}
		last, ok := b.written[id]
		changed := !ok || readingChanged(last.row, row)
		if !changed && bt.at.Sub(last.row.At) < due {
			b.unwritten[id] = bt
			continue
		}
		// The history takes a reading a VitalsInterval at most; one this
		// bridge saw it take less than that before is not offered again.
		row.HistoryKept = ok && !last.histAt.IsZero() && bt.at.Sub(last.histAt) < store.VitalsInterval
		docAt := bt.at
		switch {
		case v == nil:
		case !changed && last.row.Vitals != "" && bt.at.Sub(last.docAt)+due < docRefresh:
			// A refresh inside the deadband: the figures are this beat's,
			// the document (memory, power, clocks of every GPU) the one
			// last marshaled (the row holds it: it is not sent again),
			// which the next refresh, due after this one, still finds
			// under docRefresh old.
			row.Vitals, row.VitalsKept, docAt = last.row.Vitals, true, last.docAt
		default:
			doc, _ := protojson.Marshal(v)
			row.Vitals = string(doc)
		}
		rows = append(rows, row)
		docAts = append(docAts, docAt)
	}
	b.rows, b.docAts = rows, docAts
	defer func() {
		clear(b.rows) // written keeps the documents it needs; the rest go
		clear(pending)
		b.spare = pending
	}()
	if len(rows) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(parent, flushTimeout)
	defer cancel()
	saved, err := b.opts.Store.SaveHeartbeatsUpdated(ctx, rows)
	if err != nil && saved != nil {
		// The rows were written; the vitals history after them was not
		// (its next reading is a minute away at most), or its prune failed.
		msg := "save the hubs' vitals history"
		if pe := (*store.PruneError)(nil); errors.As(err, &pe) {
			msg = "prune the hubs' vitals history"
		}
		b.opts.Logger.Warn(msg, "error", err, "hubs", len(rows))
		err = nil
	}
	if err != nil {
		if parent.Err() == nil { // not the bridge stopping: its last flush writes them
			b.opts.Logger.Error("save heartbeats", "error", err, "hubs", len(rows))
		}
		// Keep the newest reading of each hub for the next try.
		b.mu.Lock()
		for id, bt := range pending {
			if cur, ok := b.beats[id]; !ok || cur.at.Before(bt.at) {
				b.beats[id] = bt
			}
		}
		b.mu.Unlock()
		return
	}
	b.mu.Lock()
	for i, r := range rows {
		delete(b.unwritten, r.DeviceID)
		// Only rows the registry took are remembered (one whose last_seen
		// was already later, from another bridge or the database's clock,
		// is written again at the next flush), and only for hubs still
		// connected here: one that closed meanwhile was forgotten by
		// flushClosing.
		if _, ok := b.conns[r.DeviceID]; ok && saved[r.DeviceID]&store.RowSaved != 0 {
			histAt := b.written[r.DeviceID].histAt
			if saved[r.DeviceID]&store.HistorySaved != 0 {
				histAt = r.At
			}
			b.written[r.DeviceID] = writtenRow{row: r, docAt: docAts[i], histAt: histAt}
		} else {
			delete(b.written, r.DeviceID)
		}
	}
	b.mu.Unlock()
}

// readingChanged reports whether a hub's reading moved far enough from the
// one last written to be written at once: a GPU or NVML appearing or going,
// the busiest GPU's load by 2 points, the hottest GPU by 1 °C, the CPU load
// by 0.05, the round trip by a fifth (and 200 µs), or the round trip
// becoming known. Near placement's limits (hub.Policy: load over 0.95, 85 °C)
// any change is written: from 90 % load or 80 °C on, in either reading.
func readingChanged(last, now store.HubBeat) bool {
	points := func(load float64) int { return int(math.Round(load * 100)) }
	nearLimits := max(last.GPULoad, now.GPULoad) >= 0.90 || max(last.GPUTempC, now.GPUTempC) >= 80
	if nearLimits && (points(now.GPULoad) != points(last.GPULoad) || now.GPUTempC != last.GPUTempC) {
		return true
	}
	rtt := now.RTTMicros - last.RTTMicros
	return now.GPUCount != last.GPUCount || now.NVML != last.NVML ||
		abs(points(now.GPULoad)-points(last.GPULoad)) >= 2 || math.Abs(now.GPUTempC-last.GPUTempC) >= 1 ||
		math.Abs(now.CPULoad-last.CPULoad) >= 0.05 ||
		(last.RTTMicros == 0) != (now.RTTMicros == 0) ||
		(abs(rtt) >= 200 && abs(rtt)*5 >= last.RTTMicros)
}

func abs(n int) int {
	if n < 0 {
		return -n
	}
	return n
}

// escalation serves one escalation stream.
func (b *Bridge) escalation(ctx context.Context, s Stream, id pki.Identity, log *slog.Logger) {
	defer s.Close()
	// The request is all the bridge reads: a hub that never ends its side
	// must not keep the stream, and its slot, open.
	defer s.CancelRead(streamTimedOut)
	var req meshv1.EscalationRequest
	if err := wire.NewReader(s).Read(&req); err != nil {
		s.CancelWrite(streamAbandoned)
		return
	}
	var mu sync.Mutex
	send := func(r *meshv1.EscalationResponse) error {
		mu.Lock()
		defer mu.Unlock()
		r.RequestId = req.GetRequestId()
		return wire.Write(s, r)
	}
	fail := func(code, msg string) {
		b.m.escalation("error")
		_ = send(&meshv1.EscalationResponse{Body: &meshv1.EscalationResponse_Error{Error: &meshv1.EscalationError{Code: code, Message: msg}}})
	}
	if err := wire.ValidateEscalation(&req); err != nil {
		fail(ErrCodeInvalid, err.Error())
		return
	}
	if b.opts.Escalator == nil {
		fail(ErrCodeUnavailable, "this bridge does not run escalations")
		return
	}
	// The stream's context ends when the hub goes away; the workflow goes on.
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-s.Context().Done():
			cancel()
		case <-sctx.Done():
		}
	}()
	err := b.opts.Escalator.Escalate(sctx, id, &req, send)
	if sctx.Err() != nil {
		// The bridge is shutting down or the hub left: say nothing, so the
		// hub sends the request again (to the same workflow) after it reconnects.
		s.CancelWrite(streamAbandoned)
		return
	}
	if err != nil {
		log.Warn("escalation", "request", req.GetRequestId(), "workflow_id", EscalationWorkflowID(id.DeviceID, req.GetRequestId()), "error", err)
		var ue *UnavailableError
		var re *RefusedError
		switch {
		case errors.As(err, &ue):
			fail(ErrCodeUnavailable, err.Error())
		case errors.As(err, &re):
			fail(ErrCodeInvalid, err.Error())
		default:
			fail(ErrCodeFailed, err.Error())
		}
		return
	}
	b.m.escalation("ok")
}

func orDefault(project string) string {
	if project == "" {
		return "default"
	}
	return project
}
