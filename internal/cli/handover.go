package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net/url"
	"strings"
	"text/tabwriter"
	"time"

	"go.temporal.io/sdk/client"

	"github.com/superinstance/mesh/internal/config"
	"github.com/superinstance/mesh/internal/runner"
	"github.com/superinstance/mesh/internal/store"
	"github.com/superinstance/mesh/workflows"
)

// linkToken extracts the token after /<path>/ in a link, or takes s as the token.
func linkToken(s, path string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndex(s, "/"+path+"/"); i >= 0 {
		s = s[i+len(path)+2:]
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

Handover workflows carry the search attributes HandoverStatus,
HandoverRecipient, HandoverProject and HandoverStarted; filter on them in the
Temporal UI, e.g.  HandoverStatus = "pending"`,
		Sub: []*Command{handoverStartCommand(), handoverListCommand(), handoverAcceptCommand(), handoverDeclineCommand(), handoverCancelCommand()},
	}
}

func handoverStartCommand() *Command {
	var (
		db      config.Database
		t       config.Temporal
		host    string
		project string
		to      string
	)
	return &Command{
		Name:  "start",
		Short: "start handing a project over to EMAIL",
		Long: `si handover start snapshots the project and emails the recipient an accept
link. Only the project's owner can hand it over, and a project has at most
one open handover.

  si handover start --project acme --to ada@example.com`,
		Flags: func(fs *flag.FlagSet) {
			db.Register(fs)
			t.Register(fs, "127.0.0.1:7233", "Temporal frontend host:port")
			fs.StringVar(&host, "account", "dev", "the project's owner, who hands it over")
			fs.StringVar(&project, "project", "", "the project to hand over")
			fs.StringVar(&to, "to", "", "the recipient's email address")
		},
		Run: func(ctx context.Context, env *Env, args []string) error {
			if len(args) > 0 {
				return fmt.Errorf("unexpected argument %q", args[0])
			}
			if project == "" || to == "" {
				return errors.New("--project and --to are required")
			}
			if err := store.ValidEmail(to); err != nil {
				return fmt.Errorf("--to: %w", err)
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
			h, err := runner.StartHandover(ctx, st, c, host, project, to)
			if err != nil {
				return err
			}
			fmt.Fprintf(env.Stdout, "handover %s: project %s to %s; an accept link is on its way by email\n", h.ID, project, to)
			fmt.Fprintf(env.Stdout, "reminders on day 3 and day 6; expires %s\n", h.ExpiresAt.Local().Format(time.RFC3339))
			fmt.Fprintf(env.Stdout, "workflow: %s\n", workflows.HandoverWorkflowID(h.ID))
			if ds, err := config.ReadDevState(db.DevDir); err == nil && ds.UIURL != "" {
				fmt.Fprintf(env.Stdout, "watch:    %s/namespaces/%s/workflows?query=%s\n", ds.UIURL, t.Namespace,
					url.QueryEscape(fmt.Sprintf(`HandoverProject="%s"`, project)))
			}
			return nil
		},
	}
}

func handoverListCommand() *Command {
	var (
		t       config.Temporal
		stuck   bool
		older   time.Duration
		failing int
		asJSON  bool
		project string
	)
	return &Command{
		Name:  "ls",
		Short: "list handovers from Temporal's visibility store (--stuck: only those that need a look)",
		Long: `si handover ls lists handover workflows by their search attributes. With
--stuck it lists only open handovers that are pending past --older-than, or
whose activities have failed --failing times or more in a row (a mail server
or Stripe that keeps refusing, say), with the last error.`,
		Flags: func(fs *flag.FlagSet) {
			t.Register(fs, "127.0.0.1:7233", "Temporal frontend host:port")
			fs.BoolVar(&stuck, "stuck", false, "only handovers that are stuck")
			fs.DurationVar(&older, "older-than", 72*time.Hour, "with --stuck: an open handover older than this is stuck")
			fs.IntVar(&failing, "failing", 3, "with --stuck: an activity that failed this many attempts makes its handover stuck")
			fs.StringVar(&project, "project", "", "only this project's handovers")
			fs.BoolVar(&asJSON, "json", false, "print JSON")
		},
		Run: func(ctx context.Context, env *Env, _ []string) error {
			c, err := t.Dial(10 * time.Second)
			if err != nil {
				return err
			}
			defer c.Close()
			q := "WorkflowType = 'HandoverWorkflow'"
			if stuck {
				q += fmt.Sprintf(" AND ExecutionStatus = 'Running' AND %s IN ('%s', '%s')", workflows.HandoverStatusAttr.GetName(),
					store.HandoverPending, workflows.HandoverStatusAccepting)
			}
			if project != "" {
				if err := store.ValidProjectID(project); err != nil {
					return err
				}
				q += fmt.Sprintf(" AND %s = '%s'", workflows.HandoverProjectAttr.GetName(), project)
			}
			rows, err := runner.ListHandovers(ctx, c, t.Namespace, q)
			if err != nil {
				return err
			}
			if stuck {
				var out []runner.HandoverRow
				for _, r := range rows {
					if r.Problem, err = runner.StuckReason(ctx, c, r, older, failing); err != nil {
						return err
					}
					if r.Problem != "" {
						out = append(out, r)
					}
				}
				rows = out
			}
			if asJSON {
				if rows == nil {
					rows = []runner.HandoverRow{}
				}
				return printJSON(env.Stdout, rows)
			}
			tw := tabwriter.NewWriter(env.Stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "HANDOVER\tPROJECT\tRECIPIENT\tSTATUS\tSTARTED\tPROBLEM")
			for _, r := range rows {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", r.ID, r.Project, r.Recipient, r.Status,
					r.Started.Local().Format(time.DateTime), r.Problem)
			}
			return tw.Flush()
		},
	}
}

// handoverByToken finds the handover a link or token names.
func handoverByToken(ctx context.Context, st *store.Store, arg string) (store.Handover, error) {
	h, err := st.HandoverByToken(ctx, linkToken(arg, "handover"))
	if errors.Is(err, store.ErrNotFound) {
		return h, errors.New("this is not a valid handover link or token: copy the whole link from the email (…/handover/si_ho_…)")
	}
	return h, err
}

// waitHandover waits for the workflow to finish, printing each status once.
func waitHandover(ctx context.Context, env *Env, c client.Client, id string) (workflows.HandoverState, error) {
	run := c.GetWorkflow(ctx, workflows.HandoverWorkflowID(id), "")
	done := make(chan error, 1)
	var st workflows.HandoverState
	go func() { done <- run.Get(ctx, &st) }()
	seen := ""
	tick := time.NewTicker(300 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case err := <-done:
			return st, runner.Cause(err)
		case <-tick.C:
			v, err := c.QueryWorkflow(ctx, workflows.HandoverWorkflowID(id), "", workflows.HandoverQuery)
			var cur workflows.HandoverState
			if err == nil && v.Get(&cur) == nil && cur.Status != seen {
				seen = cur.Status
				fmt.Fprintf(env.Stderr, "  %s...\n", describeHandoverStatus(cur))
			}
		}
	}
}

func describeHandoverStatus(st workflows.HandoverState) string {
	if st.Status == workflows.HandoverStatusAccepting {
		return fmt.Sprintf("accepted; cloning the project and %d adapters, then setting up the subscription", st.Adapters)
	}
	return st.Status
}

func handoverAcceptCommand() *Command {
	var (
		db      config.Database
		t       config.Temporal
		account string
	)
	return &Command{
		Name:  "accept",
		Args:  "LINK|TOKEN",
		Short: "accept a handover as the new owner",
		Long: `si handover accept takes the project a handover offers: the link from the
email (or its token) and the account that will own it. The account must be
the recipient's: an existing account whose email is the one the handover was
sent to, or a new one, created now with that email. It waits while the
project and its adapters are cloned and the subscription is set up.

  si handover accept --as ada https://mesh.example.com/handover/si_ho_...`,
		Flags: func(fs *flag.FlagSet) {
			db.Register(fs)
			t.Register(fs, "127.0.0.1:7233", "Temporal frontend host:port")
			fs.StringVar(&account, "as", "", "the account that takes the project: the recipient's existing account, or a new name (created with the recipient's email)")
		},
		Run: func(ctx context.Context, env *Env, args []string) error {
			if len(args) != 1 || account == "" {
				return errors.New("usage: si handover accept --as ACCOUNT LINK|TOKEN")
			}
			if err := store.ValidProjectID(account); err != nil {
				return fmt.Errorf("--as: invalid account %q", account)
			}
			st, err := db.Open(ctx)
			if err != nil {
				return err
			}
			defer st.Close()
			h, err := handoverByToken(ctx, st, args[0])
			if err != nil {
				return err
			}
			if reason := h.ClosedReason(time.Now()); reason != "" {
				return errors.New(reason)
			}
			c, err := t.Dial(10 * time.Second)
			if err != nil {
				return err
			}
			defer c.Close()
			_, err = st.AccountByID(ctx, account)
			if err != nil && !errors.Is(err, store.ErrNotFound) {
				return err
			}
			req := workflows.HandoverAccept{Account: account, NewAccount: errors.Is(err, store.ErrNotFound)}
			if err := runner.AcceptHandover(ctx, c, h.ID, req); err != nil {
				return err
			}
			fmt.Fprintf(env.Stdout, "accepted handover %s of project %s as %s\n", h.ID, h.Project, account)
			res, err := waitHandover(ctx, env, c, h.ID)
			if err != nil {
				return fmt.Errorf("handover %s failed and was undone: %w", h.ID, err)
			}
			fmt.Fprintf(env.Stdout, "project %s is yours: %d adapters; subscription schedule %s\n", res.NewProject, res.Adapters, res.Schedule)
			return nil
		},
	}
}

// handoverSignal sends a decline or cancel and waits for the final state.
func handoverSignal(ctx context.Context, env *Env, t config.Temporal, h store.Handover, signal string) error {
	if reason := h.ClosedReason(time.Now()); reason != "" {
		return errors.New(reason)
	}
	c, err := t.Dial(10 * time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	if err := c.SignalWorkflow(ctx, workflows.HandoverWorkflowID(h.ID), "", signal, nil); err != nil {
		return fmt.Errorf("handover %s is no longer open", h.ID)
	}
	res, err := waitHandover(ctx, env, c, h.ID)
	if err != nil {
		return err
	}
	fmt.Fprintf(env.Stdout, "handover %s of project %s: %s\n", h.ID, h.Project, res.Status)
	return nil
}

func handoverDeclineCommand() *Command {
	var (
		db config.Database
		t  config.Temporal
	)
	return &Command{
		Name:  "decline",
		Args:  "LINK|TOKEN",
		Short: "decline a handover offered to you",
		Flags: func(fs *flag.FlagSet) {
			db.Register(fs)
			t.Register(fs, "127.0.0.1:7233", "Temporal frontend host:port")
		},
		Run: func(ctx context.Context, env *Env, args []string) error {
			if len(args) != 1 {
				return errors.New("usage: si handover decline LINK|TOKEN")
			}
			st, err := db.Open(ctx)
			if err != nil {
				return err
			}
			defer st.Close()
			h, err := handoverByToken(ctx, st, args[0])
			if err != nil {
				return err
			}
			return handoverSignal(ctx, env, t, h, workflows.HandoverDeclineSignal)
		},
	}
}

func handoverCancelCommand() *Command {
	var (
		db   config.Database
		t    config.Temporal
		host string
	)
	return &Command{
		Name:  "cancel",
		Args:  "HANDOVER-ID",
		Short: "cancel a pending handover you started",
		Flags: func(fs *flag.FlagSet) {
			db.Register(fs)
			t.Register(fs, "127.0.0.1:7233", "Temporal frontend host:port")
			fs.StringVar(&host, "account", "dev", "the host who started the handover")
		},
		Run: func(ctx context.Context, env *Env, args []string) error {
			if len(args) != 1 {
				return errors.New("usage: si handover cancel HANDOVER-ID")
			}
			st, err := db.Open(ctx)
			if err != nil {
				return err
			}
			defer st.Close()
			h, err := st.HandoverByID(ctx, args[0])
			if errors.Is(err, store.ErrNotFound) || err == nil && h.Host != host {
				return fmt.Errorf("no handover %s started by %s", args[0], host)
			}
			if err != nil {
				return err
			}
			return handoverSignal(ctx, env, t, h, workflows.HandoverCancelSignal)
		},
	}
}
