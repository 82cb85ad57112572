package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"path/filepath"
	"time"

	"github.com/superinstance/mesh/internal/config"
	"github.com/superinstance/mesh/internal/pki"
	"github.com/superinstance/mesh/internal/store"
)

// certJSON is what si ca init and si device enroll, renew and revoke print
// with --json: where the files are, never what the key holds.
type certJSON struct {
	Device   string    `json:"device,omitempty"`
	Account  string    `json:"account,omitempty"`
	State    string    `json:"state,omitempty"` // enrolled, renewed, revoked
	Dir      string    `json:"dir,omitempty"`
	NotAfter time.Time `json:"not_after,omitzero"`
	Cert     string    `json:"cert_path,omitempty"`
	Key      string    `json:"key_path,omitempty"`
	CA       string    `json:"ca_path,omitempty"`
}

func defaultCADir() string { return filepath.Join(config.HomeDir(), "ca") }

func deviceDir(id string) string { return filepath.Join(config.HomeDir(), "devices", id) }

func caCommand() *Command {
	var (
		dir    string
		force  bool
		asJSON bool
	)
	return &Command{
		Name:  "ca",
		Short: "the mesh certificate authority",
		Sub: []*Command{{
			Name:  "init",
			Short: "create the mesh CA that signs device and bridge certificates",
			Flags: func(fs *flag.FlagSet) {
				fs.StringVar(&dir, "ca-dir", defaultCADir(), "where the CA's certificate and key are kept")
				fs.BoolVar(&force, "force", false, "replace an existing CA (every certificate it issued stops working)")
				fs.BoolVar(&asJSON, "json", false, "print the CA's files as JSON")
			},
			Run: func(_ context.Context, env *Env, _ []string) error {
				ca, err := pki.InitCA(dir, force, time.Now())
				if err != nil {
					return err
				}
				if asJSON {
					return printJSON(env.Stdout, certJSON{Dir: dir, NotAfter: ca.Cert.NotAfter, Cert: filepath.Join(dir, pki.CACertFile),
						Key: filepath.Join(dir, pki.CAKeyFile)})
				}
				fmt.Fprintf(env.Stdout, "mesh CA created in %s (valid until %s)\n  certificate %s\n  key         %s (keep it secret)\n",
					dir, ca.Cert.NotAfter.Format("2006-01-02"), filepath.Join(dir, pki.CACertFile), filepath.Join(dir, pki.CAKeyFile))
				return nil
			},
		}, caServerCertCommand(&dir)},
	}
}

func deviceCommand() *Command {
	var (
		id, account, caDir, out string
		ttl                     time.Duration
		db                      config.Database
		asJSON                  bool
		tokenOnly, ttlSet       bool
	)
	common := func(fs *flag.FlagSet) {
		fs.StringVar(&id, "id", "", "device id (lower-case letters, digits, '.', '_', '-')")
		db.Register(fs)
		fs.BoolVar(&asJSON, "json", false, "print the result as JSON")
	}
	issueFlags := func(fs *flag.FlagSet) {
		common(fs)
		fs.StringVar(&caDir, "ca-dir", defaultCADir(), "the mesh CA's directory")
		ttl, ttlSet = pki.DefaultDeviceTTL, false
		fs.Var(trackedDuration{&ttl, &ttlSet}, "ttl", "how long the certificate is valid (with --token-only: the token, default 1h)")
		fs.StringVar(&out, "out", "", "where to write cert.pem, key.pem and ca.pem (default ~/.si/devices/<id>)")
	}
	issue := func(ctx context.Context, env *Env, renew bool) error {
		if err := pki.ValidID("device id", id); err != nil {
			return err
		}
		if out == "" {
			out = deviceDir(id)
		}
		ca, err := pki.LoadCA(caDir)
		if err != nil {
			return err
		}
		st, err := db.Open(ctx)
		if err != nil {
			return err
		}
		defer st.Close()
		is, err := func() (pki.Issued, error) {
			if !renew {
				if err := pki.ValidID("account", account); err != nil {
					return pki.Issued{}, err
				}
				return ca.IssueDevice(pki.Identity{DeviceID: id, Account: account}, nil, ttl, time.Now())
			}
			acct, err := st.DeviceAccount(ctx, id)
			if err != nil {
				return pki.Issued{}, fmt.Errorf("device %s is not enrolled: %w", id, err)
			}
			account = acct
			k, err := pki.LoadKey(filepath.Join(out, pki.KeyFile))
			if err != nil {
				return pki.Issued{}, fmt.Errorf("renew keeps the device's key: %w", err)
			}
			return ca.IssueDevice(pki.Identity{DeviceID: id, Account: account}, k, ttl, time.Now())
		}()
		if err != nil {
			return err
		}
		if err := st.RegisterCert(ctx, id, account, pki.Serial(is.Cert), is.Cert.NotAfter); err != nil {
			return err
		}
		if err := is.Save(out, ca.CertPEM); err != nil {
			return err
		}
		verb := "enrolled"
		if renew {
			verb = "renewed"
		}
		if asJSON {
			return printJSON(env.Stdout, certJSON{Device: id, Account: account, State: verb, Dir: out, NotAfter: is.Cert.NotAfter,
				Cert: filepath.Join(out, pki.CertFile), Key: filepath.Join(out, pki.KeyFile), CA: filepath.Join(out, pki.CACertFile)})
		}
		fmt.Fprintf(env.Stdout, "device %s %s for account %s; certificate valid until %s\n  %s\nrun the hub with:\n  si hub --bridge HOST:7443 --cert %s --key %s --ca %s\n",
			id, verb, account, is.Cert.NotAfter.Format(time.RFC3339), out,
			filepath.Join(out, pki.CertFile), filepath.Join(out, pki.KeyFile), filepath.Join(out, pki.CACertFile))
		return nil
	}
	return &Command{
		Name:  "device",
		Short: "enroll, renew and revoke hub device certificates",
		Sub: []*Command{
			{
				Name:  "enroll",
				Short: "issue a device key and short-lived certificate, and register the device; or, with --token-only, a one-time token the hub enrolls with",
				Flags: func(fs *flag.FlagSet) {
					issueFlags(fs)
					fs.StringVar(&account, "account", "", "account the device's usage is billed to")
					fs.BoolVar(&tokenOnly, "token-only", false, "issue a one-time enrollment token instead (needs the database and the CA's certificate, not its key); the hub redeems it with si hub enroll and makes its key itself")
				},
				Run: func(ctx context.Context, env *Env, _ []string) error {
					if tokenOnly {
						if !ttlSet {
							ttl = defaultEnrollTokenTTL
						}
						if out != "" {
							return errors.New("--out does not apply to --token-only: the hub writes its own files (si hub enroll --dir)")
						}
						return issueEnrollToken(ctx, env, db, id, account, caDir, ttl, asJSON)
					}
					return issue(ctx, env, false)
				},
			},
			{
				Name:  "renew",
				Short: "issue a fresh certificate for an enrolled device's key",
				Flags: issueFlags,
				Run:   func(ctx context.Context, env *Env, _ []string) error { return issue(ctx, env, true) },
			},
			{
				Name:  "revoke",
				Short: "revoke a device: the bridge refuses its certificates, and its unused enrollment tokens, from now on",
				Flags: common,
				Run: func(ctx context.Context, env *Env, _ []string) error {
					if id == "" {
						return errors.New("--id is required")
					}
					st, err := db.Open(ctx)
					if err != nil {
						return err
					}
					defer st.Close()
					// Its unused enrollment tokens end too, so a token issued
					// for it (si device enroll --token-only) enrolls nothing.
					tokens, err := st.RevokeEnrollmentTokens(ctx, id)
					if err != nil {
						return fmt.Errorf("revoke %s's enrollment tokens: %w", id, err)
					}
					if err := st.RevokeDevice(ctx, id); errors.Is(err, store.ErrNotFound) && tokens > 0 {
						if asJSON {
							return printJSON(env.Stdout, certJSON{Device: id, State: "tokens revoked"})
						}
						fmt.Fprintf(env.Stdout, "device %s was not enrolled yet; its %d unused enrollment token(s) are revoked\n", id, tokens)
						return nil
					} else if err != nil {
						return fmt.Errorf("revoke %s: %w", id, err)
					}
					if asJSON {
						return printJSON(env.Stdout, certJSON{Device: id, State: "revoked"})
					}
					fmt.Fprintf(env.Stdout, "device %s revoked\n", id)
					return nil
				},
			},
		},
	}
}
