package cli

import (
	"context"
	"flag"
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/superinstance/mesh/internal/config"
	"github.com/superinstance/mesh/internal/store"
)

// Stats is `si stats --json`'s output: the conversion funnel (each step
// counted once, never lowered), the same by week of start, the rates (null
// where nothing was there to convert), and today's states.
type Stats struct {
	store.Conversion
	Funnel      store.Funnel       `json:"funnel"`
	FunnelWeeks []store.FunnelWeek `json:"funnel_weeks"`
	// InviteAcceptRate is accepted over sent invites.
	InviteAcceptRate *float64 `json:"invite_accept_rate"`
	// HandoverAcceptRate is accepted over decided handovers (accepted,
	// declined or expired; cancelled and pending ones are not decided).
	HandoverAcceptRate *float64 `json:"handover_accept_rate"`
}

// NewStats works the rates out of the funnel and the states.
func NewStats(c store.Conversion, f store.Funnel, weeks []store.FunnelWeek) Stats {
	s := Stats{Conversion: c, Funnel: f, FunnelWeeks: weeks}
	s.InviteAcceptRate, s.HandoverAcceptRate = f.AcceptRates(c)
	return s
}

// rate prints a ratio as a percentage, "-" when there is none.
func rate(r *float64) string {
	if r == nil {
		return "-"
	}
	return fmt.Sprintf("%.1f%%", 100**r)
}

// Print writes the stats as a table.
func (s Stats) Print(w io.Writer) error {
	f, c := s.Funnel, s.Conversion
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "invites\tsent %d\topened %d\taccepted %d\tfirst run %d\taccept rate %s\n",
		f.Invites.Sent, f.Invites.Opened, f.Invites.Accepted, f.Invites.FirstRun, rate(s.InviteAcceptRate))
	fmt.Fprintf(tw, "handovers\tstarted %d\topened %d\taccepted %d\tfirst paid %d\taccept rate %s\n",
		f.Handovers.Started, f.Handovers.Opened, f.Handovers.Accepted, f.Handovers.FirstPaid, rate(s.HandoverAcceptRate))
	fmt.Fprintf(tw, "now\tinvites pending %d\trevoked %d\texpired %d\t\t\n",
		c.InvitesSent-c.InvitesAccepted-c.InvitesRevoked-c.InvitesExpired, c.InvitesRevoked, c.InvitesExpired)
	fmt.Fprintf(tw, "\thandovers pending %d\tdeclined %d\texpired %d\tcancelled %d\tfailed %d\n",
		c.HandoversPending, c.HandoversDeclined, c.HandoversExpired, c.HandoversCanceled, c.HandoversFailed)
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(s.FunnelWeeks) == 0 {
		return nil
	}
	fmt.Fprintln(w, "\nby week of start (Monday, UTC):")
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "week of\tinvites sent > opened > accepted > first run\thandovers started > opened > accepted > paid")
	for _, wk := range s.FunnelWeeks {
		i, h := wk.Invites, wk.Handovers
		fmt.Fprintf(tw, "%s\t%d > %d > %d > %d\t%d > %d > %d > %d\n", wk.Week.Format("2006-01-02"),
			i.Sent, i.Opened, i.Accepted, i.FirstRun, h.Started, h.Opened, h.Accepted, h.FirstPaid)
	}
	return tw.Flush()
}

func statsCommand() *Command {
	var (
		db     config.Database
		host   string
		weeks  int
		asJSON bool
	)
	return &Command{
		Name:  "stats",
		Short: "conversion funnel: invites sent > opened > accepted > first run, handovers started > opened > accepted > paid",
		Long: `si stats shows the conversion funnel of every account (or one, --account):
invites sent, opened (the link's page shown), accepted and the guest's
first run; handovers started, opened, accepted and the new owner's first
paid invoice. Each step is counted once when it first happens and never
goes down, whatever happens to the invite or handover later. It also
shows the funnel by week of start, the invite accept rate (accepted / sent)
and the handover accept rate (accepted / accepted, declined or expired),
"-" where nothing was there to convert, and how many are in each state now.
The same counts are on /metrics as si_funnel_invites_total and
si_funnel_handovers_total.`,
		Flags: func(fs *flag.FlagSet) {
			db.Register(fs)
			fs.StringVar(&host, "account", "", "only this host's invites and handovers (default: everyone's)")
			fs.IntVar(&weeks, "weeks", 12, "how many of the latest weeks to show by week of start (0: all)")
			fs.BoolVar(&asJSON, "json", false, "print JSON")
		},
		Run: func(ctx context.Context, env *Env, _ []string) error {
			if weeks < 0 {
				return fmt.Errorf("--weeks %d: give 0 (all weeks) or more", weeks)
			}
			st, err := db.Open(ctx)
			if err != nil {
				return err
			}
			defer st.Close()
			c, err := st.Conversion(ctx, host)
			if err != nil {
				return err
			}
			f, byWeek, err := st.Funnels(ctx, host, weeks)
			if err != nil {
				return err
			}
			s := NewStats(c, f, byWeek)
			if asJSON {
				return printJSON(env.Stdout, s)
			}
			return s.Print(env.Stdout)
		},
	}
}
