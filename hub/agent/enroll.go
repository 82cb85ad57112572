package agent

import (
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/superinstance/mesh/hub/bridge"
	"github.com/superinstance/mesh/internal/pki"
)

// EnrollOptions configures Enroll. The zero value of each optional field
// says its default.
type EnrollOptions struct {
	// Bridge is the bridge's host:port; several comma separated are tried
	// in turn.
	Bridge string
	// ServerName is the name in the bridge's certificate. Default: the
	// host of each Bridge address.
	ServerName string
	Token      pki.EnrollToken
	DeviceID   string
	// Dir receives key.pem (0600), cert.pem and ca.pem, as si hub reads them.
	Dir string
	// Protocol is ProtocolAuto (default: QUIC, else TLS over TCP on the
	// same port), ProtocolQUIC or ProtocolTCP.
	Protocol string
	// Wait bounds how long a bridge that cannot be reached (or a mesh that
	// cannot enroll now) is tried again. A refusal (a token spent, expired,
	// unknown or for another device; another CA) ends it at once. Default
	// two minutes.
	Wait time.Duration
	// Force enrolls again into a Dir that already holds a valid certificate.
	Force bool
}

// Enrolled is what Enroll did.
type Enrolled struct {
	DeviceID, Account string
	NotAfter          time.Time
	// Already is true when Dir held a valid certificate for the device and
	// nothing was asked of the bridge.
	Already               bool
	Dir, Cert, Key, CA    string
	Bridge, CAFingerprint string
}

// Enroll enrolls this hub with a one-time token: it makes a key here (it
// never leaves the hub), checks that the bridge's certificate chains to the
// CA the token names before it sends anything, sends the token's secret and
// a certificate request, and writes the key, the certificate the CA role
// signed and the CA's certificate into Dir.
func Enroll(ctx context.Context, o EnrollOptions) (Enrolled, error) {
	if err := pki.ValidID("device id", o.DeviceID); err != nil {
		return Enrolled{}, err
	}
	if o.Dir == "" {
		return Enrolled{}, errors.New("enroll: the directory for the device's files is required")
	}
	if o.Wait <= 0 {
		o.Wait = 2 * time.Minute
	}
	switch o.Protocol {
	case "":
		o.Protocol = ProtocolAuto
	case ProtocolAuto, ProtocolQUIC, ProtocolTCP:
	default:
		return Enrolled{}, fmt.Errorf("protocol %q: want auto, quic or tcp", o.Protocol)
	}
	addrs := SplitBridges(o.Bridge)
	if len(addrs) == 0 {
		return Enrolled{}, errors.New("enroll: the bridge's address (host:port) is required")
	}
	for _, a := range addrs {
		if _, _, err := net.SplitHostPort(a); err != nil {
			return Enrolled{}, fmt.Errorf("bridge %q: %w (want host:port)", a, err)
		}
	}
	out := Enrolled{DeviceID: o.DeviceID, Dir: o.Dir, Cert: filepath.Join(o.Dir, pki.CertFile), Key: filepath.Join(o.Dir, pki.KeyFile),
		CA: filepath.Join(o.Dir, pki.CACertFile), CAFingerprint: fmt.Sprintf("%x", o.Token.CA)}
	if !o.Force {
		if done, ok := enrolledAlready(out, &o.Token.CA); ok {
			return done, nil
		}
	}
	key, err := pki.NewDeviceKey()
	if err != nil {
		return Enrolled{}, err
	}
	csr, err := pki.NewCSR(key)
	if err != nil {
		return Enrolled{}, err
	}
	ctx, cancel := context.WithTimeout(ctx, o.Wait)
	defer cancel()
	backoff := Backoff{Min: 500 * time.Millisecond, Max: 5 * time.Second}
	var certPEM, caPEM []byte
	// answered is the last refusal a bridge sent (one to ask again after):
	// when the wait ends in the middle of an attempt, it says more than
	// the attempt the deadline cut.
	var answered error
	for i := 0; ; i++ {
		addr := addrs[i%len(addrs)]
		certPEM, caPEM, err = enrollOnce(ctx, o, addr, bridge.EnrollRequest{Secret: o.Token.Secret, DeviceID: o.DeviceID, CSR: csr})
		if err == nil {
			out.Bridge = addr
			break
		}
		var refused *bridge.EnrollRefusedError
		if errors.As(err, &refused) && !retryable(refused.Reason) || errors.Is(err, pki.ErrCAMismatch) || errors.Is(err, errNoEnrollment) {
			return Enrolled{}, err
		}
		if refused != nil {
			answered = err
		}
		select {
		case <-ctx.Done():
			if answered != nil && answered != err {
				return Enrolled{}, fmt.Errorf("enrolling through %s: %w (gave up after %s; the last attempt: %v)", strings.Join(addrs, ", "), answered, o.Wait, err)
			}
			return Enrolled{}, fmt.Errorf("enrolling through %s: %w (gave up after %s)", strings.Join(addrs, ", "), err, o.Wait)
		case <-time.After(backoff.Next()):
		}
	}
	leaf, err := checkEnrollment(certPEM, caPEM, key, o)
	if err != nil {
		return Enrolled{}, err
	}
	keyPEM, err := pki.KeyPEM(key)
	if err != nil {
		return Enrolled{}, err
	}
	if err := os.MkdirAll(o.Dir, 0o700); err != nil {
		return Enrolled{}, err
	}
	// The certificate last: its presence says the directory is complete.
	for _, f := range []struct {
		path string
		b    []byte
		mode os.FileMode
	}{{out.Key, keyPEM, 0o600}, {out.CA, caPEM, 0o644}, {out.Cert, certPEM, 0o644}} {
		if err := writeAtomic(f.path, f.b, f.mode); err != nil {
			return Enrolled{}, fmt.Errorf("saving the enrolled device (the token is spent: keep this error for the operator): %w", err)
		}
	}
	id, _ := pki.IdentityOf(leaf)
	out.Account, out.NotAfter = id.Account, leaf.NotAfter
	return out, nil
}

// retryable says whether a bridge's refusal may pass if asked again later
// (the mesh was busy or could not reach its CA role), as opposed to one
// about the token, the device or the request.
func retryable(reason string) bool {
	for _, s := range []string{"try again in a minute", "wait a minute"} {
		if strings.Contains(reason, s) {
			return true
		}
	}
	return false
}

// errNoEnrollment is a bridge that does not speak pki.EnrollALPN.
var errNoEnrollment = errors.New("the bridge does not take enrollments (it does not speak " + pki.EnrollALPN + "): ask the operator to enable it, or for a certificate made with si device enroll")

// enrollOnce connects to addr with pki.EnrollALPN and makes the request.
func enrollOnce(ctx context.Context, o EnrollOptions, addr string, req bridge.EnrollRequest) (certPEM, caPEM []byte, err error) {
	host, _, _ := net.SplitHostPort(addr)
	name := o.ServerName
	if name == "" {
		name = host
	}
	// The hub has no CA yet: the chain is checked against the token's CA
	// hash instead of a root pool, before the request is sent.
	var mu sync.Mutex
	var verr error
	tc := &tls.Config{
		MinVersion:             tls.VersionTLS13,
		NextProtos:             []string{pki.EnrollALPN},
		ServerName:             name,
		InsecureSkipVerify:     true, // VerifyConnection checks the chain against the pinned CA
		SessionTicketsDisabled: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			raw := make([][]byte, len(cs.PeerCertificates))
			for i, c := range cs.PeerCertificates {
				raw[i] = c.Raw
			}
			err := pki.VerifyPinnedServer(raw, o.Token.CA, name)
			if err == nil && cs.NegotiatedProtocol != pki.EnrollALPN {
				err = errNoEnrollment
			}
			mu.Lock()
			verr = err
			mu.Unlock()
			return err
		},
	}
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var c bridge.Conn
	if o.Protocol != ProtocolTCP {
		qc, qerr := quic.DialAddr(dctx, addr, tc, &quic.Config{HandshakeIdleTimeout: 5 * time.Second, MaxIdleTimeout: 2 * enrollAnswerWait})
		if qerr == nil {
			c = bridge.QUICConn(qc)
		} else {
			err = qerr
		}
	}
	if c == nil && o.Protocol != ProtocolQUIC && !isVerifyErr(&mu, &verr) {
		tcpc, terr := bridge.DialTCP(dctx, addr, tc)
		if terr == nil {
			c = tcpc
		} else {
			err = terr
		}
	}
	if c == nil {
		mu.Lock()
		defer mu.Unlock()
		if verr != nil {
			return nil, nil, verr
		}
		if strings.Contains(err.Error(), "no application protocol") {
			return nil, nil, errNoEnrollment
		}
		return nil, nil, fmt.Errorf("dial %s: %w", addr, err)
	}
	defer func() { _ = c.CloseWithError(bridge.CodeShutdown, "enrollment done") }()
	s, err := c.OpenStreamSync(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("enroll over %s: %w", addr, err)
	}
	defer s.Close()
	asked := time.Now()
	dl := asked.Add(enrollAnswerWait)
	if d, ok := ctx.Deadline(); ok && d.Before(dl) {
		dl = d
	}
	_ = s.SetDeadline(dl)
	if err := bridge.WriteEnrollRequest(s, req); err != nil {
		return nil, nil, fmt.Errorf("enroll over %s: %w", addr, linkCause(c, err))
	}
	certPEM, caPEM, err = bridge.ReadEnrollAnswer(s)
	if err != nil {
		var refused *bridge.EnrollRefusedError
		if errors.As(err, &refused) {
			return nil, nil, err
		}
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return nil, nil, fmt.Errorf("the bridge at %s did not answer within %s: the mesh's CA role may be down (ask the operator), or give --wait more", addr, time.Since(asked).Round(time.Second))
		}
		return nil, nil, fmt.Errorf("enroll over %s: %w", addr, linkCause(c, err))
	}
	return certPEM, caPEM, nil
}

// enrollAnswerWait bounds the wait for the bridge's answer: the CA role may
// take up to a minute to be reached.
const enrollAnswerWait = 75 * time.Second

// linkCause prefers the bridge's close reason (a rate limit, say) to the
// stream's error.
func linkCause(c bridge.Conn, err error) error {
	select {
	case <-c.Context().Done():
		var ae *quic.ApplicationError
		if cause := context.Cause(c.Context()); errors.As(cause, &ae) {
			return &bridge.EnrollRefusedError{Reason: "the bridge closed the connection: " + ae.ErrorMessage}
		}
	case <-time.After(100 * time.Millisecond):
	}
	return err
}

func isVerifyErr(mu *sync.Mutex, verr *error) bool {
	mu.Lock()
	defer mu.Unlock()
	return *verr != nil
}

// checkEnrollment checks the bridge's answer: the CA certificate is the
// one the token names, and the device certificate is for the device asked
// for, over this hub's key, signed by that CA, for client authentication.
func checkEnrollment(certPEM, caPEM []byte, key crypto.Signer, o EnrollOptions) (*x509.Certificate, error) {
	sum, err := pki.CAFingerprint(caPEM)
	if err != nil {
		return nil, fmt.Errorf("the bridge's CA certificate: %w", err)
	}
	if sum != o.Token.CA {
		return nil, pki.ErrCAMismatch
	}
	leaf, err := bridge.ParseRenewedCert(certPEM)
	if err != nil {
		return nil, fmt.Errorf("the enrolled certificate: %w", err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(caPEM)
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		return nil, fmt.Errorf("the enrolled certificate: %w", err)
	}
	id, err := pki.IdentityOf(leaf)
	if err != nil {
		return nil, err
	}
	if id.DeviceID != o.DeviceID {
		return nil, fmt.Errorf("the enrolled certificate is for device %s, not %s", id.DeviceID, o.DeviceID)
	}
	pub, err := x509.MarshalPKIXPublicKey(key.Public())
	if err != nil {
		return nil, err
	}
	if string(pub) != string(leaf.RawSubjectPublicKeyInfo) {
		return nil, errors.New("the enrolled certificate is not for this hub's key")
	}
	return leaf, nil
}

// EnrolledIn reports whether dir holds a valid certificate for deviceID
// over the key beside it (a node enrolled before, whose token is spent or
// gone).
func EnrolledIn(dir, deviceID string) (Enrolled, bool) {
	return enrolledAlready(Enrolled{DeviceID: deviceID, Dir: dir, Cert: filepath.Join(dir, pki.CertFile), Key: filepath.Join(dir, pki.KeyFile),
		CA: filepath.Join(dir, pki.CACertFile)}, nil)
}

// enrolledAlready reports a directory that holds a certificate for the
// device, from the token's CA (ca, when not nil), over the key beside it,
// still valid: run again (a restarted init container), enrollment keeps it
// and asks nothing.
func enrolledAlready(out Enrolled, ca *[32]byte) (Enrolled, bool) {
	certPEM, err1 := os.ReadFile(out.Cert)
	keyPEM, err2 := os.ReadFile(out.Key)
	caPEM, err3 := os.ReadFile(out.CA)
	if err1 != nil || err2 != nil || err3 != nil {
		return Enrolled{}, false
	}
	sum, err := pki.CAFingerprint(caPEM)
	if err != nil || ca != nil && sum != *ca {
		return Enrolled{}, false
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return Enrolled{}, false
	}
	leaf, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil || time.Now().After(leaf.NotAfter) {
		return Enrolled{}, false
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(caPEM)
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		return Enrolled{}, false
	}
	id, err := pki.IdentityOf(leaf)
	if err != nil || id.DeviceID != out.DeviceID {
		return Enrolled{}, false
	}
	out.Account, out.NotAfter, out.Already, out.CAFingerprint = id.Account, leaf.NotAfter, true, fmt.Sprintf("%x", sum)
	return out, true
}
