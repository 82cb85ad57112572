package cli

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/superinstance/mesh/internal/pki"
)

// caServerCertCommand issues a bridge's server certificate, so that bridges
// run with it and the CA's certificate only, never the CA's key.
func caServerCertCommand(dir *string) *Command {
	var (
		hosts, out string
		ttl        time.Duration
		asJSON     bool
	)
	return &Command{
		Name:  "server-cert",
		Short: "issue a bridge's server certificate (bridges then need only ca.pem, not the CA key)",
		Flags: func(fs *flag.FlagSet) {
			fs.StringVar(dir, "ca-dir", defaultCADir(), "the mesh CA's directory")
			fs.StringVar(&hosts, "hosts", "localhost,127.0.0.1", "comma-separated names and IPs hubs dial the bridge by")
			fs.DurationVar(&ttl, "ttl", 90*24*time.Hour, "how long the certificate is valid")
			fs.StringVar(&out, "out", "", "directory for bridge-cert.pem, bridge-key.pem and a copy of ca.pem (required)")
			fs.BoolVar(&asJSON, "json", false, "print JSON")
		},
		Run: func(_ context.Context, env *Env, _ []string) error {
			if out == "" {
				return fmt.Errorf("--out is required: the directory the bridge reads (give it --server-cert %s --server-key %s --ca-dir DIR)", "DIR/bridge-cert.pem", "DIR/bridge-key.pem")
			}
			ca, err := pki.LoadCA(*dir)
			if err != nil {
				return err
			}
			is, err := ca.IssueServer(strings.Split(hosts, ","), ttl, time.Now())
			if err != nil {
				return err
			}
			if err := os.MkdirAll(out, 0o700); err != nil {
				return err
			}
			cert, key, caFile := filepath.Join(out, "bridge-cert.pem"), filepath.Join(out, "bridge-key.pem"), filepath.Join(out, pki.CACertFile)
			for _, f := range []struct {
				path string
				b    []byte
				mode os.FileMode
			}{{key, is.KeyPEM, 0o600}, {cert, is.CertPEM, 0o644}, {caFile, ca.CertPEM, 0o644}} {
				if err := os.WriteFile(f.path, f.b, f.mode); err != nil {
					return err
				}
			}
			if asJSON {
				return json.NewEncoder(env.Stdout).Encode(map[string]any{"cert": cert, "key": key, "ca": caFile, "not_after": is.Cert.NotAfter, "hosts": strings.Split(hosts, ",")})
			}
			fmt.Fprintf(env.Stdout, "bridge certificate for %s valid until %s\nrun the bridge with:\n  si server --roles bridge --server-cert %s --server-key %s --ca-dir %s\n",
				hosts, is.Cert.NotAfter.Format(time.RFC3339), cert, key, out)
			return nil
		},
	}
}
