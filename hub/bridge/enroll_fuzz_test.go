package bridge

import (
	"bytes"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/superinstance/mesh/internal/pki"
)

// FuzzEnrollRequest feeds an enrollment stream's bytes (after its kind) to
// what the bridge reads: nothing panics, no frame over its bound is read,
// and what is accepted is a valid secret, device id and signed CSR.
func FuzzEnrollRequest(f *testing.F) {
	key, _ := pki.NewDeviceKey()
	csr, _ := pki.NewCSR(key)
	var good bytes.Buffer
	_ = WriteEnrollRequest(&good, EnrollRequest{Secret: "si_enroll_abc", DeviceID: "gpu-1", CSR: csr})
	f.Add(good.Bytes()[1:])
	f.Add([]byte{0xff, 0xff, 1, 2, 3})
	f.Add([]byte{0, 0})
	f.Add([]byte{0, 1, 'a', 0, 1, 'b', 0, 3, 0x30, 0x01, 0x00})
	f.Fuzz(func(t *testing.T, b []byte) {
		req, err := ReadEnrollRequest(bytes.NewReader(b))
		if err != nil {
			return
		}
		if pki.ValidEnrollSecret(req.Secret) != nil || pki.ValidID("device id", req.DeviceID) != nil {
			t.Fatalf("accepted %q / %q", req.Secret, req.DeviceID)
		}
		if c, err := pki.ParseCSR(req.CSR); err != nil || c.CheckSignature() != nil {
			t.Fatal("accepted a request its key did not sign")
		}
	})
}

// FuzzEnrollAnswer feeds what a bridge (or an impostor) may answer to the
// hub's reader: nothing panics and nothing over its bound is kept.
func FuzzEnrollAnswer(f *testing.F) {
	var ok bytes.Buffer
	ok.WriteByte(EnrollOK)
	_ = WriteFrame(&ok, []byte("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"))
	_ = WriteFrame(&ok, []byte("ca"))
	f.Add(ok.Bytes())
	f.Add([]byte{EnrollFailed, 0, 3, 'n', 'o', 0xff})
	f.Add([]byte{EnrollOK, 0xff, 0xff})
	f.Add([]byte{7})
	f.Fuzz(func(t *testing.T, b []byte) {
		certPEM, caPEM, err := ReadEnrollAnswer(bytes.NewReader(b))
		var re *EnrollRefusedError
		if errors.As(err, &re) && len(re.Reason) > 3*MaxEnrollReason {
			t.Fatalf("reason of %d bytes", len(re.Reason))
		}
		if len(certPEM) > MaxCertPEMBytes || len(caPEM) > MaxCertPEMBytes {
			t.Fatal("an answer over its bound was read")
		}
		_, _ = ParseRenewedCert(certPEM)
	})
}

func TestEnrollLimits(t *testing.T) {
	l := newEnrollLimits(2, 1)
	now := time.Now()
	for i, want := range []bool{true, true, false} {
		if got := l.allow("a", now); got != want {
			t.Fatalf("attempt %d from one source allowed=%v, want %v (2 a minute)", i+1, got, want)
		}
	}
	if !l.allow("b", now) {
		t.Fatal("another source was limited by the first")
	}
	if !l.allow("a", now.Add(31*time.Second)) {
		t.Fatal("the bucket did not refill")
	}
	for _, tc := range []struct {
		addr net.Addr
		want string
	}{
		{&net.UDPAddr{IP: net.ParseIP("192.0.2.7"), Port: 1}, "192.0.2.7"},
		{&net.TCPAddr{IP: net.ParseIP("::ffff:192.0.2.7"), Port: 2}, "192.0.2.7"},
		{&net.UDPAddr{IP: net.ParseIP("2001:db8:1:2:3:4:5:6"), Port: 3}, "2001:db8:1::/56"},
		{&net.UDPAddr{IP: net.ParseIP("2001:db8:1:ff:ffff::1"), Port: 4}, "2001:db8:1::/56"},
		{&net.UDPAddr{IP: net.ParseIP("2001:db8:1:100::1"), Port: 5}, "2001:db8:1:100::/56"},
	} {
		if got := sourceOf(tc.addr); got != tc.want {
			t.Errorf("sourceOf(%v) = %q, want %q", tc.addr, got, tc.want)
		}
	}
}

// TestEnrollLimitsFullTable: a stranger who fills the per-source table
// with fresh sources does not lock new sources out; the oldest entries go.
func TestEnrollLimitsFullTable(t *testing.T) {
	l := newEnrollLimits(2, 1)
	l.maxSources = 3
	now := time.Now()
	for _, src := range []string{"a", "b", "c"} {
		if !l.allow(src, now) {
			t.Fatalf("source %s refused", src)
		}
	}
	_ = l.allow("a", now) // a is now the most recent
	if !l.allow("d", now) {
		t.Fatal("a new source was refused while the table was full")
	}
	if len(l.sources) != 3 {
		t.Fatalf("the table holds %d sources, bound 3", len(l.sources))
	}
	if _, ok := l.sources["b"]; ok {
		t.Fatal("the least recently seen source was kept")
	}
	if l.allow("a", now) {
		t.Fatal("a's bucket was forgotten while it was in use")
	}
}
