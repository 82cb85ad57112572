package cli

import (
	"context"
	"flag"
	"fmt"
	"text/tabwriter"

	"github.com/superinstance/mesh/internal/config"
	"github.com/superinstance/mesh/internal/store"
)

// Stats is `si stats --json`'s output.
type Stats struct {
	store.Conversion
	InviteAcceptRate   float64 `json:"invite_accept_rate"`
	HandoverAcceptRate float64 `json:"handover_accept_rate"`
}

func statsCommand() *Command {
	var (
		db     config.Database
		host   string
		asJSON bool
	)
	return &Command{
		Name:  "stats",
		Short: "conversion: invites sent and accepted, handovers by outcome, and the rates",
		Long: `si stats counts invites (sent, accepted, revoked, expired) and handovers
(started, accepted, declined, expired, cancelled, failed, pending), with the
invite accept rate (accepted / sent) and the handover accept rate (accepted /
accepted, declined, expired or failed). The same figures are on /metrics as
si_invites_total, si_handovers_total and si_conversion_ratio.`,
		Flags: func(fs *flag.FlagSet) {
			db.Register(fs)
			fs.StringVar(&host, "account", "", "only this host's invites and handovers (default: everyone's)")
			fs.BoolVar(&asJSON, "json", false, "print JSON")
		},
		Run: func(ctx context.Context, env *Env, _ []string) error {
			st, err := db.Open(ctx)
			if err != nil {
				return err
			}
			defer st.Close()
			c, err := st.Conversion(ctx, host)
			if err != nil {
				return err
			}
			s := Stats{Conversion: c, InviteAcceptRate: c.InviteAcceptRate(), HandoverAcceptRate: c.HandoverAcceptRate()}
			if asJSON {
				return printJSON(env.Stdout, s)
			}
			tw := tabwriter.NewWriter(env.Stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintf(tw, "invites\tsent %d\taccepted %d\trevoked %d\texpired %d\taccept rate %.1f%%\n",
				c.InvitesSent, c.InvitesAccepted, c.InvitesRevoked, c.InvitesExpired, 100*s.InviteAcceptRate)
			fmt.Fprintf(tw, "handovers\tstarted %d\taccepted %d\tdeclined %d\texpired %d\taccept rate %.1f%%\n",
				c.HandoversStarted, c.HandoversAccepted, c.HandoversDeclined, c.HandoversExpired, 100*s.HandoverAcceptRate)
			fmt.Fprintf(tw, "\tpending %d\tcancelled %d\tfailed %d\t\n", c.HandoversPending, c.HandoversCanceled, c.HandoversFailed)
			return tw.Flush()
		},
	}
}
