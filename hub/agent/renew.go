package agent

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/superinstance/mesh/hub/bridge"
	"github.com/superinstance/mesh/internal/pki"
)

// Certs holds a hub's device certificate and renews it over the link. The
// TLS configuration it makes reads the current certificate at every
// handshake, so a renewed one is used without a restart.
type Certs struct {
	certPath, keyPath string
	roots             *x509.CertPool

	mu       sync.Mutex
	pair     tls.Certificate
	leaf     *x509.Certificate
	sessions tls.ClientSessionCache
}

var _ tls.ClientSessionCache = (*Certs)(nil)

// NewCerts holds the hub's PEM files; certPath and keyPath, when not empty,
// are where renewed ones are written (each replaced atomically).
func NewCerts(caPEM, certPEM, keyPEM []byte, certPath, keyPath string) (*Certs, error) {
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("device certificate: %w", err)
	}
	leaf, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		return nil, fmt.Errorf("device certificate: %w", err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(caPEM) {
		return nil, errors.New("mesh CA certificate is not PEM")
	}
	return &Certs{certPath: certPath, keyPath: keyPath, roots: roots, pair: pair, leaf: leaf, sessions: tls.NewLRUClientSessionCache(8)}, nil
}

// Leaf is the current certificate.
func (c *Certs) Leaf() *x509.Certificate {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.leaf
}

// TLS is the hub's TLS configuration with the current certificate; base
// (from pki.ClientTLS) gives everything else.
func (c *Certs) TLS(base *tls.Config) *tls.Config {
	t := base.Clone()
	t.Certificates = nil
	t.ClientSessionCache = c
	t.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
		c.mu.Lock()
		defer c.mu.Unlock()
		p := c.pair
		return &p, nil
	}
	return t
}

// Get and Put keep TLS sessions for resumption; a renewal forgets them, as
// a session resumed from one made with the old certificate would present
// the old, revoked, identity.
func (c *Certs) Get(key string) (*tls.ClientSessionState, bool) {
	c.mu.Lock()
	s := c.sessions
	c.mu.Unlock()
	return s.Get(key)
}

func (c *Certs) Put(key string, cs *tls.ClientSessionState) {
	c.mu.Lock()
	s := c.sessions
	c.mu.Unlock()
	s.Put(key, cs)
}

// RenewAt is when the current certificate is due for renewal: two thirds
// into its life.
func (c *Certs) RenewAt() time.Time {
	l := c.Leaf()
	return l.NotBefore.Add(l.NotAfter.Sub(l.NotBefore) * 2 / 3)
}

// install checks a renewed certificate against the key it was requested
// for, the mesh CA and the identity of the one it replaces, saves it and
// makes it current.
func (c *Certs) install(certPEM, keyPEM []byte) error {
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return fmt.Errorf("renewed certificate does not match the new key: %w", err)
	}
	leaf, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		return err
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: c.roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		return fmt.Errorf("renewed certificate: %w", err)
	}
	want, err := pki.IdentityOf(c.Leaf())
	if err != nil {
		return err
	}
	if got, err := pki.IdentityOf(leaf); err != nil || got != want {
		return fmt.Errorf("renewed certificate is for %v, not %v", got, want)
	}
	if c.certPath != "" && c.keyPath != "" {
		// The key first: a crash between the two leaves the old
		// certificate beside a key it does not match, which the hub
		// refuses at start, rather than a silently wrong pair.
		if err := writeAtomic(c.keyPath, keyPEM, 0o600); err != nil {
			return err
		}
		if err := writeAtomic(c.certPath, certPEM, 0o644); err != nil {
			return err
		}
	}
	c.mu.Lock()
	c.pair, c.leaf = pair, leaf
	c.sessions = tls.NewLRUClientSessionCache(8)
	c.mu.Unlock()
	return nil
}

// renewLoop renews the certificate over conn when it is due, until ctx
// ends; a failed try is retried after a tenth of the time left (1s-1m).
func (a *Agent) renewLoop(ctx context.Context, conn bridge.Conn) {
	c := a.opts.Certs
	for {
		wait := time.Until(c.RenewAt())
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		err := a.renewOnce(ctx, conn)
		if err == nil {
			a.opts.Logger.Info("device certificate renewed", "serial", pki.Serial(c.Leaf()), "not_after", c.Leaf().NotAfter)
			continue
		}
		if ctx.Err() != nil {
			return
		}
		retry := min(max(time.Until(c.Leaf().NotAfter)/10, time.Second), time.Minute)
		a.opts.Logger.Warn("certificate renewal failed", "error", err, "retry_in", retry, "not_after", c.Leaf().NotAfter)
		select {
		case <-ctx.Done():
			return
		case <-time.After(retry):
		}
	}
}

// renewOnce makes a new key, sends its certificate request and installs
// the certificate the bridge returns.
func (a *Agent) renewOnce(ctx context.Context, conn bridge.Conn) error {
	key, err := pki.NewDeviceKey()
	if err != nil {
		return err
	}
	csr, err := pki.NewCSR(key)
	if err != nil {
		return err
	}
	keyPEM, err := pki.KeyPEM(key)
	if err != nil {
		return err
	}
	s, err := conn.OpenStreamSync(ctx)
	if err != nil {
		return err
	}
	defer s.CancelRead(0)
	_ = s.SetDeadline(time.Now().Add(time.Minute))
	if _, err := s.Write([]byte{bridge.StreamRenew}); err != nil {
		return err
	}
	if err := bridge.WriteFrame(s, csr); err != nil {
		return err
	}
	var status [1]byte
	if _, err := io.ReadFull(s, status[:]); err != nil {
		return fmt.Errorf("renewal: %w", err)
	}
	body, err := bridge.ReadFrame(s, bridge.MaxCertPEMBytes)
	if err != nil {
		return fmt.Errorf("renewal: %w", err)
	}
	if status[0] != bridge.RenewOK {
		return fmt.Errorf("bridge refused the renewal: %.200s", body)
	}
	if err := a.opts.Certs.install(body, keyPEM); err != nil {
		return err
	}
	if _, err := s.Write([]byte{bridge.RenewInstalled}); err != nil {
		return err
	}
	return s.Close()
}

func writeAtomic(path string, data []byte, mode os.FileMode) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, mode); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
