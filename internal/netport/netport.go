// Package netport picks TCP ports for servers the mesh starts on a machine
// (si dev's Temporal, MinIO, stripe-mock and PostgreSQL, and the tests').
//
// A port the kernel hands out for ":0" comes from the ephemeral range, the
// one every outgoing connection's local port comes from too: released
// again so that a server can bind it, it may meanwhile be the local end of
// some connection, and the server's bind fails. Ports here come from below
// that range, where no connection's local end is chosen.
package netport

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
)

// lowest is the lowest port Free picks.
const lowest = 20000

// Free returns a TCP port on host that was free a moment ago, below the
// machine's ephemeral range where it can (where that range starts too low
// to leave room, it is the kernel's choice).
func Free(host string) (int, error) {
	if high := ephemeralStart(); high-lowest >= 1000 {
		for range 64 {
			p := lowest + rand.IntN(high-lowest)
			l, err := net.Listen("tcp", net.JoinHostPort(host, strconv.Itoa(p)))
			if err == nil {
				return p, l.Close()
			}
			if !errors.Is(err, syscall.EADDRINUSE) {
				break
			}
		}
	}
	l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return 0, fmt.Errorf("a free port on %s: %w", host, err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

var (
	rangeOnce sync.Once
	rangeLow  int
)

// ephemeralStart is the first port of the machine's ephemeral range
// (Linux's ip_local_port_range; 32768 where it cannot be read).
func ephemeralStart() int {
	rangeOnce.Do(func() {
		rangeLow = 32768
		b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
		if err != nil {
			return
		}
		if f := strings.Fields(string(b)); len(f) == 2 {
			if n, err := strconv.Atoi(f[0]); err == nil && n > 0 && n <= 65535 {
				rangeLow = n
			}
		}
	})
	return rangeLow
}
