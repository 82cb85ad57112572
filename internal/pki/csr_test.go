package pki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"net/url"
	"testing"
	"time"
)

func TestSignDeviceCSR(t *testing.T) {
	ca, err := InitCA(t.TempDir(), false, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	id := Identity{DeviceID: "gpu-1", Account: "acme"}
	key, _ := NewDeviceKey()
	other, _ := url.Parse("si-mesh://victim/device/gpu-9")
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject: pkix.Name{CommonName: "gpu-9", Organization: []string{"victim"}}, URIs: []*url.URL{other}, DNSNames: []string{"bridge.example"}}, key)
	if err != nil {
		t.Fatal(err)
	}
	is, err := ca.SignDeviceCSR(csr, id, 6*time.Second, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := IdentityOf(is.Cert); got != id || len(is.Cert.URIs) != 1 || len(is.Cert.DNSNames) != 0 || is.Cert.IsCA {
		t.Fatalf("signed %v %v %v: the request's names must be ignored", got, is.Cert.URIs, is.Cert.DNSNames)
	}
	if is.KeyPEM != nil {
		t.Fatal("a CSR's certificate came with a key")
	}
	if life := is.Cert.NotAfter.Sub(is.Cert.NotBefore); life > 7*time.Second {
		t.Fatalf("a 6s certificate spans %s: backdating must leave two thirds of it ahead", life)
	}

	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	rsaCSR, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, rsaKey)
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	p384CSR, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, p384)
	forged := append([]byte(nil), csr...)
	forged[len(forged)-3] ^= 0xff
	for name, b := range map[string][]byte{
		"empty": nil, "too long": make([]byte, MaxCSRBytes+1), "garbage": []byte("hello"),
		"not signed by its key": forged, "RSA": rsaCSR, "P-384": p384CSR,
	} {
		if _, err := ca.SignDeviceCSR(b, id, time.Hour, time.Now()); err == nil {
			t.Errorf("%s: signed", name)
		}
	}
}
