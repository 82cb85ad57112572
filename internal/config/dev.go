package config

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"github.com/superinstance/mesh/internal/blob"
	"github.com/superinstance/mesh/internal/mail"
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
	StripeURL       string `json:"stripe_url,omitempty"`
	StripeKey       string `json:"stripe_key,omitempty"`
	S3Endpoint      string `json:"s3_endpoint,omitempty"`
	S3Region        string `json:"s3_region,omitempty"`
	S3Bucket        string `json:"s3_bucket,omitempty"`
	S3AccessKey     string `json:"s3_access_key,omitempty"`
	S3SecretKey     string `json:"s3_secret_key,omitempty"`
	SMTPAddr        string `json:"smtp_addr,omitempty"`
	MailURL         string `json:"mail_url,omitempty"`
	PublicURL       string `json:"public_url,omitempty"`
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

// Stripe holds the flags that reach Stripe.
type Stripe struct {
	APIBase    string
	Key        string
	MeterEvent string
	DevDir     string
}

// Register adds --stripe-api-base, --stripe-key and --stripe-meter-event to fs.
func (s *Stripe) Register(fs *flag.FlagSet) {
	fs.StringVar(&s.APIBase, "stripe-api-base", "", "Stripe API base URL (default https://api.stripe.com, or the running si dev's stripe-mock)")
	fs.StringVar(&s.Key, "stripe-key", "", "Stripe secret key")
	fs.StringVar(&s.MeterEvent, "stripe-meter-event", "si_usage_cents", "the billing meter's event name")
}

// Resolve returns the base URL and key to use: the flags', else the running
// si dev's stripe-mock; ok is false when Stripe is not configured.
func (s *Stripe) Resolve() (base, key string, ok bool) {
	if s.Key != "" {
		base = s.APIBase
		if base == "" {
			base = "https://api.stripe.com"
		}
		return base, s.Key, true
	}
	dir := s.DevDir
	if dir == "" {
		dir = DevDir()
	}
	if st, err := ReadDevState(dir); err == nil && st.StripeURL != "" {
		return st.StripeURL, st.StripeKey, true
	}
	return "", "", false
}

// Blob holds the flags that reach the object store (S3, R2 or MinIO).
type Blob struct {
	Config blob.Config
	DevDir string
}

// Register adds the --s3-* flags to fs.
func (b *Blob) Register(fs *flag.FlagSet) {
	fs.StringVar(&b.Config.Endpoint, "s3-endpoint", "", "S3 API endpoint, e.g. https://<account>.r2.cloudflarestorage.com (default: AWS S3, or the running si dev's MinIO)")
	fs.StringVar(&b.Config.Region, "s3-region", "", `region of the bucket ("auto" for R2; default us-east-1)`)
	fs.StringVar(&b.Config.Bucket, "s3-bucket", "", "bucket that holds adapters")
	fs.StringVar(&b.Config.AccessKey, "s3-access-key", "", "access key id")
	fs.StringVar(&b.Config.SecretKey, "s3-secret-key", "", "secret access key")
}

// Resolve returns the configured store, else the running si dev's; ok is
// false when neither is there.
func (b *Blob) Resolve() (blob.Config, bool) {
	if b.Config.Bucket != "" {
		return b.Config, true
	}
	dir := b.DevDir
	if dir == "" {
		dir = DevDir()
	}
	if st, err := ReadDevState(dir); err == nil && st.S3Bucket != "" {
		return blob.Config{Endpoint: st.S3Endpoint, Region: st.S3Region, Bucket: st.S3Bucket, AccessKey: st.S3AccessKey, SecretKey: st.S3SecretKey}, true
	}
	return blob.Config{}, false
}

// Open returns the resolved store.
func (b *Blob) Open() (*blob.Store, error) {
	c, ok := b.Resolve()
	if !ok {
		return nil, errors.New("no object store: pass --s3-bucket and its credentials (or SI_S3_*), or start `si dev`")
	}
	return blob.New(c)
}

// Mail configures the SMTP server the mesh sends email through.
type Mail struct {
	mail.Mailer
}

// Register adds the --smtp-* and --mail-from flags to fs.
func (m *Mail) Register(fs *flag.FlagSet) {
	fs.StringVar(&m.Addr, "smtp-addr", "", "SMTP server host:port for handover emails (si dev runs Mailpit)")
	fs.StringVar(&m.From, "mail-from", "SuperInstance <mesh@superinstance.local>", "sender of the mesh's emails")
	fs.StringVar(&m.User, "smtp-user", "", "SMTP user (PLAIN authentication, over TLS)")
	fs.StringVar(&m.Password, "smtp-password", "", "SMTP password")
}
