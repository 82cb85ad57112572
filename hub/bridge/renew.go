package bridge

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/binary"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/client"

	"github.com/superinstance/mesh/activities"
	"github.com/superinstance/mesh/internal/pki"
	"github.com/superinstance/mesh/workers"
	"github.com/superinstance/mesh/workflows"
)

// StreamRenew is the stream a hub opens to renew its certificate over the
// link: it sends a certificate request for a key it made and keeps, the
// bridge relays it to the CA role and returns the signed certificate, the
// hub loads it and says so, and the bridge then holds the connection to the
// new certificate and revokes the old one.
//
//	hub:    'N' frame(CSR DER)
//	bridge: RenewOK frame(certificate PEM) | RenewFailed frame(reason)
//	hub:    RenewInstalled
//
// A frame is a big-endian uint16 length and that many bytes.
const StreamRenew byte = 'N'

// Renewal answers and the hub's confirmation.
const (
	RenewOK        byte = 0
	RenewFailed    byte = 1
	RenewInstalled byte = 'I'
)

// MaxCertPEMBytes bounds the certificate a hub accepts in answer.
const MaxCertPEMBytes = 8192

// Renewer signs a renewal for the certificate a connection was verified
// with (identity and serial); only the CA role can: the bridge holds no CA key.
type Renewer interface {
	RenewDevice(ctx context.Context, id pki.Identity, serial string, csrDER []byte) (certPEM []byte, err error)
}

// WriteFrame writes b as one frame.
func WriteFrame(w io.Writer, b []byte) error {
	if len(b) > 0xffff {
		return fmt.Errorf("frame of %d bytes is too long", len(b))
	}
	buf := make([]byte, 2+len(b))
	binary.BigEndian.PutUint16(buf, uint16(len(b)))
	copy(buf[2:], b)
	_, err := w.Write(buf)
	return err
}

// ReadFrame reads one frame of at most limit bytes; a longer one is refused
// before its body is read.
func ReadFrame(r io.Reader, limit int) ([]byte, error) {
	var n [2]byte
	if _, err := io.ReadFull(r, n[:]); err != nil {
		return nil, err
	}
	size := int(binary.BigEndian.Uint16(n[:]))
	if size == 0 || size > limit {
		return nil, fmt.Errorf("frame of %d bytes: it must be 1 to %d", size, limit)
	}
	b := make([]byte, size)
	if _, err := io.ReadFull(r, b); err != nil {
		return nil, err
	}
	return b, nil
}

// ParseRenewedCert reads the certificate a renewal returned: one PEM
// certificate, no longer than MaxCertPEMBytes.
func ParseRenewedCert(certPEM []byte) (*x509.Certificate, error) {
	if len(certPEM) > MaxCertPEMBytes {
		return nil, fmt.Errorf("renewed certificate of %d bytes is too long", len(certPEM))
	}
	blk, rest := pem.Decode(certPEM)
	if blk == nil || blk.Type != "CERTIFICATE" || len(rest) != 0 {
		return nil, errors.New("renewed certificate is not one PEM certificate")
	}
	return x509.ParseCertificate(blk.Bytes)
}

// renew serves one StreamRenew stream of connection c.
func (b *Bridge) renew(ctx context.Context, c Conn, s Stream, id pki.Identity, log *slog.Logger) {
	defer s.Close()
	defer s.CancelRead(streamTimedOut)
	fail := func(reason string) {
		log.Warn("certificate renewal refused", "reason", reason)
		_, _ = s.Write([]byte{RenewFailed})
		_ = WriteFrame(s, []byte(reason))
	}
	csr, err := ReadFrame(s, pki.MaxCSRBytes)
	if err != nil {
		fail("certificate request: " + err.Error())
		return
	}
	if _, err := pki.ParseCSR(csr); err != nil {
		fail(err.Error())
		return
	}
	if b.opts.Renewer == nil {
		fail("this bridge does not renew certificates: renew with si device renew")
		return
	}
	b.mu.Lock()
	old, ok := b.peers[id.DeviceID][c]
	b.mu.Unlock()
	if !ok {
		return
	}
	// Hubs renew at two thirds of the life; earlier than half is refused,
	// so that one stolen certificate cannot mint a stream of new ones.
	if half := old.notBefore.Add(old.notAfter.Sub(old.notBefore) / 2); time.Now().Before(half) {
		fail("certificate renewed too early: renew after " + half.UTC().Format(time.RFC3339) + " (hubs renew at two thirds of its life)")
		return
	}
	rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	certPEM, err := b.opts.Renewer.RenewDevice(rctx, id, old.serial, csr)
	cancel()
	if err != nil {
		fail(err.Error())
		return
	}
	cert, err := ParseRenewedCert(certPEM)
	if err == nil {
		var got pki.Identity
		if got, err = pki.IdentityOf(cert); err == nil && got != id {
			err = fmt.Errorf("the CA signed %v, not %v", got, id)
		}
	}
	if err != nil {
		log.Error("the CA role's renewal is unusable", "error", err)
		fail("the CA returned an unusable certificate; try again later")
		return
	}
	if _, err := s.Write([]byte{RenewOK}); err != nil {
		return
	}
	if err := WriteFrame(s, certPEM); err != nil {
		return
	}
	_ = s.SetReadDeadline(time.Now().Add(b.opts.StreamReadTimeout))
	var done [1]byte
	if _, err := io.ReadFull(s, done[:]); err != nil || done[0] != RenewInstalled {
		// The hub may not have loaded it: both serials stay valid, and the
		// connection stays bound to the old one until it expires.
		log.Warn("hub did not confirm its renewed certificate", "serial", pki.Serial(cert))
		return
	}
	next := peer{id: id, serial: pki.Serial(cert), notAfter: cert.NotAfter, notBefore: cert.NotBefore}
	b.mu.Lock()
	if _, open := b.peers[id.DeviceID][c]; open {
		b.peers[id.DeviceID][c] = next
	}
	if hc := b.conns[id.DeviceID]; hc != nil && hc.conn == c {
		hc.serial = next.serial
	}
	b.mu.Unlock()
	if err := b.opts.Store.RevokeCert(context.WithoutCancel(ctx), id.DeviceID, old.serial); err != nil {
		log.Error("revoke the renewed certificate", "serial", old.serial, "error", err)
	}
	log.Info("certificate renewed", "old_serial", old.serial, "serial", next.serial, "not_after", next.notAfter)
}

var _ Renewer = (*Temporal)(nil)

// RenewDevice has the CA role sign a renewal through a RenewCertWorkflow on
// the cloud queue. The same request sent again names the same workflow.
func (t *Temporal) RenewDevice(ctx context.Context, id pki.Identity, serial string, csrDER []byte) ([]byte, error) {
	sum := sha256.Sum256(csrDER)
	run, err := t.Client.ExecuteWorkflow(ctx, client.StartWorkflowOptions{
		ID: "renew-" + id.DeviceID + ":" + serial + ":" + hex.EncodeToString(sum[:8]), TaskQueue: workers.CloudQueue,
		WorkflowIDConflictPolicy: enumspb.WORKFLOW_ID_CONFLICT_POLICY_USE_EXISTING,
		WorkflowExecutionTimeout: 3 * time.Minute,
	}, workflows.RenewCertWorkflow, activities.RenewCertInput{DeviceID: id.DeviceID, Account: id.Account, Serial: serial, CSR: csrDER})
	if err != nil {
		return nil, &UnavailableError{Err: err}
	}
	var res activities.RenewCertResult
	if err := run.Get(ctx, &res); err != nil {
		return nil, err
	}
	return res.CertPEM, nil
}
