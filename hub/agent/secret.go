package agent

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// SecretFile is the name of the local API's secret in a hub's directory.
const SecretFile = "api-secret"

// minSecretLen is the shortest secret accepted from a file (hex characters).
const minSecretLen = 32

// LoadOrCreateSecret returns the local API secret kept in path, creating the
// file (mode 0600, 32 random bytes in hex) if it does not exist. A file that
// other users can read, or too short to be a secret, is refused.
func LoadOrCreateSecret(path string) (string, error) {
	if path == "" {
		return "", errors.New("the hub API needs a secret file")
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return "", fmt.Errorf("hub API secret: %w", err)
	}
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	switch {
	case err == nil:
		_, werr := f.WriteString(hex.EncodeToString(b[:]) + "\n")
		if cerr := f.Close(); werr == nil {
			werr = cerr
		}
		if werr != nil {
			_ = os.Remove(path)
			return "", fmt.Errorf("hub API secret %s: %w", path, werr)
		}
	case !errors.Is(err, os.ErrExist):
		return "", fmt.Errorf("hub API secret: %w", err)
	}
	return ReadSecret(path)
}

// ReadSecret reads the local API secret from path, as si escalate does.
func ReadSecret(path string) (string, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return "", fmt.Errorf("hub API secret: %w (the hub writes it when it starts)", err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return "", fmt.Errorf("hub API secret %s can be read by other users (mode %#o): run chmod 600 %s", path, fi.Mode().Perm(), path)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("hub API secret: %w", err)
	}
	s := strings.TrimSpace(string(b))
	if len(s) < minSecretLen || strings.ContainsAny(s, " \t\r\n") {
		return "", fmt.Errorf("hub API secret %s is not a secret (%d characters): delete it and restart the hub to make a new one", path, len(s))
	}
	return s, nil
}
