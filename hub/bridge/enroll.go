package bridge

import (
	"bytes"
	"container/list"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"sync"
	"time"

	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/temporal"
	"golang.org/x/time/rate"

	"github.com/superinstance/mesh/activities"
	"github.com/superinstance/mesh/internal/pki"
	"github.com/superinstance/mesh/internal/store"
	"github.com/superinstance/mesh/workers"
	"github.com/superinstance/mesh/workflows"
)

// Enrollment: a new hub, which has no certificate yet, connects with ALPN
// pki.EnrollALPN. The bridge asks it for none and shows it the CA's
// certificate after its own, so that the hub can check the chain against
// the CA hash in its token before it sends anything. On such a connection
// the hub opens one stream and sends one request; the bridge relays it to
// the CA role and answers; then the connection ends. It carries no other
// stream kind: no escalation, no Temporal proxy, no renewal.
//
//	hub:    StreamEnroll, frame(token secret), frame(device id), frame(CSR DER)
//	bridge: EnrollOK frame(certificate PEM) frame(CA PEM) | EnrollFailed frame(reason)

// StreamEnroll is the one stream kind an enrollment connection carries.
const StreamEnroll byte = 'R'

// Enrollment answers.
const (
	EnrollOK     byte = 0
	EnrollFailed byte = 1
)

// MaxEnrollReason bounds the reason a hub accepts with EnrollFailed.
const MaxEnrollReason = 1024

// Defaults of the enrollment bounds.
const (
	defaultEnrollPerMinute  = 6
	defaultEnrollConcurrent = 32
	// enrollSources bounds the sources the rate limiter remembers; past it
	// the least recently seen is forgotten.
	enrollSources = 1 << 16
	// enrollWait bounds a whole enrollment connection: a CA role that is
	// down makes EnrollWorkflow give up after a minute.
	enrollWait = 90 * time.Second
	// enrollReadWait bounds the time from an enrollment connection's start
	// to its whole request read.
	enrollReadWait = 5 * time.Second
)

// Enroller has the CA role spend an enrollment token and sign a new hub's
// first certificate. The bridge holds no CA key.
type Enroller interface {
	Enroll(ctx context.Context, in activities.EnrollInput) (activities.EnrollResult, error)
}

var (
	_ Enroller = (*Temporal)(nil)
	_ Enroller = (*activities.CA)(nil)
)

// EnrollRequest is a new hub's request.
type EnrollRequest struct {
	// Secret is the token's secret part (pki.EnrollToken.Secret).
	Secret   string
	DeviceID string
	CSR      []byte
}

// WriteEnrollRequest writes the enrollment stream's kind and request.
func WriteEnrollRequest(w io.Writer, r EnrollRequest) error {
	var buf bytes.Buffer
	buf.WriteByte(StreamEnroll)
	for _, f := range [][]byte{[]byte(r.Secret), []byte(r.DeviceID), r.CSR} {
		if err := WriteFrame(&buf, f); err != nil {
			return err
		}
	}
	_, err := w.Write(buf.Bytes())
	return err
}

// ReadEnrollRequest reads a request after its stream kind: each frame is
// bounded before it is read, and each field is checked (the secret's
// characters, the device id's, the CSR's signature and key type).
func ReadEnrollRequest(r io.Reader) (EnrollRequest, error) {
	secret, err := ReadFrame(r, pki.MaxEnrollSecret)
	if err != nil {
		return EnrollRequest{}, fmt.Errorf("token: %w", err)
	}
	if err := pki.ValidEnrollSecret(string(secret)); err != nil {
		return EnrollRequest{}, err
	}
	dev, err := ReadFrame(r, 63)
	if err != nil {
		return EnrollRequest{}, fmt.Errorf("device id: %w", err)
	}
	if err := pki.ValidID("device id", string(dev)); err != nil {
		return EnrollRequest{}, err
	}
	csr, err := ReadFrame(r, pki.MaxCSRBytes)
	if err != nil {
		return EnrollRequest{}, fmt.Errorf("certificate request: %w", err)
	}
	if _, err := pki.ParseCSR(csr); err != nil {
		return EnrollRequest{}, err
	}
	return EnrollRequest{Secret: string(secret), DeviceID: string(dev), CSR: csr}, nil
}

// ReadEnrollAnswer reads the bridge's answer: the certificate and the CA's,
// each at most MaxCertPEMBytes, or the refusal's reason as an error.
func ReadEnrollAnswer(r io.Reader) (certPEM, caPEM []byte, err error) {
	var kind [1]byte
	if _, err := io.ReadFull(r, kind[:]); err != nil {
		return nil, nil, fmt.Errorf("the bridge's answer: %w", err)
	}
	switch kind[0] {
	case EnrollOK:
		if certPEM, err = ReadFrame(r, MaxCertPEMBytes); err != nil {
			return nil, nil, fmt.Errorf("the bridge's certificate: %w", err)
		}
		if caPEM, err = ReadFrame(r, MaxCertPEMBytes); err != nil {
			return nil, nil, fmt.Errorf("the bridge's CA certificate: %w", err)
		}
		return certPEM, caPEM, nil
	case EnrollFailed:
		reason, err := ReadFrame(r, MaxEnrollReason)
		if err != nil {
			return nil, nil, fmt.Errorf("the bridge refused the enrollment without a reason: %w", err)
		}
		return nil, nil, &EnrollRefusedError{Reason: string(bytes.ToValidUTF8(reason, []byte("?")))}
	}
	return nil, nil, fmt.Errorf("the bridge's answer starts with %#x, not an enrollment answer", kind[0])
}

// EnrollRefusedError is the bridge's refusal of an enrollment.
type EnrollRefusedError struct{ Reason string }

func (e *EnrollRefusedError) Error() string { return e.Reason }

// enrollTLS is the bridge's TLS configuration with enrollment: a client
// hello offering pki.EnrollALPN gets a configuration that asks for no
// client certificate, sends the CA's certificate after the bridge's, keeps
// no session (so nothing of it is resumed on the mesh's ALPN), and speaks
// that ALPN alone. Every other hello gets base unchanged.
func enrollTLS(base *tls.Config, caPEM []byte) (*tls.Config, error) {
	if len(base.Certificates) == 0 {
		return nil, errors.New("bridge: enrollment needs the bridge's server certificate in its TLS configuration")
	}
	blk, _ := pem.Decode(caPEM)
	if blk == nil || blk.Type != "CERTIFICATE" {
		return nil, errors.New("bridge: the CA certificate for enrollment (Options.EnrollCA) is not PEM")
	}
	if _, err := x509.ParseCertificate(blk.Bytes); err != nil {
		return nil, fmt.Errorf("bridge: the CA certificate for enrollment: %w", err)
	}
	srv := base.Certificates[0]
	srv.Certificate = append(slices.Clone(srv.Certificate[:1]), blk.Bytes)
	enroll := &tls.Config{
		MinVersion:             tls.VersionTLS13,
		Certificates:           []tls.Certificate{srv},
		ClientAuth:             tls.NoClientCert,
		NextProtos:             []string{pki.EnrollALPN},
		SessionTicketsDisabled: true,
	}
	wrapped := base.Clone()
	// Listed so that the TCP fallback's ALPN check admits it; a hello that
	// offers it always gets the enroll configuration, never base.
	wrapped.NextProtos = append(slices.Clone(base.NextProtos), pki.EnrollALPN)
	inner := base.GetConfigForClient
	wrapped.GetConfigForClient = func(hi *tls.ClientHelloInfo) (*tls.Config, error) {
		if slices.Contains(hi.SupportedProtos, pki.EnrollALPN) {
			return enroll, nil
		}
		if inner != nil {
			return inner(hi)
		}
		return nil, nil
	}
	return wrapped, nil
}

// enrollLimits bounds enrollment: attempts per source per minute, and
// enrollments in progress in all.
type enrollLimits struct {
	perMinute int
	slots     chan struct{}

	mu         sync.Mutex
	maxSources int
	sources    map[string]*list.Element // of *enrollSource
	// recent orders the sources, the least recently seen first: a full
	// table forgets that one, in constant time.
	recent *list.List
}

type enrollSource struct {
	key string
	lim *rate.Limiter
}

func newEnrollLimits(perMinute, concurrent int) *enrollLimits {
	if perMinute <= 0 {
		perMinute = defaultEnrollPerMinute
	}
	if concurrent <= 0 {
		concurrent = defaultEnrollConcurrent
	}
	return &enrollLimits{perMinute: perMinute, slots: make(chan struct{}, concurrent),
		maxSources: enrollSources, sources: map[string]*list.Element{}, recent: list.New()}
}

// sourceOf is whom an attempt counts against: the IP address, an IPv6
// address's /56 (one site is commonly given a whole /56).
func sourceOf(a net.Addr) string {
	var ip net.IP
	switch a := a.(type) {
	case *net.UDPAddr:
		ip = a.IP
	case *net.TCPAddr:
		ip = a.IP
	default:
		host, _, err := net.SplitHostPort(a.String())
		if err != nil {
			return a.String()
		}
		ip = net.ParseIP(host)
		if ip == nil {
			return host
		}
	}
	if v4 := ip.To4(); v4 != nil {
		return v4.String()
	}
	return ip.Mask(net.CIDRMask(56, 128)).String() + "/56"
}

// allow counts an attempt from src at now; false when src made perMinute
// in the last minute. A full table forgets its least recently seen source
// (its bucket, the fullest, is the cheapest to lose), so that filling the
// table locks no new source out.
func (l *enrollLimits) allow(src string, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	e := l.sources[src]
	if e == nil {
		for len(l.sources) >= l.maxSources {
			old := l.recent.Front()
			l.recent.Remove(old)
			delete(l.sources, old.Value.(*enrollSource).key)
		}
		e = l.recent.PushBack(&enrollSource{key: src, lim: rate.NewLimiter(rate.Limit(float64(l.perMinute)/60), l.perMinute)})
		l.sources[src] = e
	} else {
		l.recent.MoveToBack(e)
	}
	return e.Value.(*enrollSource).lim.AllowN(now, 1)
}

// enroll serves a connection that negotiated pki.EnrollALPN: one request,
// one answer, then the connection ends.
func (b *Bridge) enroll(ctx context.Context, c Conn) {
	log := b.opts.Logger.With("remote", c.RemoteAddr().String(), "alpn", pki.EnrollALPN)
	ctx, cancel := context.WithTimeout(ctx, enrollWait)
	defer cancel()
	src := sourceOf(c.RemoteAddr())
	if !b.enrollLim.allow(src, time.Now()) {
		b.m.enrollment("limited")
		log.Warn("enrollment refused: too many attempts from this source")
		_ = c.CloseWithError(CodeTooMany, fmt.Sprintf("more than %d enrollment attempts a minute from %s: wait a minute", b.enrollLim.perMinute, src))
		return
	}
	// The request is read under one deadline from the connection's start:
	// a stranger who sends nothing holds nothing for long, and no CA slot
	// at all (one is taken only once the token has been checked).
	readBy := time.Now().Add(enrollReadWait)
	actx, acancel := context.WithDeadline(ctx, readBy)
	s, err := c.AcceptStream(actx)
	acancel()
	if err != nil {
		_ = c.CloseWithError(CodeProtocol, "no enrollment request")
		return
	}
	defer s.Close()
	_ = s.SetReadDeadline(readBy)
	var kind [1]byte
	if _, err := io.ReadFull(s, kind[:]); err != nil {
		_ = c.CloseWithError(CodeProtocol, "no enrollment request")
		return
	}
	if kind[0] != StreamEnroll {
		b.m.enrollment("refused")
		log.Warn("enrollment connection opened another stream kind", "kind", kind[0])
		_ = c.CloseWithError(CodeProtocol, "this connection only enrolls (ALPN "+pki.EnrollALPN+"): connect with the device certificate for anything else")
		return
	}
	fail := func(reason string) {
		b.m.enrollment("refused")
		if len(reason) > MaxEnrollReason {
			reason = reason[:MaxEnrollReason]
		}
		_ = s.SetWriteDeadline(time.Now().Add(5 * time.Second))
		_, _ = s.Write([]byte{EnrollFailed})
		_ = WriteFrame(s, []byte(reason))
		b.endEnroll(c, s)
	}
	req, err := ReadEnrollRequest(s)
	if err != nil {
		log.Warn("enrollment request refused", "error", err)
		fail("enrollment request: " + err.Error())
		return
	}
	_ = s.SetReadDeadline(time.Time{})
	log = log.With("device", req.DeviceID)
	if b.opts.Enroller == nil {
		fail("this bridge does not enroll hubs: ask the operator (si device enroll)")
		return
	}
	hash := store.EnrollTokenHash(req.Secret)
	// The registry answers a spent, expired, unknown or other device's
	// token at once: a flood of bad tokens never reaches the CA role.
	csr, err := pki.ParseCSR(req.CSR)
	if err != nil {
		fail("enrollment request: " + err.Error())
		return
	}
	// A token redeemed before for this device and key passes: the hub's
	// first answer was lost, and the CA role returns the same certificate.
	if err := b.opts.Store.CheckEnrollmentToken(ctx, hash, req.DeviceID, pki.PublicKeySum(csr.PublicKey)); err != nil {
		var re *store.EnrollRefusedError
		if errors.As(err, &re) {
			log.Warn("enrollment refused", "reason", re.Reason)
			fail(re.Error())
			return
		}
		log.Error("checking an enrollment token", "error", err)
		fail("the mesh cannot check the token now: try again in a minute")
		return
	}
	select {
	case b.enrollLim.slots <- struct{}{}:
		defer func() { <-b.enrollLim.slots }()
	default:
		b.m.enrollment("limited")
		log.Warn("enrollment refused: every CA slot is taken")
		fail("the bridge is busy with other enrollments: try again in a minute")
		return
	}
	res, err := b.opts.Enroller.Enroll(ctx, activities.EnrollInput{TokenHash: hash, DeviceID: req.DeviceID, CSR: req.CSR})
	if err != nil {
		var ae *temporal.ApplicationError
		if errors.As(err, &ae) && ae.Type() == activities.ErrRenewRefused {
			log.Warn("enrollment refused by the CA role", "reason", ae.Message())
			fail(ae.Message())
			return
		}
		log.Error("enrollment", "error", err)
		fail("the mesh's CA role did not answer: try again in a minute")
		return
	}
	if err := checkEnrolled(res, req); err != nil {
		log.Error("the CA role's enrollment is unusable", "error", err)
		fail("the CA returned an unusable certificate: try again later")
		return
	}
	_ = s.SetWriteDeadline(time.Now().Add(10 * time.Second))
	var out bytes.Buffer
	out.WriteByte(EnrollOK)
	_ = WriteFrame(&out, res.CertPEM)
	_ = WriteFrame(&out, res.CAPEM)
	if _, err := s.Write(out.Bytes()); err != nil {
		log.Warn("the hub left before its certificate was sent", "error", err)
		return
	}
	b.m.enrollment("enrolled")
	log.Info("hub enrolled", "account", res.Account)
	b.endEnroll(c, s)
}

// endEnroll closes the answer's stream and gives the hub a moment to read
// it and close the connection itself (closing it here at once could drop
// the answer), then ends it.
func (b *Bridge) endEnroll(c Conn, s Stream) {
	_ = s.Close()
	select {
	case <-c.Context().Done():
	case <-time.After(5 * time.Second):
	}
	_ = c.CloseWithError(CodeShutdown, "enrollment done")
}

// checkEnrolled checks what the CA role returned: one certificate for the
// device asked for, over the request's key, and a CA certificate.
func checkEnrolled(res activities.EnrollResult, req EnrollRequest) error {
	cert, err := ParseRenewedCert(res.CertPEM)
	if err != nil {
		return err
	}
	id, err := pki.IdentityOf(cert)
	if err != nil {
		return err
	}
	if id.DeviceID != req.DeviceID {
		return fmt.Errorf("the CA signed device %s, not %s", id.DeviceID, req.DeviceID)
	}
	csr, err := pki.ParseCSR(req.CSR)
	if err != nil {
		return err
	}
	pub, err := x509.MarshalPKIXPublicKey(csr.PublicKey)
	if err != nil {
		return err
	}
	if !bytes.Equal(pub, cert.RawSubjectPublicKeyInfo) {
		return errors.New("the CA signed another key than the request's")
	}
	if len(res.CAPEM) == 0 || len(res.CAPEM) > MaxCertPEMBytes {
		return fmt.Errorf("CA certificate of %d bytes", len(res.CAPEM))
	}
	return nil
}

// Enroll has the CA role enroll a new hub through an EnrollWorkflow on the
// cloud queue. The same request sent again names the same workflow.
func (t *Temporal) Enroll(ctx context.Context, in activities.EnrollInput) (activities.EnrollResult, error) {
	sum := sha256.Sum256(in.CSR)
	tok := in.TokenHash
	if len(tok) > 8 {
		tok = tok[:8]
	}
	run, err := t.Client.ExecuteWorkflow(ctx, client.StartWorkflowOptions{
		ID:        "enroll-" + in.DeviceID + ":" + hex.EncodeToString(tok) + ":" + hex.EncodeToString(sum[:8]),
		TaskQueue: workers.CloudQueue, WorkflowIDConflictPolicy: enumspb.WORKFLOW_ID_CONFLICT_POLICY_USE_EXISTING,
		WorkflowExecutionTimeout: 2 * time.Minute,
	}, workflows.EnrollWorkflow, in)
	if err != nil {
		return activities.EnrollResult{}, &UnavailableError{Err: err}
	}
	var res activities.EnrollResult
	if err := run.Get(ctx, &res); err != nil {
		return activities.EnrollResult{}, err
	}
	return res, nil
}
