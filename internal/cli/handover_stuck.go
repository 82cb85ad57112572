package cli

import (
	"context"
	"flag"
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/superinstance/mesh/internal/config"
	"github.com/superinstance/mesh/internal/runner"
	"github.com/superinstance/mesh/internal/store"
	"github.com/superinstance/mesh/workflows"
)

func handoverStuckCommand() *Command {
	var (
		t       config.Temporal
		all     bool
		older   time.Duration
		failing int
		asJSON  bool
		project string
	)
	return &Command{
		Name:     "stuck",
		Operator: true,
		Short:    "operator: list stuck handovers from Temporal's visibility store (--all: every one)",
		Long: `si handover stuck lists handover workflows by their search attributes, for
the operator (it reads Temporal directly; customers see their own with si
handover ls). It lists open handovers that are pending (or, accepted,
awaiting the new owner's payment method) past --older-than,
or whose activities have failed --failing times or more in a row (a mail
server or Stripe that keeps refusing, say), with the last error; --all lists
every handover workflow.`,
		Flags: func(fs *flag.FlagSet) {
			t.Register(fs, "127.0.0.1:7233", "Temporal frontend host:port")
			fs.BoolVar(&all, "all", false, "every handover workflow, not only the stuck ones")
			fs.DurationVar(&older, "older-than", 72*time.Hour, "an open handover older than this is stuck")
			fs.IntVar(&failing, "failing", 3, "an activity that failed this many attempts makes its handover stuck")
			fs.StringVar(&project, "project", "", "only this project's handovers")
			fs.BoolVar(&asJSON, "json", false, "print JSON")
		},
		Run: func(ctx context.Context, env *Env, _ []string) error {
			stuck := !all
			c, err := t.Dial(10 * time.Second)
			if err != nil {
				return err
			}
			defer c.Close()
			q := "WorkflowType = 'HandoverWorkflow'"
			if stuck {
				q += fmt.Sprintf(" AND ExecutionStatus = 'Running' AND %s IN ('%s', '%s', '%s')", workflows.HandoverStatusAttr.GetName(),
					store.HandoverPending, workflows.HandoverStatusAccepting, store.HandoverAwaitingPayment)
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
