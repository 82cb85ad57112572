package client

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// DefaultAPIURL is where `si dev` serves the API.
const DefaultAPIURL = "http://127.0.0.1:9464"

// Source values say who wrote a credential.
const (
	SourceLogin = "login"  // si login
	SourceDev   = "si dev" // a running si dev, for its "dev" account
)

// Credentials is what `si login` stores: the API to talk to and the token
// that names the account.
type Credentials struct {
	APIURL  string `json:"api_url"`
	Token   string `json:"token"`
	Account string `json:"account,omitempty"`
	Source  string `json:"source,omitempty"`
}

// ErrNoCredentials says no one is logged in.
var ErrNoCredentials = errors.New("not logged in: run `si login` (or set SI_TOKEN); `si dev` logs you in to its own mesh")

// CredentialsPath is the credentials file: credentials.json in si's
// directory under the user's config directory (~/.config/si on Linux,
// $XDG_CONFIG_HOME/si when that is set).
func CredentialsPath() (string, error) {
	dir, err := os.UserConfigDir()
	if err != nil {
		return "", fmt.Errorf("no config directory for the credentials: %w", err)
	}
	return filepath.Join(dir, "si", "credentials.json"), nil
}

// LoadCredentials reads the stored credentials, or ErrNoCredentials.
func LoadCredentials() (Credentials, error) {
	var c Credentials
	p, err := CredentialsPath()
	if err != nil {
		return c, err
	}
	b, err := os.ReadFile(p)
	if errors.Is(err, os.ErrNotExist) {
		return c, ErrNoCredentials
	}
	if err != nil {
		return c, err
	}
	if len(b) > 64<<10 {
		return c, fmt.Errorf("%s is too large to be si's credentials: remove it and run si login", p)
	}
	if err := json.Unmarshal(b, &c); err != nil {
		return c, fmt.Errorf("%s is not valid (%v): run si login again", p, err)
	}
	if c.Token == "" {
		return c, ErrNoCredentials
	}
	return c, nil
}

// SaveCredentials writes c readable by the user alone, replacing what was
// there in one rename.
func SaveCredentials(c Credentials) (string, error) {
	p, err := CredentialsPath()
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		return "", err
	}
	b, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return "", err
	}
	tmp, err := os.CreateTemp(filepath.Dir(p), ".credentials-*")
	if err != nil {
		return "", err
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return "", err
	}
	if _, err := tmp.Write(append(b, '\n')); err != nil {
		tmp.Close()
		return "", err
	}
	if err := tmp.Close(); err != nil {
		return "", err
	}
	return p, os.Rename(tmp.Name(), p)
}

// RemoveCredentials deletes the stored credentials; removed is false when
// there were none.
func RemoveCredentials() (removed bool, err error) {
	p, err := CredentialsPath()
	if err != nil {
		return false, err
	}
	err = os.Remove(p)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	return err == nil, err
}
