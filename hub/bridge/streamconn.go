package bridge

import (
	"net"
	"sync"
)

// StreamConn is a net.Conn over one stream of c: it lets a protocol that
// wants a connection of its own (gRPC, for the hub's Temporal worker) ride
// the hub's tunnel. Close ends both directions of the stream only.
func StreamConn(c Conn, s Stream) net.Conn {
	return &streamConn{Stream: s, c: c}
}

type streamConn struct {
	Stream
	c    Conn
	once sync.Once
}

func (s *streamConn) Close() error {
	var err error
	s.once.Do(func() {
		s.CancelRead(0)
		err = s.Stream.Close()
	})
	return err
}

func (s *streamConn) LocalAddr() net.Addr  { return s.c.LocalAddr() }
func (s *streamConn) RemoteAddr() net.Addr { return s.c.RemoteAddr() }
