package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net/mail"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/superinstance/mesh/internal/client"
)

// linkToken extracts the token after /<path>/ in a link, or takes s as the
// token. Only the token is used: the request goes to the API si login names,
// never to the host a link names.
func linkToken(s, path string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndex(s, "/"+path+"/"); i >= 0 {
		s = s[i+len(path)+2:]
	}
	if i := strings.IndexAny(s, "?#"); i >= 0 {
		s = s[:i]
	}
	return strings.TrimRight(s, "/")
}

func handoverCommand() *Command {
	return &Command{
		Name:  "handover",
		Short: "hand a project over to a new owner (multi-day workflow)",
		Long: `A handover gives a project, with its adapters, to a new owner. HandoverWorkflow
snapshots the project, emails the recipient an accept link, reminds them on
day 3 and day 6 and expires on day 7. On accept it clones the project and its
adapters for the new owner and subscribes them at incentive pricing (the
first year $30, then $60 a year).

start, ls, accept, decline and cancel go through the HTTP API as the account
your token names (si login). The operator finds stuck handovers with
si handover stuck (Temporal's search attributes HandoverStatus,
HandoverRecipient, HandoverProject and HandoverStarted).`,
		Sub: []*Command{handoverStartCommand(), handoverListCommand(), handoverAcceptCommand(), handoverDeclineCommand(),
			handoverCancelCommand(), handoverStuckCommand()},
	}
}

func printHandover(env *Env, h client.Handover) {
	fmt.Fprintf(env.Stdout, "handover %s of project %s (%s to %s): %s\n", h.ID, h.Project, h.Host, h.Recipient, h.State)
}

func handoverStartCommand() *Command {
	var (
		api     apiFlags
		project string
		to      string
		asJSON  bool
	)
	return &Command{
		Name:  "start",
		Short: "start handing a project you own over to EMAIL",
		Long: `si handover start snapshots the project and emails the recipient an accept
link, through the API as the account your token names. Only the project's
owner can hand it over, and a project has at most one open handover.

  si handover start --project acme --to ada@example.com`,
		Flags: func(fs *flag.FlagSet) {
			api.register(fs)
			fs.StringVar(&project, "project", "", "the project to hand over (one you own)")
			fs.StringVar(&to, "to", "", "the recipient's email address")
			fs.BoolVar(&asJSON, "json", false, "print the handover as JSON")
		},
		Run: func(ctx context.Context, env *Env, args []string) error {
			if len(args) > 0 {
				return fmt.Errorf("unexpected argument %q", args[0])
			}
			if project == "" || to == "" {
				return errors.New("--project and --to are required: si handover start --project acme --to ada@example.com")
			}
			if a, err := mail.ParseAddress(to); err != nil || a.Address != to {
				return fmt.Errorf("--to %q: give one bare email address such as ada@example.com", to)
			}
			c, err := api.client()
			if err != nil {
				return err
			}
			h, err := c.StartHandover(ctx, project, to)
			if client.NotFound(err) {
				return fmt.Errorf("no project %s of yours: only a project's owner can hand it over", project)
			}
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(env.Stdout, h)
			}
			fmt.Fprintf(env.Stdout, "handover %s: project %s to %s; an accept link is on its way by email\n", h.ID, h.Project, h.Recipient)
			fmt.Fprintf(env.Stdout, "reminders on day 3 and day 6; expires %s\n", h.ExpiresAt.Local().Format(time.RFC3339))
			fmt.Fprintf(env.Stdout, "cancel it: si handover cancel %s\n", h.ID)
			return nil
		},
	}
}

func handoverListCommand() *Command {
	var (
		api    apiFlags
		asJSON bool
	)
	return &Command{
		Name:  "ls",
		Short: "list the handovers you started and those offered to your email",
		Flags: func(fs *flag.FlagSet) {
			api.register(fs)
			fs.BoolVar(&asJSON, "json", false, "print JSON")
		},
		Run: func(ctx context.Context, env *Env, args []string) error {
			if len(args) > 0 {
				return fmt.Errorf("unexpected argument %q", args[0])
			}
			c, err := api.client()
			if err != nil {
				return err
			}
			hs, err := c.Handovers(ctx)
			if err != nil {
				return err
			}
			if asJSON {
				if hs == nil {
					hs = []client.Handover{}
				}
				return printJSON(env.Stdout, hs)
			}
			tw := tabwriter.NewWriter(env.Stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "HANDOVER\tYOU ARE\tPROJECT\tHOST\tRECIPIENT\tSTATE\tEXPIRES")
			for _, h := range hs {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", h.ID, h.Role, h.Project, h.Host, h.Recipient, h.State,
					h.ExpiresAt.Local().Format(time.DateTime))
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			for _, h := range hs {
				if h.PaymentURL != "" {
					fmt.Fprintf(env.Stdout, "%s: %s is yours; your plan starts once you give a payment method: %s\n", h.ID, h.NewProject, h.PaymentURL)
				}
			}
			return nil
		},
	}
}

// final reports whether a handover state is final.
func final(state string) bool {
	switch state {
	case "completed", "declined", "cancelled", "expired", "failed":
		return true
	}
	return false
}

func handoverAcceptCommand() *Command {
	var (
		api    apiFlags
		wait   time.Duration
		asJSON bool
	)
	return &Command{
		Name:  "accept",
		Args:  "LINK|TOKEN",
		Short: "accept a handover offered to your email, as your account",
		Long: `si handover accept takes the project a handover offers (the link from the
email, or its token) for the account your token names (si login). That
account's email must be the one the handover was sent to; to take it with
a new account, open the link in a browser. It waits (up to --wait) while
the project and its adapters are cloned; the plan subscription starts once
you give a payment method on the Stripe page it prints (and emails).

  si handover accept https://mesh.example.com/handover/si_ho_...`,
		Flags: func(fs *flag.FlagSet) {
			api.register(fs)
			fs.DurationVar(&wait, "wait", 2*time.Minute, "how long to wait for the clone to finish (0: do not wait)")
			fs.BoolVar(&asJSON, "json", false, "print the handover as JSON")
		},
		Run: func(ctx context.Context, env *Env, args []string) error {
			if len(args) != 1 {
				return errors.New("usage: si handover accept LINK|TOKEN")
			}
			c, err := api.client()
			if err != nil {
				return err
			}
			h, err := answerHandover(ctx, c, args[0], "accept")
			if err != nil {
				return err
			}
			if !asJSON {
				fmt.Fprintf(env.Stdout, "accepted handover %s of project %s as %s\n", h.ID, h.Project, h.NewOwner)
			}
			deadline := time.Now().Add(wait)
			for seen := h.State; wait > 0 && !final(h.State) && h.State != "awaiting_payment"; {
				if time.Now().After(deadline) {
					return fmt.Errorf("handover %s is still %s after %s: si handover ls shows when it is done", h.ID, h.State, wait)
				}
				select {
				case <-ctx.Done():
					return ctx.Err()
				case <-time.After(300 * time.Millisecond):
				}
				hs, err := c.Handovers(ctx)
				if err != nil {
					return err
				}
				for _, x := range hs {
					if x.ID == h.ID {
						h = x
					}
				}
				if h.State != seen && !asJSON {
					seen = h.State
					fmt.Fprintf(env.Stderr, "  %s...\n", h.State)
				}
			}
			if asJSON {
				return printJSON(env.Stdout, h)
			}
			switch h.State {
			case "completed":
				fmt.Fprintf(env.Stdout, "project %s is yours; subscription schedule %s\n", h.NewProject, h.Schedule)
			case "awaiting_payment":
				pay := h.PaymentURL
				if pay == "" {
					pay = "the link is in your email"
				}
				fmt.Fprintf(env.Stdout, "project %s is yours; your plan starts once you give a payment method on Stripe's page: %s\n", h.NewProject, pay)
			case "failed":
				return fmt.Errorf("handover %s failed and was undone: %s", h.ID, h.Failure)
			}
			return nil
		},
	}
}

// answerHandover sends accept or decline for the link's token, turning the
// API's refusals into errors that say what to do.
func answerHandover(ctx context.Context, c *client.Client, link, answer string) (client.Handover, error) {
	h, err := c.AnswerHandover(ctx, linkToken(link, "handover"), answer)
	var e *client.Error
	if errors.As(err, &e) {
		switch {
		case e.Code == "invalid_token":
			return h, errors.New("this is not a valid handover link or token: copy the whole link from the newest email (…/handover/si_ho_…)")
		case e.Status == 409 && answer == "accept":
			return h, fmt.Errorf("the handover refused your account: %s (accept with the account whose email the handover was sent to, or open the link in a browser to make a new one)", e.Message)
		}
	}
	return h, err
}

func handoverDeclineCommand() *Command {
	var (
		api    apiFlags
		asJSON bool
	)
	return &Command{
		Name:  "decline",
		Args:  "LINK|TOKEN",
		Short: "decline a handover offered to you",
		Long: `si handover decline turns a handover down (the link from the email, or its
token); the host is told and the project stays theirs.`,
		Flags: func(fs *flag.FlagSet) {
			api.register(fs)
			fs.BoolVar(&asJSON, "json", false, "print the handover as JSON")
		},
		Run: func(ctx context.Context, env *Env, args []string) error {
			if len(args) != 1 {
				return errors.New("usage: si handover decline LINK|TOKEN")
			}
			c, err := api.client()
			if err != nil {
				return err
			}
			h, err := answerHandover(ctx, c, args[0], "decline")
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(env.Stdout, h)
			}
			printHandover(env, h)
			return nil
		},
	}
}

func handoverCancelCommand() *Command {
	var (
		api    apiFlags
		asJSON bool
	)
	return &Command{
		Name:  "cancel",
		Args:  "HANDOVER-ID",
		Short: "cancel a pending handover you started",
		Flags: func(fs *flag.FlagSet) {
			api.register(fs)
			fs.BoolVar(&asJSON, "json", false, "print the handover as JSON")
		},
		Run: func(ctx context.Context, env *Env, args []string) error {
			if len(args) != 1 {
				return errors.New("usage: si handover cancel HANDOVER-ID")
			}
			c, err := api.client()
			if err != nil {
				return err
			}
			h, err := c.CancelHandover(ctx, args[0])
			if client.NotFound(err) {
				return fmt.Errorf("no handover %s started by you: si handover ls lists them", args[0])
			}
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(env.Stdout, h)
			}
			printHandover(env, h)
			return nil
		},
	}
}
