// Package agent is the hub end of the tunnel: it dials the bridge over QUIC
// with the device certificate, says hello, sends heartbeats with vitals and
// pre-warm signals, and carries escalations and usage records. A supervisor
// reconnects after any interruption; escalations and usage records wait in
// the agent while the link is down and are delivered after it comes back,
// none lost, and none run twice (the bridge keys both by the hub's own ids).
package agent

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/superinstance/mesh/hub/bridge"
	"github.com/superinstance/mesh/hub/wire"
	meshv1 "github.com/superinstance/mesh/proto/meshv1"
)

// retryDelay spaces resends of an escalation the cloud could not take.
const retryDelay = time.Second

// Options configures an Agent.
type Options struct {
	// Bridge is the bridge's host:port.
	Bridge string
	// TLS comes from pki.ClientTLS, or Certs.TLS when Certs is set.
	TLS *tls.Config
	// Certs, when set, is renewed over the link at two thirds of its life
	// (see renew.go); nil leaves renewal to the operator.
	Certs *Certs
	// Vitals reads the hardware; nil sends heartbeats without vitals.
	Vitals func() *meshv1.HardwareVitals
	// Interval between heartbeats. Default 5s; the bridge's hello ack may set it.
	Interval time.Duration
	// DeviceID, Version and Hostname go into the hello (the bridge trusts
	// only the certificate for the device id).
	DeviceID, Version, Hostname string
	Prewarm                     Prewarm
	Backoff                     Backoff
	Logger                      *slog.Logger
}

// Status is the agent's link as of now.
type Status struct {
	Connected   bool
	Sessions    int // control sessions established since start
	LastRTT     time.Duration
	Acked       uint64 // heartbeats acked in all sessions
	Queued      int    // escalations waiting for a result
	QueuedUsage int
	LastError   string
}

// Agent is a hub's tunnel client.
type Agent struct {
	opts Options

	mu       sync.Mutex
	conn     *quic.Conn
	up       chan struct{} // closed while connected
	st       Status
	pending  map[string]*escalation
	order    []string // pending request ids, oldest first
	usage    map[string]*meshv1.UsageRecord
	usageOrd []string
	ctlSend  func(*meshv1.HubMessage) error // nil while disconnected
}

type escalation struct {
	req      *meshv1.EscalationRequest
	out      chan *meshv1.EscalationResponse
	lastStep uint32
	running  bool
}

// New returns an agent; Run connects it.
func New(opts Options) *Agent {
	if opts.Interval == 0 {
		opts.Interval = 5 * time.Second
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if opts.Certs != nil && opts.TLS != nil {
		opts.TLS = opts.Certs.TLS(opts.TLS)
	}
	return &Agent{opts: opts, up: make(chan struct{}), pending: map[string]*escalation{}, usage: map[string]*meshv1.UsageRecord{}}
}

// Status returns the link's state.
func (a *Agent) Status() Status {
	a.mu.Lock()
	defer a.mu.Unlock()
	s := a.st
	s.Queued, s.QueuedUsage = len(a.order), len(a.usageOrd)
	return s
}

// WaitConnected blocks until the agent is connected or ctx ends.
func (a *Agent) WaitConnected(ctx context.Context) error {
	a.mu.Lock()
	up := a.up
	a.mu.Unlock()
	select {
	case <-up:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Run keeps the agent connected until ctx is cancelled.
func (a *Agent) Run(ctx context.Context) error {
	for {
		err := a.session(ctx)
		if ctx.Err() != nil {
			return nil
		}
		wait := a.opts.Backoff.Next()
		a.mu.Lock()
		if err != nil {
			a.st.LastError = err.Error()
		}
		a.mu.Unlock()
		a.opts.Logger.Warn("bridge link down; reconnecting", "error", err, "in", wait)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
	}
}

func (a *Agent) session(ctx context.Context) error {
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	conn, err := quic.DialAddr(dctx, a.opts.Bridge, a.opts.TLS, &quic.Config{
		KeepAlivePeriod: 5 * time.Second, MaxIdleTimeout: 20 * time.Second, HandshakeIdleTimeout: 5 * time.Second,
	})
	cancel()
	if err != nil {
		return fmt.Errorf("dial %s: %w", a.opts.Bridge, err)
	}
	defer func() { _ = conn.CloseWithError(bridge.CodeShutdown, "hub closing") }()
	ctl, err := conn.OpenStreamSync(ctx)
	if err != nil {
		return err
	}
	hello := &meshv1.Hello{DeviceId: a.opts.DeviceID, Version: a.opts.Version, Hostname: a.opts.Hostname}
	if a.opts.Vitals != nil {
		hello.Vitals = a.opts.Vitals()
		for _, g := range hello.Vitals.GetGpus() {
			hello.Gpus = append(hello.Gpus, &meshv1.GPUInfo{Index: g.GetIndex(), Uuid: g.GetUuid(), Name: g.GetName(), MemoryTotalBytes: g.GetMemoryTotalBytes()})
		}
	}
	if _, err := ctl.Write([]byte{bridge.StreamControl}); err != nil {
		return err
	}
	if err := wire.Write(ctl, &meshv1.HubMessage{Body: &meshv1.HubMessage_Hello{Hello: hello}}); err != nil {
		return err
	}
	r := wire.NewReader(ctl)
	var ack meshv1.BridgeMessage
	_ = ctl.SetReadDeadline(time.Now().Add(10 * time.Second))
	if err := r.Read(&ack); err != nil {
		return fmt.Errorf("hello: %w", err)
	}
	_ = ctl.SetReadDeadline(time.Time{})
	if ack.GetHelloAck() == nil {
		return errors.New("bridge did not ack the hello")
	}
	interval := a.opts.Interval
	if ms := ack.GetHelloAck().GetHeartbeatIntervalMs(); ms > 0 && a.opts.Interval == 5*time.Second {
		interval = time.Duration(ms) * time.Millisecond
	}
	a.opts.Backoff.Reset()

	var wmu sync.Mutex
	send := func(m *meshv1.HubMessage) error {
		wmu.Lock()
		defer wmu.Unlock()
		return wire.Write(ctl, m)
	}
	backlog := a.connected(conn, send)
	defer a.disconnected(conn)
	a.opts.Logger.Info("connected to bridge", "bridge", a.opts.Bridge, "device", ack.GetHelloAck().GetDeviceId())
	for _, u := range backlog {
		if err := send(&meshv1.HubMessage{Body: &meshv1.HubMessage_Usage{Usage: u}}); err != nil {
			return err
		}
	}

	sctx, stop := context.WithCancel(ctx)
	defer stop()
	errc := make(chan error, 2)
	go func() { errc <- a.heartbeats(sctx, interval, send) }()
	go func() { errc <- a.readAcks(r) }()
	if a.opts.Certs != nil {
		go a.renewLoop(sctx, conn)
	}
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
		return nil
	case <-conn.Context().Done():
		return context.Cause(conn.Context())
	}
}

func (a *Agent) heartbeats(ctx context.Context, interval time.Duration, send func(*meshv1.HubMessage) error) error {
	t := time.NewTicker(interval)
	defer t.Stop()
	var seq uint64
	for {
		seq++
		hb := &meshv1.Heartbeat{Seq: seq, SentUnixNano: time.Now().UnixNano()}
		a.mu.Lock()
		hb.LastRttMicros = uint32(a.st.LastRTT / time.Microsecond)
		hb.QueuedEscalations, hb.QueuedUsage = uint32(len(a.order)), uint32(len(a.usageOrd))
		a.mu.Unlock()
		if a.opts.Vitals != nil {
			hb.Vitals = a.opts.Vitals()
		}
		if err := send(&meshv1.HubMessage{Body: &meshv1.HubMessage_Heartbeat{Heartbeat: hb}}); err != nil {
			return err
		}
		if sig := a.opts.Prewarm.Observe(hb.Vitals, time.Now()); sig != nil {
			if err := send(&meshv1.HubMessage{Body: &meshv1.HubMessage_Prewarm{Prewarm: sig}}); err != nil {
				return err
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

func (a *Agent) readAcks(r *wire.Reader) error {
	for {
		var m meshv1.BridgeMessage
		if err := r.Read(&m); err != nil {
			return err
		}
		switch b := m.GetBody().(type) {
		case *meshv1.BridgeMessage_HeartbeatAck:
			rtt := time.Since(time.Unix(0, b.HeartbeatAck.GetEchoSentUnixNano()))
			a.mu.Lock()
			a.st.LastRTT = rtt
			a.st.Acked++
			a.mu.Unlock()
		case *meshv1.BridgeMessage_UsageAck:
			a.mu.Lock()
			id := b.UsageAck.GetEventId()
			if _, ok := a.usage[id]; ok {
				delete(a.usage, id)
				a.usageOrd = remove(a.usageOrd, id)
			}
			a.mu.Unlock()
		}
	}
}

// connected marks the link up, restarts the escalations that waited and
// returns the usage records to deliver again. Records queued after this go
// out through send directly.
func (a *Agent) connected(conn *quic.Conn, send func(*meshv1.HubMessage) error) []*meshv1.UsageRecord {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.conn, a.ctlSend = conn, send
	a.st.Connected = true
	a.st.Sessions++
	a.st.LastError = ""
	close(a.up)
	for _, id := range a.order {
		a.start(conn, a.pending[id])
	}
	backlog := make([]*meshv1.UsageRecord, 0, len(a.usageOrd))
	for _, id := range a.usageOrd {
		backlog = append(backlog, a.usage[id])
	}
	return backlog
}

func (a *Agent) disconnected(conn *quic.Conn) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.conn == conn {
		a.conn = nil
		a.ctlSend = nil
		a.st.Connected = false
		a.up = make(chan struct{})
	}
}

// Escalate sends a request to the cloud and returns the channel its
// responses arrive on, closed after the result or an error. A request
// without an id gets one. While the link is down the request waits; after a
// reconnect it is sent again under the same id, and the bridge attaches it
// to the workflow it already started.
func (a *Agent) Escalate(req *meshv1.EscalationRequest) (string, <-chan *meshv1.EscalationResponse, error) {
	if req.GetRequestId() == "" {
		req.RequestId = newID()
	}
	if err := wire.ValidateEscalation(req); err != nil {
		return "", nil, err
	}
	e := &escalation{req: req, out: make(chan *meshv1.EscalationResponse, 64)}
	a.mu.Lock()
	defer a.mu.Unlock()
	if _, dup := a.pending[req.RequestId]; dup {
		return "", nil, fmt.Errorf("request %s is already in flight", req.RequestId)
	}
	a.pending[req.RequestId] = e
	a.order = append(a.order, req.RequestId)
	if a.conn != nil {
		a.start(a.conn, e)
	}
	return req.RequestId, e.out, nil
}

// start runs e on conn; a.mu is held.
func (a *Agent) start(conn *quic.Conn, e *escalation) {
	if e.running {
		return
	}
	e.running = true
	go func() {
		err := a.runEscalation(conn, e)
		a.mu.Lock()
		defer a.mu.Unlock()
		e.running = false
		if err == nil {
			return
		}
		a.opts.Logger.Info("escalation interrupted; it will be resent", "request", e.req.GetRequestId(), "error", err)
		switch {
		case a.conn == nil:
			// The next session resends it.
		case a.conn != conn:
			a.start(a.conn, e)
		default:
			// The link is up but the cloud could not take it: try again shortly.
			time.AfterFunc(retryDelay, func() {
				a.mu.Lock()
				defer a.mu.Unlock()
				if a.conn != nil && a.pending[e.req.GetRequestId()] == e {
					a.start(a.conn, e)
				}
			})
		}
	}()
}

// runEscalation sends e on a new stream and relays its responses. It returns
// nil once e is finished (result or error delivered).
func (a *Agent) runEscalation(conn *quic.Conn, e *escalation) error {
	s, err := conn.OpenStreamSync(conn.Context())
	if err != nil {
		return err
	}
	defer s.CancelRead(0)
	if _, err := s.Write([]byte{bridge.StreamEscalation}); err != nil {
		return err
	}
	if err := wire.Write(s, e.req); err != nil {
		return err
	}
	if err := s.Close(); err != nil {
		return err
	}
	r := wire.NewReader(s)
	for {
		var resp meshv1.EscalationResponse
		if err := r.Read(&resp); err != nil {
			return err
		}
		if err := wire.ValidateResponse(&resp); err != nil {
			return err
		}
		switch resp.GetBody().(type) {
		case *meshv1.EscalationResponse_Progress:
			a.mu.Lock()
			fresh := resp.GetProgress().GetStep() > e.lastStep
			if fresh {
				e.lastStep = resp.GetProgress().GetStep()
			}
			a.mu.Unlock()
			if fresh {
				e.out <- &resp
			}
		case *meshv1.EscalationResponse_Error:
			if resp.GetError().GetCode() == bridge.ErrCodeUnavailable {
				return errors.New(resp.GetError().GetMessage())
			}
			a.finish(e, &resp)
			return nil
		default:
			a.finish(e, &resp)
			return nil
		}
	}
}

func (a *Agent) finish(e *escalation, final *meshv1.EscalationResponse) {
	a.mu.Lock()
	delete(a.pending, e.req.GetRequestId())
	a.order = remove(a.order, e.req.GetRequestId())
	a.mu.Unlock()
	e.out <- final
	close(e.out)
}

// RecordUsage queues a usage record for the ledger; it is sent now if the
// link is up and again after every reconnect until the bridge acks it.
func (a *Agent) RecordUsage(u *meshv1.UsageRecord) error {
	if u.GetEventId() == "" {
		u.EventId = newID()
	}
	if err := wire.ValidateHub(&meshv1.HubMessage{Body: &meshv1.HubMessage_Usage{Usage: u}}); err != nil {
		return err
	}
	a.mu.Lock()
	if _, dup := a.usage[u.EventId]; !dup {
		a.usage[u.EventId] = u
		a.usageOrd = append(a.usageOrd, u.EventId)
	}
	send := a.ctlSend
	a.mu.Unlock()
	if send != nil {
		// A failed send leaves the record queued for the next session.
		_ = send(&meshv1.HubMessage{Body: &meshv1.HubMessage_Usage{Usage: u}})
	}
	return nil
}

func remove(ids []string, id string) []string {
	for i, x := range ids {
		if x == id {
			return append(ids[:i], ids[i+1:]...)
		}
	}
	return ids
}

func newID() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// DialTemporal opens a stream to the bridge's Temporal proxy on the current
// link, waiting for the link while ctx allows: it is the gRPC dialer of the
// hub's Temporal worker, whose only credential is the device certificate
// the link was made with.
func (a *Agent) DialTemporal(ctx context.Context, _ string) (net.Conn, error) {
	if err := a.WaitConnected(ctx); err != nil {
		return nil, fmt.Errorf("bridge %s not connected: %w", a.opts.Bridge, err)
	}
	a.mu.Lock()
	conn := a.conn
	a.mu.Unlock()
	if conn == nil {
		return nil, fmt.Errorf("bridge %s: link went down", a.opts.Bridge)
	}
	s, err := conn.OpenStreamSync(ctx)
	if err != nil {
		return nil, fmt.Errorf("bridge %s: %w", a.opts.Bridge, err)
	}
	if _, err := s.Write([]byte{bridge.StreamTemporal}); err != nil {
		s.CancelRead(0)
		s.CancelWrite(0)
		return nil, fmt.Errorf("bridge %s: %w", a.opts.Bridge, err)
	}
	return bridge.StreamConn(conn, s), nil
}
