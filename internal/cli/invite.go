package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/superinstance/mesh/internal/client"
	"github.com/superinstance/mesh/internal/money"
	"github.com/superinstance/mesh/workflows"
)

func inviteCommand() *Command {
	var (
		api     apiFlags
		project string
		role    string
		quota   string
		expires time.Duration
		asJSON  bool
	)
	return &Command{
		Name:  "invite",
		Short: "invite a guest to a project with a quota billed to you",
		Long: `si invite creates an invite to a project, through the API as the account your
token names (the host), and prints a one-click link. The token carries 160
random bits and only its SHA-256 is stored. InviteWorkflow holds the invite
until it is accepted (si join), revoked (si invite revoke) or expires. The
guest's usage is billed to the host's account and drawn from the quota; when
it is spent the guest's requests are refused.

  si invite --project acme --role viewer --quota 1.00 --expires 24h`,
		Flags: func(fs *flag.FlagSet) {
			api.register(fs)
			fs.StringVar(&project, "project", "", "project to invite to (created, owned by you, if new); not the default project, which is each account's own")
			fs.StringVar(&role, "role", "viewer", "the guest's role: viewer or editor")
			fs.StringVar(&quota, "quota", "1.00", "most the guest may spend, in dollars")
			fs.DurationVar(&expires, "expires", 24*time.Hour, "how long the invite can be accepted")
			fs.BoolVar(&asJSON, "json", false, "print the invite, link and token as JSON")
		},
		Sub: []*Command{inviteRevokeCommand(), inviteListCommand()},
		Run: func(ctx context.Context, env *Env, args []string) error {
			if len(args) > 0 {
				return fmt.Errorf("unexpected argument %q", args[0])
			}
			if project == "" || project == workflows.DefaultProject {
				return errors.New("--project is required: name a project of yours (the default project is each account's own and takes no guests)")
			}
			q, err := money.Parse(quota)
			if err != nil || q <= 0 {
				return fmt.Errorf("--quota %q: give a positive dollar amount such as 1.00", quota)
			}
			if expires <= 0 || expires > 30*24*time.Hour {
				return errors.New("--expires must be between 1s and 720h")
			}
			c, err := api.client()
			if err != nil {
				return err
			}
			inv, err := c.CreateInvite(ctx, client.InviteRequest{Project: project, Role: role, Quota: quota, Expires: expires.String()})
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(env.Stdout, inv)
			}
			fmt.Fprintf(env.Stdout, "invite %s: %s of project %s, quota %s billed to you, expires %s\n", inv.ID, inv.Role, inv.Project,
				money.Micros(inv.Quota).Dollars(), inv.ExpiresAt.Local().Format(time.RFC3339))
			fmt.Fprintf(env.Stdout, "link:  %s\n", inv.Link)
			fmt.Fprintf(env.Stdout, "or:    si join %s\n", inv.Token)
			return nil
		},
	}
}

// revoked is what si invite revoke --json prints: the invite or the guest
// session and its state now.
type revoked struct {
	Invite  string `json:"invite_id,omitempty"`
	Session string `json:"guest_session_id,omitempty"`
	State   string `json:"state"`
}

func inviteRevokeCommand() *Command {
	var (
		api    apiFlags
		asJSON bool
	)
	return &Command{
		Name:  "revoke",
		Args:  "INVITE-ID|GUEST-SESSION-ID",
		Short: "revoke a pending invite, or end a guest session at once",
		Long: `si invite revoke revokes a pending invite (inv_..., by its host or the
project's owner) or ends a guest session (gs_..., by its host or an owner or
editor of its project): the guest's cookie stops working at once and no new
run starts with it. si invite ls lists both.`,
		Flags: func(fs *flag.FlagSet) {
			api.register(fs)
			fs.BoolVar(&asJSON, "json", false, "print the invite's or session's new state as JSON")
		},
		Run: func(ctx context.Context, env *Env, args []string) error {
			if len(args) != 1 {
				return errors.New("usage: si invite revoke INVITE-ID|GUEST-SESSION-ID")
			}
			c, err := api.client()
			if err != nil {
				return err
			}
			if strings.HasPrefix(args[0], "gs_") {
				g, err := c.RevokeGuest(ctx, args[0])
				if client.NotFound(err) {
					return fmt.Errorf("no guest session %s in a project you own or edit: si invite ls lists them", args[0])
				}
				if err != nil {
					return err
				}
				if asJSON {
					return printJSON(env.Stdout, revoked{Session: g.Session, State: g.State})
				}
				fmt.Fprintf(env.Stdout, "guest session %s: %s\n", g.Session, g.State)
				return nil
			}
			inv, err := c.RevokeInvite(ctx, args[0])
			if client.NotFound(err) {
				return fmt.Errorf("no invite %s of yours: si invite ls lists them", args[0])
			}
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(env.Stdout, revoked{Invite: inv.ID, State: inv.State})
			}
			fmt.Fprintf(env.Stdout, "invite %s: %s\n", inv.ID, inv.State)
			return nil
		},
	}
}

// inviteList is what si invite ls --json prints.
type inviteList struct {
	Invites []client.Invite `json:"invites"`
	Guests  []client.Guest  `json:"guests"`
}

func inviteListCommand() *Command {
	var (
		api    apiFlags
		asJSON bool
	)
	return &Command{
		Name:  "ls",
		Short: "list your invites, and the guest sessions of their projects with their remaining quota",
		Flags: func(fs *flag.FlagSet) {
			api.register(fs)
			fs.BoolVar(&asJSON, "json", false, "print the invites and guest sessions as JSON (quotas in micro-dollars)")
		},
		Run: func(ctx context.Context, env *Env, _ []string) error {
			c, err := api.client()
			if err != nil {
				return err
			}
			invs, err := c.Invites(ctx)
			if err != nil {
				return err
			}
			out := inviteList{Invites: invs, Guests: []client.Guest{}}
			if out.Invites == nil {
				out.Invites = []client.Invite{}
			}
			var projects []string
			for _, i := range invs {
				if !slices.Contains(projects, i.Project) {
					projects = append(projects, i.Project)
				}
			}
			for _, p := range projects {
				gs, err := c.ProjectGuests(ctx, p)
				if client.NotFound(err) {
					continue // a project you no longer own or edit
				}
				if err != nil {
					return err
				}
				out.Guests = append(out.Guests, gs...)
			}
			if asJSON {
				return printJSON(env.Stdout, out)
			}
			tw := tabwriter.NewWriter(env.Stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "INVITE\tPROJECT\tROLE\tQUOTA\tSTATE\tEXPIRES")
			for _, i := range out.Invites {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", i.ID, i.Project, i.Role, money.Micros(i.Quota).Dollars(), i.State, i.ExpiresAt.Local().Format(time.DateTime))
			}
			fmt.Fprintln(tw, "\nGUEST SESSION\tPROJECT\tROLE\tQUOTA\tREMAINING\tSINCE")
			for _, g := range out.Guests {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", g.Session, g.Project, g.Role, money.Micros(g.Quota).Dollars(), money.Micros(g.Remaining).Dollars(),
					g.Since.Local().Format(time.DateTime))
			}
			return tw.Flush()
		},
	}
}

func joinCommand() *Command {
	var (
		apiURL string
		asJSON bool
	)
	return &Command{
		Name:  "join",
		Args:  "LINK|TOKEN",
		Short: "accept an invite and open a guest session",
		Long: `si join accepts an invite (the link si invite printed, or its token) through
the API and opens a guest session; it needs no account. Use its secret with
si ask --guest SECRET: the host pays, up to the invite's quota. A used,
revoked, expired or wrong token is refused with the reason. The link's
token goes to the API si login names (or --api-url), never to the host the
link names.`,
		Flags: func(fs *flag.FlagSet) {
			fs.StringVar(&apiURL, "api-url", "", "the mesh's HTTP API (default: si login's, else "+client.DefaultAPIURL+")")
			fs.BoolVar(&asJSON, "json", false, "print the guest session, with its secret, as JSON")
		},
		Run: func(ctx context.Context, env *Env, args []string) error {
			if len(args) != 1 {
				return errors.New("usage: si join LINK|TOKEN")
			}
			c, err := client.NewGuest(apiURL, "")
			if err != nil {
				return err
			}
			g, err := c.Join(ctx, linkToken(args[0], "join"))
			var e *client.Error
			if errors.As(err, &e) && e.Code == "invalid_token" {
				return errors.New("this is not a valid invite link or token: copy the whole link the host sent (…/join/si_inv_…)")
			}
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(env.Stdout, g)
			}
			fmt.Fprintf(env.Stdout, "joined project %s as %s; %s of quota, billed to %s, until %s\n", g.Project, g.Role, money.Micros(g.Remaining).Dollars(), g.Host,
				g.ExpiresAt.Local().Format(time.DateTime))
			fmt.Fprintf(env.Stdout, "guest session %s (give this id to the host to revoke it)\n", g.SessionID)
			fmt.Fprintf(env.Stdout, "secret (shown once; the HTTP API's si_guest cookie): %s\n", g.Secret)
			fmt.Fprintf(env.Stdout, "use it:  si ask --guest %s \"...\"\n", g.Secret)
			return nil
		},
	}
}
