package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/superinstance/mesh/hub/agent"
	"github.com/superinstance/mesh/internal/config"
	"github.com/superinstance/mesh/internal/pki"
	"github.com/superinstance/mesh/internal/store"
)

// defaultEnrollTokenTTL is how long a token from si device enroll
// --token-only is valid unless --ttl says otherwise.
const defaultEnrollTokenTTL = time.Hour

// maxEnrollTokenTTL bounds a token's life: one left lying in a Secret or a
// file enrolls a machine only this long.
const maxEnrollTokenTTL = 7 * 24 * time.Hour

// trackedDuration is a duration flag that records whether it was given,
// so that one flag can have two defaults (a certificate's, a token's).
type trackedDuration struct {
	d   *time.Duration
	set *bool
}

func (v trackedDuration) String() string {
	if v.d == nil {
		return ""
	}
	return v.d.String()
}

func (v trackedDuration) Set(s string) error {
	d, err := time.ParseDuration(s)
	if err != nil {
		return err
	}
	*v.d, *v.set = d, true
	return nil
}

// enrollTokenJSON is what si device enroll --token-only --json prints.
type enrollTokenJSON struct {
	Device    string    `json:"device"`
	Account   string    `json:"account"`
	Token     string    `json:"token"`
	ExpiresAt time.Time `json:"expires_at"`
	CASHA256  string    `json:"ca_sha256"`
}

// issueEnrollToken is si device enroll --token-only: a one-time token that
// enrolls id into account when a hub redeems it (si hub enroll). It needs
// the database and the CA's certificate, never the CA's key. The token
// alone goes to stdout, so that a script can keep it in a file or a Secret.
func issueEnrollToken(ctx context.Context, env *Env, db config.Database, id, account, caDir string, ttl time.Duration, asJSON bool) error {
	if err := pki.ValidID("device id", id); err != nil {
		return fmt.Errorf("--id: %w", err)
	}
	if err := pki.ValidID("account", account); err != nil {
		return fmt.Errorf("--account: %w", err)
	}
	if ttl <= 0 || ttl > maxEnrollTokenTTL {
		return fmt.Errorf("--ttl %s: an enrollment token lives from a second to %s; 1h is the default", ttl, maxEnrollTokenTTL)
	}
	caPEM, err := os.ReadFile(filepath.Join(caDir, pki.CACertFile))
	if err != nil {
		return fmt.Errorf("the mesh CA's certificate (only the certificate: --token-only needs no CA key): %w", err)
	}
	sum, err := pki.CAFingerprint(caPEM)
	if err != nil {
		return err
	}
	st, err := db.Open(ctx)
	if err != nil {
		return err
	}
	defer st.Close()
	if _, err := st.AccountByID(ctx, account); errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("account %s does not exist: create it first (si account create --account %s --email ...)", account, account)
	} else if err != nil {
		return err
	}
	if owner, err := st.DeviceAccount(ctx, id); err == nil && owner != account {
		return fmt.Errorf("device %s is enrolled to account %s, not %s: pick another --id", id, owner, account)
	} else if err != nil && !errors.Is(err, store.ErrNotFound) {
		return err
	}
	secret, expires, err := st.CreateEnrollmentToken(ctx, account, id, ttl)
	if err != nil {
		return err
	}
	tok := pki.EnrollToken{Secret: secret, CA: sum}.String()
	if asJSON {
		return printJSON(env.Stdout, enrollTokenJSON{Device: id, Account: account, Token: tok, ExpiresAt: expires, CASHA256: fmt.Sprintf("%x", sum)})
	}
	fmt.Fprintln(env.Stdout, tok)
	fmt.Fprintf(env.Stderr, "one-time enrollment token for device %s (account %s), valid until %s.\non the hub run:\n  si hub enroll --bridge HOST:7443 --id %s --token-file FILE   (FILE holds the token)\n",
		id, account, expires.UTC().Format(time.RFC3339), id)
	return nil
}

func hubEnrollCommand() *Command {
	var (
		o         agent.EnrollOptions
		tokenFile string
		asJSON    bool
	)
	return &Command{
		Name:  "enroll",
		Args:  "[TOKEN]",
		Short: "enroll this hub with a one-time token from the operator (si device enroll --token-only)",
		Long: `si hub enroll makes this hub's device key (it never leaves the hub), and
redeems a one-time enrollment token at the bridge for its first certificate:
it connects with ALPN si-enroll/1 and no certificate, checks that the
bridge's certificate chains to the mesh CA whose SHA-256 the token carries
(before it sends anything), sends the token and a certificate request, and
writes key.pem (0600), cert.pem and ca.pem into --dir, where si hub reads
them. Only the operator's CA role signs; no hub, node or bridge holds the CA
key.

Give the token as the argument or, to keep it out of the process list and
shell history, in --token-file. Run again with a valid certificate in --dir,
it does nothing (an init container may run it at every start). A bridge that
cannot be reached is tried again for --wait; a spent, expired or unknown
token, one for another device, or a bridge from another CA is refused at once.`,
		Flags: func(fs *flag.FlagSet) {
			fs.StringVar(&o.Bridge, "bridge", "127.0.0.1:7443", "the bridge's host:port; several comma separated are tried in turn")
			fs.StringVar(&o.ServerName, "server-name", "", "name in the bridge's certificate (default: the host of each --bridge address)")
			fs.StringVar(&o.DeviceID, "id", "", "the device id the token was issued for (default: the last element of --dir)")
			fs.StringVar(&o.Dir, "dir", "", "where to write key.pem, cert.pem and ca.pem (default ~/.si/devices/<id>)")
			fs.StringVar(&tokenFile, "token-file", "", "file holding the enrollment token (instead of the argument)")
			fs.StringVar(&o.Protocol, "protocol", agent.ProtocolAuto, "auto (QUIC, else TLS over TCP on the same port), quic or tcp")
			fs.DurationVar(&o.Wait, "wait", 2*time.Minute, "how long to keep trying a bridge that cannot be reached or is busy")
			fs.BoolVar(&o.Force, "force", false, "enroll again even if --dir holds a valid certificate (needs a new token)")
			fs.BoolVar(&asJSON, "json", false, "print the result as JSON")
		},
		Run: func(ctx context.Context, env *Env, args []string) error {
			if o.DeviceID == "" && o.Dir != "" {
				o.DeviceID = filepath.Base(filepath.Clean(o.Dir))
			}
			if o.DeviceID == "" {
				return errors.New("--id is required (the device id the token was issued for), or --dir ending in it")
			}
			if err := pki.ValidID("device id", o.DeviceID); err != nil {
				return fmt.Errorf("--id %q: %w", o.DeviceID, err)
			}
			if o.Dir == "" {
				o.Dir = deviceDir(o.DeviceID)
			}
			res, err := func() (agent.Enrolled, error) {
				raw, err := enrollTokenArg(args, tokenFile)
				if errors.Is(err, os.ErrNotExist) && !o.Force {
					// A node enrolled before needs no token (its Secret
					// key may be gone once spent).
					if done, ok := agent.EnrolledIn(o.Dir, o.DeviceID); ok {
						return done, nil
					}
					return agent.Enrolled{}, fmt.Errorf("%w, and %s holds no valid certificate for %s", err, o.Dir, o.DeviceID)
				}
				if err != nil {
					return agent.Enrolled{}, err
				}
				if o.Token, err = pki.ParseEnrollToken(raw); err != nil {
					return agent.Enrolled{}, err
				}
				return agent.Enroll(ctx, o)
			}()
			if err != nil {
				return fmt.Errorf("enroll %s: %w", o.DeviceID, err)
			}
			state := "enrolled"
			if res.Already {
				state = "already enrolled"
			}
			if asJSON {
				return printJSON(env.Stdout, certJSON{Device: res.DeviceID, Account: res.Account, State: state, Dir: res.Dir,
					NotAfter: res.NotAfter, Cert: res.Cert, Key: res.Key, CA: res.CA})
			}
			fmt.Fprintf(env.Stdout, "device %s %s for account %s; certificate valid until %s (renewed over the link)\n  %s\nrun the hub with:\n  si hub --bridge %s --cert %s --key %s --ca %s\n",
				res.DeviceID, state, res.Account, res.NotAfter.UTC().Format(time.RFC3339), res.Dir, o.Bridge, res.Cert, res.Key, res.CA)
			return nil
		},
	}
}

// enrollTokenArg is the token from the argument or --token-file, not both.
func enrollTokenArg(args []string, file string) (string, error) {
	switch {
	case len(args) > 1:
		return "", fmt.Errorf("unexpected argument %q: si hub enroll takes one token", args[1])
	case len(args) == 1 && file != "":
		return "", errors.New("give the token as the argument or in --token-file, not both")
	case len(args) == 1:
		return args[0], nil
	case file != "":
		b, err := os.ReadFile(file)
		if err != nil {
			return "", fmt.Errorf("--token-file: %w", err)
		}
		if len(b) > 1024 {
			return "", fmt.Errorf("--token-file %s holds %d bytes: it should hold one token", file, len(b))
		}
		return strings.TrimSpace(string(b)), nil
	}
	return "", errors.New("the enrollment token is required: si hub enroll TOKEN, or --token-file FILE (si device enroll --token-only prints one)")
}
