// Package pki is the mesh's certificate authority: it issues each hub a
// short-lived device certificate and the bridge its server certificate, and
// builds the TLS 1.3 configurations both sides use. A device's identity (its
// id and account) lives in the certificate as a URI SAN,
// si-mesh://<account>/device/<id>, and nowhere else.
package pki

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"
)

// ALPN is the protocol hubs and the bridge speak.
const ALPN = "si-mesh/1"

// DefaultDeviceTTL is how long a device certificate is valid. Hubs renew
// theirs over the tunnel at two thirds of its life.
const DefaultDeviceTTL = 24 * time.Hour

// Files of a CA directory and of a device directory.
const (
	CACertFile = "ca.pem"
	CAKeyFile  = "ca-key.pem"
	CertFile   = "cert.pem"
	KeyFile    = "key.pem"
)

// Identity is who a device certificate speaks for.
type Identity struct {
	DeviceID string
	Account  string
}

var idPattern = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,62}$`)

// ValidID checks a device or account id: 1-63 lower-case letters, digits, '.', '_' or '-'.
func ValidID(kind, id string) error {
	if !idPattern.MatchString(id) {
		return fmt.Errorf("invalid %s %q: use 1-63 lower-case letters, digits, '.', '_' or '-', starting with a letter or digit", kind, id)
	}
	return nil
}

// URI is the identity as the certificate carries it.
func (id Identity) URI() *url.URL {
	return &url.URL{Scheme: "si-mesh", Host: id.Account, Path: "/device/" + id.DeviceID}
}

// IdentityOf reads the identity from a device certificate.
func IdentityOf(cert *x509.Certificate) (Identity, error) {
	for _, u := range cert.URIs {
		if u.Scheme != "si-mesh" {
			continue
		}
		dev, ok := strings.CutPrefix(u.Path, "/device/")
		if !ok {
			continue
		}
		id := Identity{DeviceID: dev, Account: u.Host}
		if ValidID("device id", id.DeviceID) != nil || ValidID("account", id.Account) != nil {
			return Identity{}, errors.New("certificate carries a malformed mesh identity")
		}
		return id, nil
	}
	return Identity{}, errors.New("certificate carries no mesh identity")
}

// CA is the mesh certificate authority.
type CA struct {
	Cert    *x509.Certificate
	CertPEM []byte
	Key     crypto.Signer
}

// InitCA creates a CA in dir. It refuses to replace an existing one unless force.
func InitCA(dir string, force bool, now time.Time) (*CA, error) {
	if _, err := os.Stat(filepath.Join(dir, CAKeyFile)); err == nil && !force {
		return nil, fmt.Errorf("a CA already exists in %s (--force replaces it, and every certificate it issued stops working)", dir)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: "SuperInstance mesh CA", Organization: []string{"SuperInstance"}},
		NotBefore:             now.Add(-time.Minute),
		NotAfter:              now.AddDate(10, 0, 0),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	ca := &CA{Key: key, CertPEM: pemBlock("CERTIFICATE", der)}
	if ca.Cert, err = x509.ParseCertificate(der); err != nil {
		return nil, err
	}
	keyPEM, err := keyToPEM(key)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	if err := writeFile(filepath.Join(dir, CAKeyFile), keyPEM, 0o600); err != nil {
		return nil, err
	}
	return ca, writeFile(filepath.Join(dir, CACertFile), ca.CertPEM, 0o644)
}

// LoadCA reads a CA from dir.
func LoadCA(dir string) (*CA, error) {
	certPEM, err := os.ReadFile(filepath.Join(dir, CACertFile))
	if err != nil {
		return nil, fmt.Errorf("no mesh CA in %s (create one with `si ca init`): %w", dir, err)
	}
	keyPEM, err := os.ReadFile(filepath.Join(dir, CAKeyFile))
	if err != nil {
		return nil, fmt.Errorf("mesh CA key: %w", err)
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("mesh CA in %s: %w", dir, err)
	}
	cert, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		return nil, err
	}
	signer, ok := pair.PrivateKey.(crypto.Signer)
	if !ok || !cert.IsCA {
		return nil, fmt.Errorf("%s is not a CA certificate and key", dir)
	}
	return &CA{Cert: cert, CertPEM: certPEM, Key: signer}, nil
}

// Issued is a certificate and its key, PEM-encoded.
type Issued struct {
	Cert    *x509.Certificate
	CertPEM []byte
	KeyPEM  []byte
}

// IssueDevice issues a client certificate for id valid for ttl. A nil key
// generates a new one; renewing passes the device's existing key.
func (ca *CA) IssueDevice(id Identity, key crypto.Signer, ttl time.Duration, now time.Time) (Issued, error) {
	if err := errors.Join(ValidID("device id", id.DeviceID), ValidID("account", id.Account)); err != nil {
		return Issued{}, err
	}
	if ttl <= 0 {
		ttl = DefaultDeviceTTL
	}
	return ca.issue(&x509.Certificate{
		Subject:     pkix.Name{CommonName: id.DeviceID, Organization: []string{id.Account}},
		URIs:        []*url.URL{id.URI()},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}, key, ttl, now)
}

// IssueServer issues the bridge's server certificate for hosts (names or IPs).
func (ca *CA) IssueServer(hosts []string, ttl time.Duration, now time.Time) (Issued, error) {
	tmpl := &x509.Certificate{Subject: pkix.Name{CommonName: "si bridge"}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else if h != "" {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	return ca.issue(tmpl, nil, ttl, now)
}

func (ca *CA) issue(tmpl *x509.Certificate, key crypto.Signer, ttl time.Duration, now time.Time) (Issued, error) {
	if key == nil {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return Issued{}, err
		}
		key = k
	}
	tmpl.SerialNumber = serial()
	// Backdated for clocks a little behind, by no more than a tenth of the
	// life, so that two thirds of it is still ahead when the hub receives it.
	tmpl.NotBefore = now.Add(-min(time.Minute, ttl/10))
	tmpl.NotAfter = now.Add(ttl)
	if tmpl.NotAfter.After(ca.Cert.NotAfter) {
		tmpl.NotAfter = ca.Cert.NotAfter
	}
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, key.Public(), ca.Key)
	if err != nil {
		return Issued{}, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return Issued{}, err
	}
	is := Issued{Cert: cert, CertPEM: pemBlock("CERTIFICATE", der)}
	if _, signed := key.(publicOnly); !signed {
		if is.KeyPEM, err = keyToPEM(key); err != nil {
			return Issued{}, err
		}
	}
	return is, nil
}

// Serial is a certificate's serial number as the registry stores it.
func Serial(c *x509.Certificate) string { return c.SerialNumber.Text(16) }

// Save writes an issued certificate and key into dir, with the CA's certificate.
func (is Issued) Save(dir string, caPEM []byte) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	if err := writeFile(filepath.Join(dir, KeyFile), is.KeyPEM, 0o600); err != nil {
		return err
	}
	if err := writeFile(filepath.Join(dir, CertFile), is.CertPEM, 0o644); err != nil {
		return err
	}
	return writeFile(filepath.Join(dir, CACertFile), caPEM, 0o644)
}

// LoadKey reads a PEM private key.
func LoadKey(path string) (crypto.Signer, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		return nil, fmt.Errorf("%s holds no PEM key", path)
	}
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	s, ok := k.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("%s: unsupported key type", path)
	}
	return s, nil
}

// Checker decides whether a verified device certificate may connect: the
// registry's answer to "is this serial revoked?".
type Checker func(ctx context.Context, id Identity, serial string) error

// ServerTLS is the bridge's TLS configuration: TLS 1.3 only, ALPN si-mesh/1,
// and a client certificate that chains to the mesh CA, is within its validity
// and passes check. Anything else fails the handshake.
func ServerTLS(caPEM []byte, server tls.Certificate, check Checker) (*tls.Config, error) {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, errors.New("mesh CA certificate is not PEM")
	}
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{server},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    pool,
		NextProtos:   []string{ALPN},
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return errors.New("no client certificate")
			}
			leaf := cs.PeerCertificates[0]
			id, err := IdentityOf(leaf)
			if err != nil {
				return err
			}
			if check == nil {
				return nil
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			return check(ctx, id, Serial(leaf))
		},
	}, nil
}

// ClientTLS is a hub's TLS configuration from its PEM files.
func ClientTLS(caPEM, certPEM, keyPEM []byte, serverName string) (*tls.Config, error) {
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("device certificate: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, errors.New("mesh CA certificate is not PEM")
	}
	return &tls.Config{
		MinVersion:         tls.VersionTLS13,
		Certificates:       []tls.Certificate{pair},
		RootCAs:            pool,
		ServerName:         serverName,
		NextProtos:         []string{ALPN},
		ClientSessionCache: tls.NewLRUClientSessionCache(8),
	}, nil
}

// PeerIdentity reads the verified identity of a connection's peer.
func PeerIdentity(cs tls.ConnectionState) (Identity, string, error) {
	if len(cs.PeerCertificates) == 0 {
		return Identity{}, "", errors.New("no client certificate")
	}
	id, err := IdentityOf(cs.PeerCertificates[0])
	return id, Serial(cs.PeerCertificates[0]), err
}

func serial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	return n
}

func keyToPEM(k crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return nil, err
	}
	return pemBlock("PRIVATE KEY", der), nil
}

func pemBlock(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

// writeFile replaces path atomically so a crash never leaves half a key.
func writeFile(path string, data []byte, mode os.FileMode) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, mode); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
