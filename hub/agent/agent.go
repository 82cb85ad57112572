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
	"strings"
	"sync"
	"sync/atomic"
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
	// Bridge is the bridge's host:port, or several, comma separated: after
	// a link fails the agent dials the next.
	Bridge string
	// Protocol is "auto" (the default: QUIC, and TLS 1.3 over TCP on the
	// same port number when QUIC cannot connect), "quic" (never TCP) or
	// "tcp" (only TCP, for a network known to block UDP).
	Protocol string
	// QUICTimeout bounds a QUIC handshake before the agent tries TCP. Default 3s.
	QUICTimeout time.Duration
	// QUICRetry is how often a hub on the TCP fallback tries QUIC again,
	// switching back once it connects. Default 30s.
	QUICRetry time.Duration
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
	// Outbox keeps escalations and usage records on disk until the bridge
	// answers or acks them, and holds what a previous run left waiting,
	// which the agent sends again. Nil keeps them in memory only: a
	// restart loses them.
	Outbox *Outbox
}

// The values of Options.Protocol.
const (
	ProtocolAuto = "auto"
	ProtocolQUIC = "quic"
	ProtocolTCP  = "tcp"
)

// Status is the agent's link as of now.
type Status struct {
	Connected bool
	Sessions  int // control sessions established since start
	// Transport is the current link's: "quic", or "tcp" on the fallback.
	Transport string
	// Bridge is the address of the current (or last) link.
	Bridge  string
	LastRTT time.Duration
	// SmoothedRTT is an EWMA of the heartbeat round trips (gain 1/8, as
	// TCP's SRTT); it is what the bridge shows for this hub.
	SmoothedRTT time.Duration
	Acked       uint64 // heartbeats acked in all sessions
	Queued      int    // escalations waiting for a result
	QueuedUsage int
	// OldestQueued is when the oldest escalation or usage record still
	// waiting was queued; zero when none waits.
	OldestQueued time.Time
	LastError    string
}

// Agent is a hub's tunnel client.
type Agent struct {
	opts Options

	mu      sync.Mutex
	conn    bridge.Conn
	up      chan struct{} // closed while connected
	st      Status
	pending map[string]*escalation
	order   []string // pending request ids, oldest first
	usage   map[string]*meshv1.UsageRecord
	usageAt map[string]time.Time
	// usageSent is when each queued record was last sent again unacked.
	usageSent map[string]time.Time
	usageOrd  []string
	ctlSend   func(*meshv1.HubMessage) error // nil while disconnected

	addrs         []string
	next          int         // index in addrs of the next dial; only Run's goroutine touches it
	predialed     bridge.Conn // a.mu; a QUIC link the fallback's probe opened, for the next session
	predialedAddr string      // a.mu; the address predialed went to
	recent        recentLoRAs // the adapters of the latest escalations, for pre-warm signals
}

type escalation struct {
	req      *meshv1.EscalationRequest
	queued   time.Time
	lastStep uint32
	running  bool
	// log holds every response relayed so far, so that a caller attaching
	// late (si escalate again after a hub restart) sees them all; done is
	// set with the final one, and wake is closed and replaced on each.
	log  []*meshv1.EscalationResponse
	done bool
	wake chan struct{}
}

// New returns an agent; Run connects it. What opts.Outbox holds from an
// earlier run waits in the agent as if just queued.
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
	if opts.Protocol == "" {
		opts.Protocol = ProtocolAuto
	}
	if opts.QUICTimeout == 0 {
		opts.QUICTimeout = 3 * time.Second
	}
	if opts.QUICRetry == 0 {
		opts.QUICRetry = 30 * time.Second
	}
	a := &Agent{opts: opts, addrs: SplitBridges(opts.Bridge), up: make(chan struct{}), pending: map[string]*escalation{},
		usage: map[string]*meshv1.UsageRecord{}, usageAt: map[string]time.Time{}, usageSent: map[string]time.Time{}}
	if o := opts.Outbox; o != nil {
		for _, q := range o.escalations {
			a.pending[q.req.GetRequestId()] = &escalation{req: q.req, queued: q.at, wake: make(chan struct{})}
			a.recent.note(q.req.GetLora())
			a.order = append(a.order, q.req.GetRequestId())
		}
		for _, q := range o.usage {
			a.usage[q.rec.GetEventId()], a.usageAt[q.rec.GetEventId()] = q.rec, q.at
			a.usageOrd = append(a.usageOrd, q.rec.GetEventId())
		}
		o.escalations, o.usage = nil, nil
		if len(a.order)+len(a.usageOrd) > 0 {
			opts.Logger.Info("outbox: resending what waited before the restart", "escalations", len(a.order), "usage_records", len(a.usageOrd), "file", o.Path())
		}
		if o.Skipped > 0 {
			opts.Logger.Warn("outbox: entries that do not decode were moved to its outbox_quarantine table and are not sent", "entries", o.Skipped, "file", o.Path())
		}
	}
	return a
}

// Status returns the link's state.
func (a *Agent) Status() Status {
	a.mu.Lock()
	defer a.mu.Unlock()
	s := a.st
	s.Queued, s.QueuedUsage = len(a.order), len(a.usageOrd)
	if len(a.order) > 0 {
		s.OldestQueued = a.pending[a.order[0]].queued
	}
	if len(a.usageOrd) > 0 {
		if at := a.usageAt[a.usageOrd[0]]; s.OldestQueued.IsZero() || at.Before(s.OldestQueued) {
			s.OldestQueued = at
		}
	}
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

// SplitBridges parses a comma-separated list of bridge addresses.
func SplitBridges(list string) []string {
	var out []string
	for _, a := range strings.Split(list, ",") {
		if a = strings.TrimSpace(a); a != "" {
			out = append(out, a)
		}
	}
	if len(out) == 0 {
		out = []string{""}
	}
	return out
}

// errBackToQUIC ends a session on the TCP fallback once QUIC connects again.
var errBackToQUIC = errors.New("QUIC reachable again: leaving the TCP fallback")

// Run keeps the agent connected until ctx is cancelled.
func (a *Agent) Run(ctx context.Context) error {
	defer func() {
		a.mu.Lock()
		c := a.predialed
		a.predialed = nil
		a.mu.Unlock()
		if c != nil {
			_ = c.CloseWithError(bridge.CodeShutdown, "hub closing")
		}
	}()
	for {
		err := a.session(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if errors.Is(err, errBackToQUIC) {
			a.opts.Logger.Info("switching the bridge link back to QUIC")
			continue
		}
		// The next attempt goes to the next bridge, if there are several.
		a.next = (a.next + 1) % len(a.addrs)
		wait := a.opts.Backoff.Next()
		a.mu.Lock()
		if err != nil {
			a.st.LastError = err.Error()
		}
		a.mu.Unlock()
		a.opts.Logger.Warn("bridge link down; reconnecting", "error", err, "in", wait, "next", a.addrs[a.next])
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
	}
}

func (a *Agent) dialQUIC(ctx context.Context, addr string) (bridge.Conn, error) {
	dctx, cancel := context.WithTimeout(ctx, a.opts.QUICTimeout)
	defer cancel()
	conn, err := quic.DialAddr(dctx, addr, a.opts.TLS, &quic.Config{
		KeepAlivePeriod: 5 * time.Second, MaxIdleTimeout: 20 * time.Second, HandshakeIdleTimeout: a.opts.QUICTimeout,
	})
	if err != nil {
		return nil, err
	}
	return bridge.QUICConn(conn), nil
}

// dial opens a link to addr: QUIC, else TLS over TCP on the same port.
func (a *Agent) dial(ctx context.Context, addr string) (bridge.Conn, error) {
	a.mu.Lock()
	c, cAddr := a.predialed, a.predialedAddr
	a.predialed = nil
	a.mu.Unlock()
	if c != nil {
		if c.Context().Err() == nil && cAddr == addr {
			return c, nil
		}
		_ = c.CloseWithError(bridge.CodeShutdown, "hub closing")
	}
	if a.opts.Protocol == ProtocolTCP {
		dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		c, err := bridge.DialTCP(dctx, addr, a.opts.TLS)
		if err != nil {
			return nil, fmt.Errorf("dial %s (TCP): %w", addr, err)
		}
		return c, nil
	}
	c, qerr := a.dialQUIC(ctx, addr)
	if qerr == nil || a.opts.Protocol == ProtocolQUIC || ctx.Err() != nil {
		if qerr != nil {
			return nil, fmt.Errorf("dial %s (QUIC): %w", addr, qerr)
		}
		return c, nil
	}
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	c, terr := bridge.DialTCP(dctx, addr, a.opts.TLS)
	if terr != nil {
		return nil, fmt.Errorf("dial %s: QUIC: %v; TCP fallback: %w", addr, qerr, terr)
	}
	a.opts.Logger.Warn("QUIC could not connect (UDP blocked?); using the TLS-over-TCP fallback, QUIC is tried again periodically",
		"bridge", addr, "quic_error", qerr, "retry", a.opts.QUICRetry)
	return c, nil
}

// probeQUIC tries QUIC every QUICRetry while the link is on TCP; once it
// connects, it keeps the new link for the next session and returns
// errBackToQUIC, ending this one.
func (a *Agent) probeQUIC(ctx context.Context, addr string) error {
	t := time.NewTicker(a.opts.QUICRetry)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		c, err := a.dialQUIC(ctx, addr)
		if err != nil {
			continue
		}
		if ctx.Err() != nil {
			_ = c.CloseWithError(bridge.CodeShutdown, "hub closing")
			return nil
		}
		a.mu.Lock()
		old := a.predialed
		a.predialed, a.predialedAddr = c, addr
		a.mu.Unlock()
		if old != nil {
			_ = old.CloseWithError(bridge.CodeShutdown, "hub closing")
		}
		return errBackToQUIC
	}
}

func (a *Agent) session(ctx context.Context) error {
	addr := a.addrs[a.next]
	conn, err := a.dial(ctx, addr)
	if err != nil {
		return err
	}
	// This session's heartbeat loop ends (after the connection closed)
	// before the next session's starts: both use the pre-warm state.
	var heartbeating sync.WaitGroup
	defer heartbeating.Wait()
	defer func() { _ = conn.CloseWithError(bridge.CodeShutdown, "hub closing") }()
	ctl, err := conn.OpenStreamSync(ctx)
	if err != nil {
		return err
	}
	hello := &meshv1.Hello{DeviceId: a.opts.DeviceID, Version: a.opts.Version, Hostname: a.opts.Hostname, Features: wire.HubFeatures()}
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
	backlog := a.connected(conn, addr, send)
	defer a.disconnected(conn)
	a.opts.Logger.Info("connected to bridge", "bridge", addr, "transport", conn.Transport(), "device", ack.GetHelloAck().GetDeviceId())
	for _, u := range backlog {
		if err := send(&meshv1.HubMessage{Body: &meshv1.HubMessage_Usage{Usage: u}}); err != nil {
			return err
		}
	}

	sctx, stop := context.WithCancel(ctx)
	defer stop()
	errc := make(chan error, 3)
	var acked atomic.Uint64 // the highest heartbeat seq acked in this session
	heartbeating.Add(1)
	go func() {
		defer heartbeating.Done()
		errc <- a.heartbeats(sctx, interval, send, &acked)
	}()
	go func() { errc <- a.readAcks(r, &acked) }()
	if conn.Transport() == "tcp" && a.opts.Protocol != ProtocolTCP {
		go func() { errc <- a.probeQUIC(sctx, addr) }()
	}
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

// heartbeats sends one heartbeat per interval. A heartbeat not acked within
// one interval (a second at least) ends the session: the link is presumed dead (a
// bridge killed, a path gone) and the agent redials at once instead of
// waiting for QUIC's idle timeout.
func (a *Agent) heartbeats(ctx context.Context, interval time.Duration, send func(*meshv1.HubMessage) error, acked *atomic.Uint64) error {
	t := time.NewTicker(interval)
	defer t.Stop()
	// Under a second the wait is a second: a busy machine must not drop a
	// healthy link.
	wait := max(interval, time.Second)
	type sentBeat struct {
		seq uint64
		at  time.Time
	}
	var sent []sentBeat // unacked, oldest first
	var seq uint64
	for {
		for len(sent) > 0 && sent[0].seq <= acked.Load() {
			sent = sent[1:]
		}
		// A tick may come a little early: a tenth of the wait is slack.
		if len(sent) > 0 && time.Since(sent[0].at) >= wait-wait/10 {
			return fmt.Errorf("heartbeat %d not acked within %s: the link is presumed dead", sent[0].seq, wait)
		}
		seq++
		sent = append(sent, sentBeat{seq, time.Now()})
		hb := &meshv1.Heartbeat{Seq: seq, SentUnixNano: time.Now().UnixNano()}
		a.mu.Lock()
		hb.LastRttMicros = uint32(a.st.SmoothedRTT / time.Microsecond)
		hb.QueuedEscalations, hb.QueuedUsage = uint32(len(a.order)), uint32(len(a.usageOrd))
		a.mu.Unlock()
		if a.opts.Vitals != nil {
			hb.Vitals = a.opts.Vitals()
		}
		if err := send(&meshv1.HubMessage{Body: &meshv1.HubMessage_Heartbeat{Heartbeat: hb}}); err != nil {
			return err
		}
		// A record the bridge did not ack (its store failed, say) is sent
		// again while the link stays up, not only at the next session.
		for _, u := range a.dueUsage(time.Now()) {
			if err := send(&meshv1.HubMessage{Body: &meshv1.HubMessage_Usage{Usage: u}}); err != nil {
				return err
			}
		}
		if sig := a.opts.Prewarm.Observe(hb.Vitals, time.Now()); sig != nil {
			a.namePrewarm(sig)
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

func (a *Agent) readAcks(r *wire.Reader, acked *atomic.Uint64) error {
	for {
		var m meshv1.BridgeMessage
		if err := r.Read(&m); err != nil {
			return err
		}
		switch b := m.GetBody().(type) {
		case *meshv1.BridgeMessage_HeartbeatAck:
			rtt := time.Since(time.Unix(0, b.HeartbeatAck.GetEchoSentUnixNano()))
			if seq := b.HeartbeatAck.GetSeq(); seq > acked.Load() {
				acked.Store(seq)
			}
			a.mu.Lock()
			a.st.LastRTT = rtt
			a.st.SmoothedRTT = smooth(a.st.SmoothedRTT, rtt)
			a.st.Acked++
			a.mu.Unlock()
		case *meshv1.BridgeMessage_UsageAck:
			a.usageAcked(b.UsageAck.GetEventId())
		}
	}
}

// connected marks the link up, restarts the escalations that waited and
// returns the usage records to deliver again. Records queued after this go
// out through send directly.
func (a *Agent) connected(conn bridge.Conn, addr string, send func(*meshv1.HubMessage) error) []*meshv1.UsageRecord {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.conn, a.ctlSend = conn, send
	a.st.Connected = true
	a.st.Transport, a.st.Bridge = conn.Transport(), addr
	a.st.Sessions++
	a.st.LastError = ""
	close(a.up)
	for _, id := range a.order {
		a.start(conn, a.pending[id])
	}
	backlog := make([]*meshv1.UsageRecord, 0, len(a.usageOrd))
	now := time.Now()
	for _, id := range a.usageOrd {
		backlog = append(backlog, a.usage[id])
		a.usageSent[id] = now
	}
	return backlog
}

func (a *Agent) disconnected(conn bridge.Conn) {
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
// without an id gets one. With an outbox the request is on disk before
// Escalate returns. While the link is down the request waits; after a
// reconnect (or a restart of the hub) it is sent again under the same id,
// and the bridge attaches it to the workflow it already started. A request
// whose id is already waiting attaches to it: its responses so far, then
// the rest.
func (a *Agent) Escalate(req *meshv1.EscalationRequest) (string, <-chan *meshv1.EscalationResponse, error) {
	return a.EscalateContext(context.Background(), req)
}

// EscalateContext is Escalate whose channel stops (closed early) when ctx
// ends; the request itself stays with the agent until it is answered.
func (a *Agent) EscalateContext(ctx context.Context, req *meshv1.EscalationRequest) (string, <-chan *meshv1.EscalationResponse, error) {
	if req == nil {
		return "", nil, errors.New("no escalation request")
	}
	if req.GetRequestId() == "" {
		req.RequestId = newID()
	}
	if err := wire.ValidateEscalation(req); err != nil {
		return "", nil, err
	}
	id := req.GetRequestId()
	a.recent.note(req.GetLora())
	a.mu.Lock()
	if e, ok := a.pending[id]; ok {
		a.mu.Unlock()
		return id, a.follow(ctx, e), nil
	}
	a.mu.Unlock()
	now := time.Now()
	if a.opts.Outbox != nil {
		// On disk before the caller hears of it; a second put of the same id keeps the first.
		if err := a.opts.Outbox.put(kindEscalation, id, req, now); err != nil {
			return "", nil, err
		}
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	e, ok := a.pending[id]
	if !ok {
		e = &escalation{req: req, queued: now, wake: make(chan struct{})}
		a.pending[id] = e
		a.order = append(a.order, id)
		if a.conn != nil {
			a.start(a.conn, e)
		}
	}
	return id, a.follow(ctx, e), nil
}

// follow relays e's responses, from the first, until the final one or ctx's end.
func (a *Agent) follow(ctx context.Context, e *escalation) <-chan *meshv1.EscalationResponse {
	out := make(chan *meshv1.EscalationResponse, 16)
	go func() {
		defer close(out)
		for i := 0; ; {
			a.mu.Lock()
			next, done, wake := e.log[i:], e.done, e.wake
			a.mu.Unlock()
			for _, r := range next {
				select {
				case out <- r:
				case <-ctx.Done():
					return
				}
			}
			i += len(next)
			if done {
				return
			}
			select {
			case <-wake:
			case <-ctx.Done():
				return
			}
		}
	}()
	return out
}

// relay adds r to e's log for its followers; a.mu is held.
func (e *escalation) relay(r *meshv1.EscalationResponse, final bool) {
	e.log = append(e.log, r)
	e.done = final
	close(e.wake)
	e.wake = make(chan struct{})
}

// start runs e on conn; a.mu is held.
func (a *Agent) start(conn bridge.Conn, e *escalation) {
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
func (a *Agent) runEscalation(conn bridge.Conn, e *escalation) error {
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
			if resp.GetProgress().GetStep() > e.lastStep {
				e.lastStep = resp.GetProgress().GetStep()
				e.relay(&resp, false)
			}
			a.mu.Unlock()
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

// finish delivers e's final response and forgets e, on disk first: a
// restart between the two sends it again, and the bridge answers it from
// the same workflow.
func (a *Agent) finish(e *escalation, final *meshv1.EscalationResponse) {
	id := e.req.GetRequestId()
	if a.opts.Outbox != nil {
		if err := a.opts.Outbox.remove(kindEscalation, id); err != nil {
			a.opts.Logger.Warn("outbox: could not remove an answered escalation; a restart will ask the bridge again", "request", id, "error", err)
		}
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.pending[id] == e {
		delete(a.pending, id)
		a.order = remove(a.order, id)
	}
	e.relay(final, true)
}

// RecordUsage queues a usage record for the ledger; it is sent now if the
// link is up and again after every reconnect (and restart, with an outbox)
// until the bridge acks it. With an outbox the record is on disk before
// RecordUsage returns. A record without an event id gets one; the ledger
// bills an event id once, so a caller that retries must reuse its id.
func (a *Agent) RecordUsage(u *meshv1.UsageRecord) error {
	if u == nil {
		return errors.New("no usage record")
	}
	if u.GetEventId() == "" {
		u.EventId = newID()
	}
	if err := wire.ValidateHub(&meshv1.HubMessage{Body: &meshv1.HubMessage_Usage{Usage: u}}); err != nil {
		return err
	}
	now := time.Now()
	if a.opts.Outbox != nil {
		if err := a.opts.Outbox.put(kindUsage, u.GetEventId(), u, now); err != nil {
			return err
		}
	}
	a.mu.Lock()
	if q, dup := a.usage[u.EventId]; dup {
		// The record kept under this id is the one billed.
		u = q
	} else {
		a.usage[u.EventId], a.usageAt[u.EventId] = u, now
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

// UsageResend is how long a usage record waits for the bridge's ack before
// it is sent again on the same link.
const UsageResend = 30 * time.Second

// dueUsage returns the queued records sent at least UsageResend ago and not
// acked, and notes them sent now. The ledger bills an event id once, so a
// copy is harmless.
func (a *Agent) dueUsage(now time.Time) []*meshv1.UsageRecord {
	a.mu.Lock()
	defer a.mu.Unlock()
	var due []*meshv1.UsageRecord
	for _, id := range a.usageOrd {
		last := a.usageAt[id]
		if t, ok := a.usageSent[id]; ok && t.After(last) {
			last = t
		}
		if now.Sub(last) >= UsageResend {
			due = append(due, a.usage[id])
			a.usageSent[id] = now
		}
	}
	return due
}

// smooth folds a round-trip sample into an EWMA with gain 1/8 (RFC 6298's
// SRTT); the first sample starts it.
func smooth(srtt, sample time.Duration) time.Duration {
	if srtt == 0 {
		return sample
	}
	return srtt + (sample-srtt)/8
}

// usageAcked forgets a record the bridge has stored and billed.
func (a *Agent) usageAcked(id string) {
	a.mu.Lock()
	_, ok := a.usage[id]
	if ok {
		delete(a.usage, id)
		delete(a.usageAt, id)
		delete(a.usageSent, id)
		a.usageOrd = remove(a.usageOrd, id)
	}
	a.mu.Unlock()
	if ok && a.opts.Outbox != nil {
		if err := a.opts.Outbox.remove(kindUsage, id); err != nil {
			// Sent again after a restart; the ledger ignores the copy.
			a.opts.Logger.Warn("outbox: could not remove an acked usage record", "event", id, "error", err)
		}
	}
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
