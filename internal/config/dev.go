package config

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/superinstance/mesh/internal/store"
)

// DevState is what a running `si dev` tells other commands, in <data-dir>/dev.json.
type DevState struct {
	PID             int    `json:"pid"`
	TemporalAddress string `json:"temporal_address"`
	UIURL           string `json:"ui_url,omitempty"`
	DatabaseURL     string `json:"database_url"`
	LLMBaseURL      string `json:"llm_base_url"`
	Simulator       bool   `json:"simulator"`
	HubID           string `json:"hub_id"`
	BridgeAddress   string `json:"bridge_address,omitempty"`
	HubAPI          string `json:"hub_api,omitempty"`
	MetricsURL      string `json:"metrics_url,omitempty"`
	CADir           string `json:"ca_dir,omitempty"`
}

// DevDir is `si dev`'s default data directory.
func DevDir() string { return filepath.Join(HomeDir(), "dev") }

// ReadDevState reads a running `si dev`'s state from dataDir.
func ReadDevState(dataDir string) (DevState, error) {
	var s DevState
	b, err := os.ReadFile(filepath.Join(dataDir, "dev.json"))
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return s, fmt.Errorf("no running si dev in %s", dataDir)
		}
		return s, err
	}
	return s, json.Unmarshal(b, &s)
}

// Database holds the flags that reach PostgreSQL.
type Database struct {
	URL    string
	DevDir string
}

// Register adds --database-url and --dev-dir to fs.
func (d *Database) Register(fs *flag.FlagSet) {
	fs.StringVar(&d.URL, "database-url", "", "PostgreSQL connection string (default: the running si dev's)")
	fs.StringVar(&d.DevDir, "dev-dir", DevDir(), "data directory of the si dev whose database to use when --database-url is empty")
}

// Resolve returns the database URL: the flag's, else the running si dev's.
func (d *Database) Resolve() (string, error) {
	if d.URL != "" {
		return d.URL, nil
	}
	st, err := ReadDevState(d.DevDir)
	if err != nil || st.DatabaseURL == "" {
		return "", errors.New("no database: pass --database-url (or SI_DATABASE_URL), or start `si dev`")
	}
	return st.DatabaseURL, nil
}

// Open connects to the resolved database.
func (d *Database) Open(ctx context.Context) (*store.Store, error) {
	url, err := d.Resolve()
	if err != nil {
		return nil, err
	}
	return store.Open(ctx, url)
}
