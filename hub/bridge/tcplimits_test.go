package bridge_test

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/hashicorp/yamux"
	"github.com/quic-go/quic-go"

	"github.com/superinstance/mesh/hub/bridge"
	"github.com/superinstance/mesh/internal/pki"
	"github.com/superinstance/mesh/internal/simulator"
	meshv1 "github.com/superinstance/mesh/proto/meshv1"
	"github.com/superinstance/mesh/test/harness"
)

// idleConns opens n TCP connections to addr from the loopback addresses
// src (round robin) and sends nothing: an unauthenticated client holding
// handshake slots.
func idleConns(t *testing.T, addr string, n int, src ...string) {
	t.Helper()
	var conns []net.Conn
	t.Cleanup(func() {
		for _, c := range conns {
			_ = c.Close()
		}
	})
	for i := 0; i < n; i++ {
		d := net.Dialer{Timeout: 2 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(src[i%len(src)])}}
		c, err := d.Dial("tcp", addr)
		if err != nil {
			t.Fatalf("idle connection %d: %v", i, err)
		}
		conns = append(conns, c)
	}
}

// TestTCPFallbackIdleFlood: idle TCP connections from one source, or from
// many, do not lock a hub with a valid certificate out of the fallback.
func TestTCPFallbackIdleFlood(t *testing.T) {
	m := harness.StartMesh(t, simulator.Options{})
	p := harness.NewPKI(t)
	good := p.Enroll(t, m.Store, pki.Identity{DeviceID: "gpu-tcp-flood", Account: "acme"}, time.Hour)

	t.Run("one source", func(t *testing.T) {
		b := harness.StartBridge(t, m, p, "127.0.0.1:0")
		idleConns(t, b.TCPAddr().String(), 1024, "127.0.0.2")
		if err := handshakeTCP(b.TCPAddr().String(), good); err != nil {
			t.Fatalf("valid certificate refused behind 1024 idle connections: %v", err)
		}
	})
	t.Run("many sources", func(t *testing.T) {
		b := harness.StartBridge(t, m, p, "127.0.0.1:0")
		var src []string
		for i := 0; i < 128; i++ {
			src = append(src, fmt.Sprintf("127.0.1.%d", i+1))
		}
		idleConns(t, b.TCPAddr().String(), 1024, src...)
		if err := handshakeTCP(b.TCPAddr().String(), good); err != nil {
			t.Fatalf("valid certificate refused behind 1024 idle connections from 128 sources: %v", err)
		}
	})
}

// TestTCPFallbackStreamFlood: a hub with a valid certificate that opens
// more streams than the bound over TCP, each holding 64 KiB in the
// bridge's buffers, loses its link with CodeProtocol.
func TestTCPFallbackStreamFlood(t *testing.T) {
	m := harness.StartMesh(t, simulator.Options{})
	p := harness.NewPKI(t)
	b := harness.StartBridge(t, m, p, "127.0.0.1:0", func(o *bridge.Options) { o.MaxStreamsPerConn = 3 })
	c := p.Enroll(t, m.Store, pki.Identity{DeviceID: "gpu-tcp-streams", Account: "acme"}, time.Hour)
	c.MinVersion = tls.VersionTLS13
	tc, err := tls.Dial("tcp", b.TCPAddr().String(), c)
	if err != nil {
		t.Fatal(err)
	}
	sess, err := yamux.Client(tc, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	// The bridge may announce things on streams of its own; read them so
	// they do not hold the session.
	go func() {
		for {
			s, err := sess.AcceptStream()
			if err != nil {
				return
			}
			go func() { _, _ = s.Read(make([]byte, 2048)); _ = s.Close() }()
		}
	}()
	chunk := make([]byte, 64<<10)
	chunk[0] = bridge.StreamEscalation
	for i := 0; i < 50; i++ {
		s, err := sess.OpenStream()
		if err != nil {
			break // the bridge ended the link
		}
		_ = s.SetWriteDeadline(time.Now().Add(time.Second))
		_, _ = s.Write(chunk)
	}
	select {
	case <-sess.CloseChan():
	case <-time.After(5 * time.Second):
		t.Fatalf("a hub holding %d streams (bound 3) still has its TCP link", sess.NumStreams())
	}
}

// TestTCPFallbackAgentWaitsForStream: over TCP a hub's dialer waits for a
// free stream as QUIC's does, rather than having the bridge drop the
// stream past the bound, and the link stays up.
func TestTCPFallbackAgentWaitsForStream(t *testing.T) {
	m := harness.StartMesh(t, simulator.Options{})
	p := harness.NewPKI(t)
	b := harness.StartBridge(t, m, p, "127.0.0.1:0", func(o *bridge.Options) {
		o.MaxStreamsPerConn = 3
		o.StreamReadTimeout = 500 * time.Millisecond
	})
	c := p.Enroll(t, m.Store, pki.Identity{DeviceID: "gpu-tcp-wait", Account: "acme"}, time.Hour)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := bridge.DialTCP(ctx, b.TCPAddr().String(), c)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.CloseWithError(0, "")
	// Three streams that send nothing: the bridge ends them after its
	// StreamReadTimeout.
	var held []bridge.Stream
	for i := 0; i < 3; i++ {
		s, err := conn.OpenStreamSync(ctx)
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, s)
	}
	short, cancelShort := context.WithTimeout(ctx, 100*time.Millisecond)
	_, err = conn.OpenStreamSync(short)
	cancelShort()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("a fourth stream with the bound at 3: %v, want to wait", err)
	}
	_ = held[0].Close()
	if r := escalateOn(t, conn, &meshv1.EscalationRequest{RequestId: "tcp-after-wait", Prompt: "q [sim:agree]"}); r.GetResult() == nil {
		t.Fatalf("escalation once a stream was free: %v", r)
	}
	var ae *quic.ApplicationError
	if errors.As(context.Cause(conn.Context()), &ae) {
		t.Fatalf("link ended: %v", ae)
	}
}
