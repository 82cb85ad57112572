package cli

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/superinstance/mesh/internal/client"
)

// apiFlags are how a customer command reaches the mesh: the API and a
// token, from the flags (SI_API_URL, SI_TOKEN), else from si login's
// credentials. Nothing else: no Temporal, database or object store.
type apiFlags struct {
	url   string
	token string
}

func (a *apiFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&a.url, "api-url", "", "the mesh's HTTP API (default: si login's, else "+client.DefaultAPIURL+", where si dev serves it)")
	fs.StringVar(&a.token, "token", "", "API token (default: si login's; prefer SI_TOKEN or si login to keeping it in shell history)")
}

func (a *apiFlags) client() (*client.Client, error) {
	return client.New(client.Credentials{APIURL: a.url, Token: a.token})
}

func loginCommand() *Command {
	var (
		api       apiFlags
		withToken bool
		asJSON    bool
	)
	return &Command{
		Name:  "login",
		Short: "store an API token for the mesh (si ask, push, lora, balance, usage use it)",
		Long: `si login checks an API token against the mesh's API and stores it, with the
API's URL, readable by you alone in ~/.config/si/credentials.json (under
$XDG_CONFIG_HOME when set). The account comes from the token.

  si login --api-url https://mesh.example.com            prompts for the token
  echo "$TOKEN" | si login --with-token --api-url https://mesh.example.com
  si login --token si_...                                 (visible in shell history)

An operator issues tokens with si account token. SI_TOKEN and SI_API_URL
work without logging in; si dev logs you in to its own mesh as "dev".`,
		Flags: func(fs *flag.FlagSet) {
			api.register(fs)
			fs.BoolVar(&withToken, "with-token", false, "read the token from standard input")
			fs.BoolVar(&asJSON, "json", false, "print the result as JSON")
		},
		Run: func(ctx context.Context, env *Env, args []string) error {
			if len(args) > 0 {
				return fmt.Errorf("unexpected argument %q: pass the token with --token or --with-token", args[0])
			}
			if api.url == "" {
				api.url = client.DefaultAPIURL
			}
			tok := strings.TrimSpace(api.token)
			if tok == "" {
				if !withToken {
					fmt.Fprintf(env.Stderr, "API token for %s: ", api.url)
				}
				line, err := bufio.NewReader(io.LimitReader(env.stdin(), 4096)).ReadString('\n')
				if err != nil && !errors.Is(err, io.EOF) {
					return err
				}
				tok = strings.TrimSpace(line)
			}
			if tok == "" {
				return errors.New("no token given: pass --token, pipe one to --with-token, or type it at the prompt (si account token issues one)")
			}
			c, err := client.New(client.Credentials{APIURL: api.url, Token: tok})
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
			defer cancel()
			me, err := c.Me(ctx)
			if err != nil {
				return fmt.Errorf("the token was not stored: %w", err)
			}
			if me.Kind != "account" || me.Account == "" {
				return errors.New("the token was not stored: it does not name an account")
			}
			path, err := client.SaveCredentials(client.Credentials{APIURL: c.BaseURL, Token: tok, Account: me.Account, Source: client.SourceLogin})
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(env.Stdout, map[string]string{"api_url": c.BaseURL, "account": me.Account, "credentials": path})
			}
			fmt.Fprintf(env.Stdout, "logged in to %s as account %s (token stored in %s)\n", c.BaseURL, me.Account, path)
			return nil
		},
	}
}

func logoutCommand() *Command {
	var asJSON bool
	return &Command{
		Name:  "logout",
		Short: "forget the stored API token",
		Long: `si logout removes the credentials si login (or si dev) stored. The token itself
stays valid until it is revoked (si token revoke, or an operator's si account
revoke-token).`,
		Flags: func(fs *flag.FlagSet) {
			fs.BoolVar(&asJSON, "json", false, `print {"logged_out": true|false}`)
		},
		Run: func(_ context.Context, env *Env, args []string) error {
			if len(args) > 0 {
				return fmt.Errorf("unexpected argument %q", args[0])
			}
			removed, err := client.RemoveCredentials()
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(env.Stdout, map[string]bool{"logged_out": removed})
			}
			if !removed {
				fmt.Fprintln(env.Stdout, "not logged in")
				return nil
			}
			fmt.Fprintln(env.Stdout, "logged out")
			return nil
		},
	}
}

func whoamiCommand() *Command {
	var (
		api    apiFlags
		asJSON bool
	)
	return &Command{
		Name:  "whoami",
		Short: "the account (or guest session) your credentials name",
		Flags: func(fs *flag.FlagSet) {
			api.register(fs)
			fs.BoolVar(&asJSON, "json", false, "print JSON")
		},
		Run: func(ctx context.Context, env *Env, args []string) error {
			c, err := api.client()
			if err != nil {
				return err
			}
			me, err := c.Me(ctx)
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(env.Stdout, me)
			}
			if me.Guest != nil {
				fmt.Fprintf(env.Stdout, "guest of %s in project %s (%s) at %s\n", me.Guest.Host, me.Guest.Project, me.Guest.Role, c.BaseURL)
				return nil
			}
			fmt.Fprintf(env.Stdout, "account %s at %s\n", me.Account, c.BaseURL)
			return nil
		},
	}
}

func tokenCommand() *Command {
	return &Command{
		Name:  "token",
		Short: "your account's API tokens: list them, revoke one",
		Sub:   []*Command{tokenListCommand(), tokenRevokeCommand()},
	}
}

func tokenListCommand() *Command {
	var (
		api    apiFlags
		asJSON bool
	)
	return &Command{
		Name:  "ls",
		Short: "list your account's API tokens: id, name, when issued and revoked (never the tokens); * marks the one in use",
		Flags: func(fs *flag.FlagSet) {
			api.register(fs)
			fs.BoolVar(&asJSON, "json", false, "print the tokens as JSON")
		},
		Run: func(ctx context.Context, env *Env, args []string) error {
			if len(args) > 0 {
				return fmt.Errorf("unexpected argument %q", args[0])
			}
			c, err := api.client()
			if err != nil {
				return err
			}
			ts, err := c.Tokens(ctx)
			if err != nil {
				return err
			}
			if asJSON {
				if ts == nil {
					ts = []client.Token{}
				}
				return printJSON(env.Stdout, map[string]any{"tokens": ts})
			}
			return writeTokens(env.Stdout, ts)
		},
	}
}

// writeTokens prints tokens as a table, * on the one in use.
func writeTokens(w io.Writer, ts []client.Token) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "\tID\tNAME\tISSUED\tREVOKED")
	for _, t := range ts {
		mark, revoked := "", "-"
		if t.Current {
			mark = "*"
		}
		if t.RevokedAt != nil {
			revoked = t.RevokedAt.UTC().Format(time.DateTime)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", mark, t.ID, orDash(t.Name), t.CreatedAt.UTC().Format(time.DateTime), revoked)
	}
	return tw.Flush()
}

func tokenRevokeCommand() *Command {
	var (
		api    apiFlags
		asJSON bool
	)
	return &Command{
		Name:  "revoke",
		Args:  "TOKEN-ID",
		Short: "revoke one of your account's API tokens by its id (si token ls); the mesh refuses it from the next request",
		Long: `si token revoke revokes one of your account's API tokens, named by the id
si token ls lists (never the token itself, which would travel in a URL). The
mesh refuses it from the next request and the browser sessions opened with it
end. Revoking the token you are using logs you out of the mesh: log in again
with another token.`,
		Flags: func(fs *flag.FlagSet) {
			api.register(fs)
			fs.BoolVar(&asJSON, "json", false, "print the revoked token as JSON")
		},
		Run: func(ctx context.Context, env *Env, args []string) error {
			if len(args) != 1 {
				return errors.New("usage: si token revoke TOKEN-ID (si token ls lists them)")
			}
			if strings.HasPrefix(args[0], "si_") {
				return errors.New("give the token's id as si token ls lists it, not the token")
			}
			c, err := api.client()
			if err != nil {
				return err
			}
			t, err := c.RevokeToken(ctx, args[0])
			if client.NotFound(err) {
				return fmt.Errorf("no token %s of your account: si token ls lists them", args[0])
			}
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(env.Stdout, t)
			}
			fmt.Fprintf(env.Stdout, "revoked token %s\n", t.ID)
			if t.Current {
				fmt.Fprintln(env.Stdout, "it was the token you are using: si login with another")
			}
			return nil
		},
	}
}
