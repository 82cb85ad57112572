package pki

import (
	"crypto/sha256"
	"strings"
	"testing"
	"time"
)

func TestEnrollToken(t *testing.T) {
	ca, err := InitCA(t.TempDir(), false, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	sum, err := CAFingerprint(ca.CertPEM)
	if err != nil {
		t.Fatal(err)
	}
	if sum != sha256.Sum256(ca.Cert.Raw) {
		t.Fatal("the fingerprint is not the certificate's SHA-256")
	}
	tok := EnrollToken{Secret: "si_enroll_AbC-123", CA: sum}
	back, err := ParseEnrollToken(" " + tok.String() + "\n")
	if err != nil || back != tok {
		t.Fatalf("round trip: %+v %v", back, err)
	}
	for _, bad := range []string{"", "si_enroll_abc", "si2." + tok.Secret + "." + strings.Repeat("0", 64),
		"si1.." + strings.Repeat("0", 64), "si1.a b." + strings.Repeat("0", 64), "si1.abc." + strings.Repeat("0", 63),
		"si1.abc." + strings.Repeat("g", 64), "si1.abc.def.0", "si1." + strings.Repeat("a", 200) + "." + strings.Repeat("0", 64)} {
		if _, err := ParseEnrollToken(bad); err == nil {
			t.Errorf("accepted %q", bad)
		}
	}
}

// TestVerifyPinnedServer: a bridge's chain passes only with the CA the
// token names, and only for the name dialled.
func TestVerifyPinnedServer(t *testing.T) {
	now := time.Now()
	ca, _ := InitCA(t.TempDir(), false, now)
	other, _ := InitCA(t.TempDir(), false, now)
	srv, _ := ca.IssueServer([]string{"bridge.example", "127.0.0.1"}, time.Hour, now)
	fake, _ := other.IssueServer([]string{"bridge.example"}, time.Hour, now)
	sum, _ := CAFingerprint(ca.CertPEM)
	if err := VerifyPinnedServer([][]byte{srv.Cert.Raw, ca.Cert.Raw}, sum, "bridge.example"); err != nil {
		t.Fatal(err)
	}
	if err := VerifyPinnedServer([][]byte{srv.Cert.Raw, ca.Cert.Raw}, sum, "127.0.0.1"); err != nil {
		t.Fatal(err)
	}
	for name, tc := range map[string]struct {
		chain [][]byte
		host  string
	}{
		"no CA sent":              {[][]byte{srv.Cert.Raw}, "bridge.example"},
		"another CA":              {[][]byte{fake.Cert.Raw, other.Cert.Raw}, "bridge.example"},
		"leaf of another, our CA": {[][]byte{fake.Cert.Raw, ca.Cert.Raw}, "bridge.example"},
		"another name":            {[][]byte{srv.Cert.Raw, ca.Cert.Raw}, "evil.example"},
		"the CA as its own leaf":  {[][]byte{ca.Cert.Raw, ca.Cert.Raw}, "bridge.example"},
		"a device cert as the CA": {[][]byte{srv.Cert.Raw, srv.Cert.Raw}, "bridge.example"},
		"nothing":                 {nil, "bridge.example"},
	} {
		if err := VerifyPinnedServer(tc.chain, sum, tc.host); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func FuzzParseEnrollToken(f *testing.F) {
	f.Add("si1.si_enroll_abc." + strings.Repeat("0", 64))
	f.Add("si1...")
	f.Fuzz(func(t *testing.T, s string) {
		tok, err := ParseEnrollToken(s)
		if err != nil {
			return
		}
		if ValidEnrollSecret(tok.Secret) != nil {
			t.Fatalf("accepted secret %q", tok.Secret)
		}
		if back, err := ParseEnrollToken(tok.String()); err != nil || back != tok {
			t.Fatalf("%q does not round-trip", s)
		}
	})
}
