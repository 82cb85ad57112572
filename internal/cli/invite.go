package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/superinstance/mesh/internal/config"
	"github.com/superinstance/mesh/internal/money"
	"github.com/superinstance/mesh/internal/runner"
	"github.com/superinstance/mesh/internal/store"
	"github.com/superinstance/mesh/workflows"
)

func inviteCommand() *Command {
	var (
		db      config.Database
		t       config.Temporal
		host    string
		project string
		role    string
		quota   string
		expires time.Duration
		baseURL string
	)
	return &Command{
		Name:  "invite",
		Short: "invite a guest to a project with a quota billed to you",
		Long: `si invite creates an invite to a project and prints a one-click link. The
token carries 160 random bits and only its SHA-256 is stored. InviteWorkflow
holds the invite until it is accepted (si join), revoked (si invite revoke) or
expires. The guest's usage is billed to the host's account and drawn from the
quota; when it is spent the guest's requests are refused.

  si invite --project acme --role viewer --quota 1.00 --expires 24h`,
		Flags: func(fs *flag.FlagSet) {
			db.Register(fs)
			t.Register(fs, "127.0.0.1:7233", "Temporal frontend host:port")
			fs.StringVar(&host, "account", "dev", "the host: the account that pays for the guest")
			fs.StringVar(&project, "project", "", "project to invite to (created, owned by the host, if new); not the default project, which is each account's own")
			fs.StringVar(&role, "role", store.RoleViewer, "the guest's role: viewer or editor")
			fs.StringVar(&quota, "quota", "1.00", "most the guest may spend, in dollars")
			fs.DurationVar(&expires, "expires", 24*time.Hour, "how long the invite can be accepted")
			fs.StringVar(&baseURL, "base-url", "", "base URL of the HTTP server for the link (default: the running si dev's)")
		},
		Sub: []*Command{inviteRevokeCommand(), inviteListCommand()},
		Run: func(ctx context.Context, env *Env, args []string) error {
			if len(args) > 0 {
				return fmt.Errorf("unexpected argument %q", args[0])
			}
			if project == "" || project == workflows.DefaultProject {
				return errors.New("--project: name the project to invite to (the default project is each account's own and cannot be shared)")
			}
			q, err := money.Parse(quota)
			if err != nil || q <= 0 {
				return fmt.Errorf("--quota %q: give a positive dollar amount such as 1.00", quota)
			}
			if expires <= 0 || expires > 30*24*time.Hour {
				return errors.New("--expires must be between 1s and 720h")
			}
			if baseURL == "" {
				baseURL = "http://127.0.0.1:9464"
				if st, err := config.ReadDevState(db.DevDir); err == nil && st.MetricsURL != "" {
					baseURL = strings.TrimSuffix(st.MetricsURL, "/metrics")
				}
			}
			st, err := db.Open(ctx)
			if err != nil {
				return err
			}
			defer st.Close()
			c, err := t.Dial(10 * time.Second)
			if err != nil {
				return err
			}
			defer c.Close()
			secret, inv, err := runner.StartInvite(ctx, st, c, store.Invite{Project: project, Host: host,
				Role: role, Quota: q, ExpiresAt: time.Now().Add(expires).UTC()})
			if err != nil {
				return err
			}
			fmt.Fprintf(env.Stdout, "invite %s: %s of project %s, quota %s billed to %s, expires %s\n", inv.ID, inv.Role, inv.Project,
				inv.Quota, inv.Host, inv.ExpiresAt.Local().Format(time.RFC3339))
			fmt.Fprintf(env.Stdout, "link:  %s/join/%s\n", strings.TrimRight(baseURL, "/"), secret)
			fmt.Fprintf(env.Stdout, "or:    si join %s\n", secret)
			return nil
		},
	}
}

func inviteRevokeCommand() *Command {
	var (
		db   config.Database
		t    config.Temporal
		host string
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
			db.Register(fs)
			t.Register(fs, "127.0.0.1:7233", "Temporal frontend host:port")
			fs.StringVar(&host, "account", "dev", "who revokes: the host, or the project's owner (an editor too, for a guest session)")
		},
		Run: func(ctx context.Context, env *Env, args []string) error {
			if len(args) != 1 {
				return errors.New("usage: si invite revoke INVITE-ID|GUEST-SESSION-ID")
			}
			st, err := db.Open(ctx)
			if err != nil {
				return err
			}
			defer st.Close()
			if strings.HasPrefix(args[0], "gs_") {
				g, err := st.RevocableGuestSession(ctx, args[0], host)
				if errors.Is(err, store.ErrNotFound) {
					return fmt.Errorf("no guest session %s in a project %s owns or edits: si invite ls lists them", args[0], host)
				}
				if err != nil {
					return err
				}
				live, err := st.RevokeGuestSession(ctx, g.ID)
				if err != nil {
					return err
				}
				if !live {
					fmt.Fprintf(env.Stdout, "guest session %s: already revoked\n", g.ID)
					return nil
				}
				fmt.Fprintf(env.Stdout, "guest session %s: revoked\n", g.ID)
				return nil
			}
			inv, err := st.RevocableInvite(ctx, args[0], host)
			if errors.Is(err, store.ErrNotFound) {
				return fmt.Errorf("no invite %s of %s's: si invite ls lists them", args[0], host)
			}
			if err != nil {
				return err
			}
			c, err := t.Dial(10 * time.Second)
			if err != nil {
				return err
			}
			defer c.Close()
			state, err := runner.RevokeInvite(ctx, c, inv.ID)
			if errors.Is(err, runner.ErrNotPending) {
				reason := st.InviteClosedReason(ctx, inv.ID)
				if reason == "" {
					reason = "it is no longer pending"
				}
				return fmt.Errorf("invite %s cannot be revoked: %s", inv.ID, reason)
			}
			if err != nil {
				return err
			}
			fmt.Fprintf(env.Stdout, "invite %s: %s\n", args[0], state)
			return nil
		},
	}
}

func inviteListCommand() *Command {
	var (
		db   config.Database
		host string
	)
	return &Command{
		Name:  "ls",
		Short: "list the host's invites and guest sessions with their remaining quota",
		Flags: func(fs *flag.FlagSet) {
			db.Register(fs)
			fs.StringVar(&host, "account", "dev", "the host")
		},
		Run: func(ctx context.Context, env *Env, _ []string) error {
			st, err := db.Open(ctx)
			if err != nil {
				return err
			}
			defer st.Close()
			invs, err := st.Invites(ctx, host)
			if err != nil {
				return err
			}
			gs, err := st.GuestSessions(ctx, host)
			if err != nil {
				return err
			}
			tw := tabwriter.NewWriter(env.Stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "INVITE\tPROJECT\tROLE\tQUOTA\tSTATE\tEXPIRES")
			for _, i := range invs {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", i.ID, i.Project, i.Role, i.Quota, i.State, i.ExpiresAt.Local().Format(time.DateTime))
			}
			fmt.Fprintln(tw, "\nGUEST SESSION\tPROJECT\tROLE\tQUOTA\tREMAINING\tSINCE\tSTATE")
			for _, g := range gs {
				state := "active until " + g.ExpiresAt.Local().Format(time.DateTime)
				if reason := g.ClosedReason(time.Now()); g.RevokedAt != nil {
					state = "revoked"
				} else if reason != "" {
					state = "expired"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", g.ID, g.Project, g.Role, g.Quota, g.Remaining,
					g.CreatedAt.Local().Format(time.DateTime), state)
			}
			return tw.Flush()
		},
	}
}

func joinCommand() *Command {
	var (
		db config.Database
		t  config.Temporal
	)
	return &Command{
		Name:  "join",
		Args:  "LINK|TOKEN",
		Short: "accept an invite and open a guest session",
		Long: `si join accepts an invite (the link si invite printed, or its token) and
opens a guest session. It prints the session's id, for si ask --guest
SESSION-ID (the host pays, up to the invite's quota), and once, the session's
secret, which the HTTP API takes as the si_guest cookie. A used, revoked,
expired or wrong token is refused with the reason.`,
		Flags: func(fs *flag.FlagSet) {
			db.Register(fs)
			t.Register(fs, "127.0.0.1:7233", "Temporal frontend host:port")
		},
		Run: func(ctx context.Context, env *Env, args []string) error {
			if len(args) != 1 {
				return errors.New("usage: si join LINK|TOKEN")
			}
			st, err := db.Open(ctx)
			if err != nil {
				return err
			}
			defer st.Close()
			inv, err := st.InviteByToken(ctx, linkToken(args[0], "join"))
			if errors.Is(err, store.ErrNotFound) {
				return errors.New("this is not a valid invite link or token: copy the whole link the host sent (…/join/si_inv_…)")
			}
			if err != nil {
				return err
			}
			c, err := t.Dial(10 * time.Second)
			if err != nil {
				return err
			}
			defer c.Close()
			g, secret, err := runner.JoinInvite(ctx, st, c, inv.ID)
			if err != nil {
				return err
			}
			fmt.Fprintf(env.Stdout, "joined project %s as %s; %s of quota, billed to %s, until %s\n", g.Project, g.Role, g.Remaining, g.Host,
				g.ExpiresAt.Local().Format(time.DateTime))
			fmt.Fprintf(env.Stdout, "guest session %s\nuse it:  si ask --guest %s \"...\"\n", g.ID, g.ID)
			fmt.Fprintf(env.Stdout, "secret (shown once; the HTTP API's si_guest cookie): %s\n", secret)
			return nil
		},
	}
}
