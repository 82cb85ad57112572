package bridge

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/yamux"
	"github.com/quic-go/quic-go"
)

// Conn is one hub link: a QUIC connection, or the fallback's TLS 1.3
// connection over TCP with its streams multiplexed (yamux). Both carry the
// same stream kinds and the same mutual-TLS identity; the bridge and the
// agent serve either through this interface.
type Conn interface {
	OpenStreamSync(ctx context.Context) (Stream, error)
	AcceptStream(ctx context.Context) (Stream, error)
	// CloseWithError ends the link and every stream on it; the peer learns
	// code and msg.
	CloseWithError(code quic.ApplicationErrorCode, msg string) error
	// Context ends with the link; its cause says why.
	Context() context.Context
	TLS() tls.ConnectionState
	LocalAddr() net.Addr
	RemoteAddr() net.Addr
	// Transport is "quic" or "tcp".
	Transport() string
}

// Stream is one bidirectional stream of a Conn.
type Stream interface {
	io.ReadWriteCloser
	CancelRead(quic.StreamErrorCode)
	CancelWrite(quic.StreamErrorCode)
	SetDeadline(time.Time) error
	SetReadDeadline(time.Time) error
	SetWriteDeadline(time.Time) error
	// Context ends when the stream's write side is closed or the link ends.
	Context() context.Context
}

var (
	_ Stream = (*quic.Stream)(nil)
	_ Conn   = quicConn{}
	_ Conn   = (*tcpConn)(nil)
)

// QUICConn wraps a QUIC connection as a Conn.
func QUICConn(c *quic.Conn) Conn { return quicConn{c} }

type quicConn struct{ *quic.Conn }

func (c quicConn) OpenStreamSync(ctx context.Context) (Stream, error) {
	s, err := c.Conn.OpenStreamSync(ctx)
	if err != nil {
		return nil, err
	}
	return s, nil
}

func (c quicConn) AcceptStream(ctx context.Context) (Stream, error) {
	s, err := c.Conn.AcceptStream(ctx)
	if err != nil {
		return nil, err
	}
	return s, nil
}

func (c quicConn) TLS() tls.ConnectionState { return c.ConnectionState().TLS }
func (c quicConn) Transport() string        { return "quic" }

// The TCP fallback. A TLS 1.3 connection (the same configuration, so the
// same client-certificate checks, as QUIC's) carries a yamux session; each
// QUIC stream is a yamux stream. An application close is a stream the
// closing side opens with closeMagic, the code and the message, so the peer
// learns why as it would from QUIC's CONNECTION_CLOSE.

// closeMagic starts the stream that carries an application close; no stream
// kind uses it.
const closeMagic byte = 0xCC

// boundMagic starts the stream on which the bridge announces, first thing
// on a link, how many streams the hub may have open (4 bytes, big-endian).
// yamux has no stream limit of its own: a hub that opens more loses the
// link, so the hub's dialer waits for a free one as QUIC's does.
const boundMagic byte = 0xCB

// boundWait bounds how long DialTCP waits for the bridge's bound; a bridge
// that announces none (an older one) leaves the hub unbounded.
const boundWait = 2 * time.Second

// streamPoll is how often a hub waiting for a free stream looks again:
// yamux says how many streams are open but not when one ends.
const streamPoll = 5 * time.Millisecond

// maxCloseMsg bounds the close reason a peer may send.
const maxCloseMsg = 1024

func yamuxConfig(server bool, maxStreams int) *yamux.Config {
	c := yamux.DefaultConfig()
	if server {
		// A stream the bridge has closed and the hub has not lingers this
		// long (yamux's default is 5 minutes) and counts against the bound.
		c.StreamCloseTimeout = 30 * time.Second
		if maxStreams > 0 {
			// More unaccepted streams than the bound is a hub past it.
			c.AcceptBacklog = maxStreams + 1
		}
		// MaxStreamWindowSize stays at yamux's minimum, 256 KiB: with the
		// bound, what one link may buffer is maxStreams times that.
	}
	// The agent's heartbeats and their acks find a dead link; yamux's own
	// keepalive is a backstop for a link idle beyond them.
	c.KeepAliveInterval = 10 * time.Second
	c.ConnectionWriteTimeout = 10 * time.Second
	c.StreamOpenTimeout = 10 * time.Second
	c.LogOutput = io.Discard
	return c
}

type tcpConn struct {
	tls        *tls.Conn
	sess       *yamux.Session
	ctx        context.Context
	cancel     context.CancelCauseFunc
	maxStreams int // 0: no bound
	server     bool
	once       sync.Once
	// opening lets one OpenStreamSync at a time count the open streams
	// and open one, so that concurrent callers cannot pass the bound.
	opening chan struct{}
}

// newTCPConn runs a yamux session over an established TLS connection.
func newTCPConn(tc *tls.Conn, server bool, maxStreams int) (*tcpConn, error) {
	var sess *yamux.Session
	var err error
	if server {
		sess, err = yamux.Server(tc, yamuxConfig(true, maxStreams))
	} else {
		sess, err = yamux.Client(tc, yamuxConfig(false, 0))
	}
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancelCause(context.Background())
	c := &tcpConn{tls: tc, sess: sess, ctx: ctx, cancel: cancel, maxStreams: maxStreams, server: server,
		opening: make(chan struct{}, 1)}
	go func() {
		<-sess.CloseChan()
		cancel(errors.New("link closed (TCP)"))
	}()
	return c, nil
}

// DialTCP is the hub's fallback: TLS 1.3 over TCP to addr with tc (a
// device certificate's configuration), multiplexed like QUIC.
func DialTCP(ctx context.Context, addr string, tc *tls.Config) (Conn, error) {
	cfg := tc.Clone()
	cfg.MinVersion = tls.VersionTLS13
	d := tls.Dialer{Config: cfg}
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	c, err := newTCPConn(nc.(*tls.Conn), false, 0)
	if err != nil {
		_ = nc.Close()
		return nil, err
	}
	if err := c.readBound(ctx); err != nil {
		c.closeLocal(err)
		return nil, err
	}
	// The hub opens every stream but the bridge's notices.
	go c.acceptClose()
	return c, nil
}

// readBound takes the bridge's stream bound, the first stream it opens.
func (c *tcpConn) readBound(ctx context.Context) error {
	wctx, cancel := context.WithTimeout(ctx, boundWait)
	defer cancel()
	s, err := c.sess.AcceptStreamWithContext(wctx)
	if err != nil {
		if ctx.Err() == nil && c.ctx.Err() == nil {
			return nil // a bridge that announces no bound
		}
		return c.linkErr(err)
	}
	defer s.Close()
	_ = s.SetReadDeadline(time.Now().Add(boundWait))
	n, ae, err := readNotice(s)
	switch {
	case err != nil:
		return fmt.Errorf("the bridge's first notice: %w", err)
	case ae != nil:
		return ae
	}
	c.maxStreams = n
	return nil
}

// announceBound tells the hub the link's stream bound.
func (c *tcpConn) announceBound() {
	s, err := c.sess.OpenStream()
	if err != nil {
		return
	}
	defer s.Close()
	var b [5]byte
	b[0] = boundMagic
	binary.BigEndian.PutUint32(b[1:], uint32(c.maxStreams))
	_ = s.SetWriteDeadline(time.Now().Add(time.Second))
	_, _ = s.Write(b[:])
}

// acceptClose waits for the peer's close notice and ends the link with its
// reason. Any other stream the peer opens is refused.
func (c *tcpConn) acceptClose() {
	for {
		s, err := c.sess.AcceptStream()
		if err != nil {
			return
		}
		go func() {
			defer s.Close()
			_ = s.SetReadDeadline(time.Now().Add(5 * time.Second))
			_, ae, err := readNotice(s)
			if err != nil || ae == nil {
				return
			}
			c.closeLocal(ae)
		}()
	}
}

// readNotice decodes a bridge's notice: a stream bound (at most
// maxNoticeBound) or a close notice.
func readNotice(r io.Reader) (int, *quic.ApplicationError, error) {
	var kind [1]byte
	if _, err := io.ReadFull(r, kind[:]); err != nil {
		return 0, nil, err
	}
	switch kind[0] {
	case boundMagic:
		var b [4]byte
		if _, err := io.ReadFull(r, b[:]); err != nil {
			return 0, nil, err
		}
		n := binary.BigEndian.Uint32(b[:])
		if n == 0 || n > maxNoticeBound {
			return 0, nil, fmt.Errorf("stream bound %d, want 1 to %d", n, maxNoticeBound)
		}
		return int(n), nil, nil
	case closeMagic:
		ae, err := readCloseNotice(io.MultiReader(bytes.NewReader(kind[:]), r))
		return 0, ae, err
	}
	return 0, nil, errors.New("not a notice")
}

// maxNoticeBound is the largest stream bound a hub accepts.
const maxNoticeBound = 1 << 16

// readCloseNotice decodes a close notice: closeMagic, the code (4 bytes,
// big-endian), the message's length (2 bytes) and at most maxCloseMsg bytes
// of message.
func readCloseNotice(r io.Reader) (*quic.ApplicationError, error) {
	var hdr [7]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, err
	}
	if hdr[0] != closeMagic {
		return nil, errors.New("not a close notice")
	}
	n := int(binary.BigEndian.Uint16(hdr[5:]))
	if n > maxCloseMsg {
		return nil, fmt.Errorf("close notice of %d bytes, over %d", n, maxCloseMsg)
	}
	msg := make([]byte, n)
	if _, err := io.ReadFull(r, msg); err != nil {
		return nil, err
	}
	return &quic.ApplicationError{Remote: true, ErrorCode: quic.ApplicationErrorCode(binary.BigEndian.Uint32(hdr[1:5])),
		ErrorMessage: strings.ToValidUTF8(string(msg), "?")}, nil
}

func (c *tcpConn) closeLocal(cause error) {
	c.once.Do(func() {
		c.cancel(cause)
		_ = c.sess.Close()
		_ = c.tls.Close()
	})
}

func (c *tcpConn) OpenStreamSync(ctx context.Context) (Stream, error) {
	select {
	case c.opening <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-c.ctx.Done():
		return nil, context.Cause(c.ctx)
	}
	release := func() { <-c.opening }
	if c.maxStreams > 0 && c.sess.NumStreams() >= c.maxStreams {
		t := time.NewTicker(streamPoll)
		for c.sess.NumStreams() >= c.maxStreams {
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
				release()
				return nil, ctx.Err()
			case <-c.ctx.Done():
				t.Stop()
				release()
				return nil, context.Cause(c.ctx)
			}
		}
		t.Stop()
	}
	type res struct {
		s   *yamux.Stream
		err error
	}
	ch := make(chan res, 1)
	go func() {
		s, err := c.sess.OpenStream()
		release()
		ch <- res{s, err}
	}()
	select {
	case r := <-ch:
		if r.err != nil {
			return nil, c.linkErr(r.err)
		}
		return c.wrap(r.s), nil
	case <-ctx.Done():
		go func() {
			if r := <-ch; r.s != nil {
				_ = r.s.Close()
			}
		}()
		return nil, ctx.Err()
	}
}

func (c *tcpConn) AcceptStream(ctx context.Context) (Stream, error) {
	s, err := c.sess.AcceptStreamWithContext(ctx)
	if err != nil {
		return nil, c.linkErr(err)
	}
	if c.maxStreams > 0 && c.sess.NumStreams() > c.maxStreams {
		// The hub was told the bound (its dialer waits for a free
		// stream), so past it is a hub holding the bridge's buffers.
		_ = s.Close()
		msg := fmt.Sprintf("more than %d streams open", c.maxStreams)
		_ = c.CloseWithError(CodeProtocol, msg)
		return nil, &quic.ApplicationError{ErrorCode: CodeProtocol, ErrorMessage: msg}
	}
	return c.wrap(s), nil
}

// linkErr prefers the link's cause (a peer's close reason) to yamux's error.
func (c *tcpConn) linkErr(err error) error {
	if cause := context.Cause(c.ctx); cause != nil {
		return cause
	}
	return err
}

func (c *tcpConn) CloseWithError(code quic.ApplicationErrorCode, msg string) error {
	if len(msg) > maxCloseMsg {
		msg = msg[:maxCloseMsg]
	}
	cause := &quic.ApplicationError{ErrorCode: code, ErrorMessage: msg}
	// Only the bridge says why; a hub's reason would change nothing there.
	if !c.server || c.ctx.Err() != nil {
		c.closeLocal(cause)
		return nil
	}
	// The notice goes out, and the link closes, in the background: a bridge
	// closing many links (shutdown, a re-check) must not wait on each peer.
	go func() {
		defer c.closeLocal(cause)
		s, err := c.sess.OpenStream()
		if err != nil {
			return
		}
		b := make([]byte, 7, 7+len(msg))
		b[0] = closeMagic
		binary.BigEndian.PutUint32(b[1:5], uint32(code))
		binary.BigEndian.PutUint16(b[5:], uint16(len(msg)))
		_ = s.SetWriteDeadline(time.Now().Add(time.Second))
		if _, err := s.Write(append(b, msg...)); err != nil {
			return
		}
		_ = s.Close()
		// Give the notice a moment to reach the peer, which closes.
		select {
		case <-c.ctx.Done():
		case <-time.After(200 * time.Millisecond):
		}
	}()
	return nil
}

func (c *tcpConn) Context() context.Context { return c.ctx }
func (c *tcpConn) TLS() tls.ConnectionState { return c.tls.ConnectionState() }
func (c *tcpConn) LocalAddr() net.Addr      { return c.tls.LocalAddr() }
func (c *tcpConn) RemoteAddr() net.Addr     { return c.tls.RemoteAddr() }
func (c *tcpConn) Transport() string        { return "tcp" }
func (c *tcpConn) wrap(s *yamux.Stream) Stream {
	ctx, cancel := context.WithCancel(c.ctx)
	return &tcpStream{Stream: s, ctx: ctx, cancel: cancel}
}

// tcpStream gives a yamux stream QUIC's stream methods. yamux has no reset:
// cancelling the write side ends it (FIN), cancelling both closes the stream.
type tcpStream struct {
	*yamux.Stream
	ctx            context.Context
	cancel         context.CancelFunc
	mu             sync.Mutex
	readCancelled  bool
	writeCancelled bool
}

func (s *tcpStream) Close() error {
	s.cancel()
	return s.Stream.Close()
}

func (s *tcpStream) CancelWrite(quic.StreamErrorCode) {
	s.mu.Lock()
	s.writeCancelled = true
	s.mu.Unlock()
	_ = s.Close()
}

func (s *tcpStream) CancelRead(quic.StreamErrorCode) {
	s.mu.Lock()
	s.readCancelled = true
	s.mu.Unlock()
	// Reads end now; yamux frees the stream once both sides have closed.
	_ = s.Stream.SetReadDeadline(time.Now())
}

func (s *tcpStream) Read(b []byte) (int, error) {
	s.mu.Lock()
	rc := s.readCancelled
	s.mu.Unlock()
	if rc {
		return 0, fmt.Errorf("read on a cancelled stream")
	}
	return s.Stream.Read(b)
}

func (s *tcpStream) Context() context.Context { return s.ctx }

// tcpListener accepts the fallback's connections beside the QUIC socket.
// Before the TLS handshake proves who a client is, the listener bounds what
// an unauthenticated source may hold: handshakes in progress per source
// address and in all, and how long a connection may stay silent.
type tcpListener struct {
	ln net.Listener
	// handshakes bounds the TLS handshakes in progress in all; past it a new
	// connection waits up to handshakeWait for one to end, then is closed.
	handshakes chan struct{}
	tls        *tls.Config
	maxStreams int
	// handshake bounds the whole TLS handshake; hello (default 1s) bounds
	// the wait for the client's first bytes, so a silent connection gives
	// its slot back long before a slow but live one.
	handshake time.Duration
	hello     time.Duration
	// perSource bounds the handshakes in progress from one IP address
	// (default 8): one client cannot take every slot.
	perSource int

	mu      sync.Mutex
	sources map[string]int
}

// Defaults of the fallback's pre-authentication bounds.
const (
	tcpHelloTimeout   = time.Second
	tcpHandshakeWait  = time.Second
	tcpPerSourceLimit = 8
)

// claimSource counts a handshake from nc's address; false when that
// source has perSource in progress already.
func (l *tcpListener) claimSource(nc net.Conn) (string, bool) {
	src := nc.RemoteAddr().String()
	if ta, ok := nc.RemoteAddr().(*net.TCPAddr); ok {
		src = ta.IP.String()
	}
	max := l.perSource
	if max <= 0 {
		max = tcpPerSourceLimit
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.sources == nil {
		l.sources = map[string]int{}
	}
	if l.sources[src] >= max {
		return src, false
	}
	l.sources[src]++
	return src, true
}

func (l *tcpListener) releaseSource(src string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.sources[src]--; l.sources[src] <= 0 {
		delete(l.sources, src)
	}
}

// helloConn lifts the short deadline for the client's first bytes once
// they arrive; the handshake's own deadline still applies.
type helloConn struct {
	net.Conn
	heard bool // read only by the handshake's goroutine, then by yamux's
}

func (c *helloConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if n > 0 && !c.heard {
		c.heard = true
		_ = c.Conn.SetReadDeadline(time.Time{})
	}
	return n, err
}

// accept returns the next connection whose TLS handshake (and so the client
// certificate check) succeeded; failed handshakes are dropped.
func (l *tcpListener) accept(ctx context.Context, out chan<- Conn) error {
	hello := l.hello
	if hello <= 0 {
		hello = tcpHelloTimeout
	}
	for {
		nc, err := l.ln.Accept()
		if err != nil {
			return err
		}
		src, ok := l.claimSource(nc)
		if !ok {
			_ = nc.Close()
			continue
		}
		// The accept loop itself waits for a slot: the connections behind
		// this one stay in the kernel's backlog meanwhile, and silent
		// connections give their slots back within hello.
		select {
		case l.handshakes <- struct{}{}:
		default:
			t := time.NewTimer(tcpHandshakeWait)
			select {
			case l.handshakes <- struct{}{}:
				t.Stop()
			case <-t.C:
				l.releaseSource(src)
				_ = nc.Close()
				continue
			case <-ctx.Done():
				t.Stop()
				l.releaseSource(src)
				_ = nc.Close()
				continue // the listener's close ends Accept
			}
		}
		go func() {
			defer func() { <-l.handshakes }()
			_ = nc.SetReadDeadline(time.Now().Add(hello))
			tc := tls.Server(&helloConn{Conn: nc}, l.tls)
			hctx, cancel := context.WithTimeout(ctx, l.handshake)
			err := tc.HandshakeContext(hctx)
			cancel()
			l.releaseSource(src)
			if err != nil {
				_ = nc.Close()
				return
			}
			// As QUIC requires: the mesh's ALPN and nothing else (a client
			// that offers none would otherwise get through the handshake).
			if cs := tc.ConnectionState(); len(l.tls.NextProtos) > 0 && !slices.Contains(l.tls.NextProtos, cs.NegotiatedProtocol) {
				_ = tc.Close()
				return
			}
			c, err := newTCPConn(tc, true, l.maxStreams)
			if err != nil {
				_ = nc.Close()
				return
			}
			if c.maxStreams > 0 {
				go c.announceBound()
			}
			select {
			case out <- c:
			case <-ctx.Done():
				c.closeLocal(ctx.Err())
			}
		}()
	}
}
