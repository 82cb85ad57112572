package harness

import (
	"net"
	"sync"
	"sync/atomic"
	"testing"
)

// Balancer is a UDP load balancer in miniature: it forwards every client to
// one target, which a test may switch (a replica taking over) or blackhole
// (a bridge killed, a path gone: packets vanish, nothing is closed).
type Balancer struct {
	pc     net.PacketConn
	target atomic.Pointer[net.UDPAddr]
	drop   atomic.Bool
	mu     sync.Mutex
	ups    map[string]*net.UDPConn
}

// StartBalancer forwards to target until cleanup.
func StartBalancer(t testing.TB, target string) *Balancer {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &Balancer{pc: pc, ups: map[string]*net.UDPConn{}}
	b.To(t, target)
	go b.run()
	t.Cleanup(func() {
		_ = pc.Close()
		b.mu.Lock()
		defer b.mu.Unlock()
		for _, u := range b.ups {
			_ = u.Close()
		}
	})
	return b
}

// Addr is where clients send.
func (b *Balancer) Addr() string { return b.pc.LocalAddr().String() }

// To sends every client's next packets to target.
func (b *Balancer) To(t testing.TB, target string) {
	t.Helper()
	a, err := net.ResolveUDPAddr("udp", target)
	if err != nil {
		t.Fatal(err)
	}
	b.target.Store(a)
}

func (b *Balancer) run() {
	buf := make([]byte, 65536)
	for {
		n, from, err := b.pc.ReadFrom(buf)
		if err != nil {
			return
		}
		if b.drop.Load() {
			continue
		}
		b.mu.Lock()
		up := b.ups[from.String()]
		if up == nil {
			up, err = net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
			if err != nil {
				b.mu.Unlock()
				continue
			}
			b.ups[from.String()] = up
			go func() {
				rb := make([]byte, 65536)
				for {
					n, _, err := up.ReadFrom(rb)
					if err != nil {
						return
					}
					if !b.drop.Load() {
						_, _ = b.pc.WriteTo(rb[:n], from)
					}
				}
			}()
		}
		b.mu.Unlock()
		_, _ = up.WriteTo(buf[:n], b.target.Load())
	}
}

// Blackhole drops every packet both ways while on, as a bridge killed
// without a word (or a path gone) would.
func (b *Balancer) Blackhole(on bool) { b.drop.Store(on) }
