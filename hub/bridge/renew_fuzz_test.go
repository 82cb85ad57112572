package bridge

import (
	"bytes"
	"testing"

	"github.com/superinstance/mesh/internal/pki"
)

// FuzzRenewRequest feeds a renewal stream's bytes, as a hub sends them, to
// what the bridge reads: a frame within pki.MaxCSRBytes, then ParseCSR.
// Nothing panics, and nothing longer than the bound is read into memory.
func FuzzRenewRequest(f *testing.F) {
	key, _ := pki.NewDeviceKey()
	csr, _ := pki.NewCSR(key)
	var good bytes.Buffer
	_ = WriteFrame(&good, csr)
	f.Add(good.Bytes())
	f.Add([]byte{0xff, 0xff, 1, 2, 3})
	f.Add([]byte{0, 0})
	f.Add([]byte{0, 3, 0x30, 0x01, 0x00})
	f.Fuzz(func(t *testing.T, b []byte) {
		body, err := ReadFrame(bytes.NewReader(b), pki.MaxCSRBytes)
		if err != nil {
			return
		}
		if len(body) > pki.MaxCSRBytes || len(body) == 0 {
			t.Fatalf("frame of %d bytes accepted", len(body))
		}
		if c, err := pki.ParseCSR(body); err == nil && c.CheckSignature() != nil {
			t.Fatal("accepted a request its key did not sign")
		}
	})
}

// FuzzRenewedCert feeds what a bridge may answer to the hub's parser.
func FuzzRenewedCert(f *testing.F) {
	f.Add([]byte("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _ = ParseRenewedCert(b)
	})
}

func TestFrameBounds(t *testing.T) {
	var buf bytes.Buffer
	if err := WriteFrame(&buf, make([]byte, pki.MaxCSRBytes+1)); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadFrame(&buf, pki.MaxCSRBytes); err == nil {
		t.Fatal("a frame over the bound was read")
	}
	if err := WriteFrame(&buf, make([]byte, 0x10000)); err == nil {
		t.Fatal("wrote a frame whose length does not fit")
	}
}
