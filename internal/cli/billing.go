package cli

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	sdkclient "go.temporal.io/sdk/client"

	"github.com/superinstance/mesh/activities"
	"github.com/superinstance/mesh/internal/billing"
	"github.com/superinstance/mesh/internal/client"
	"github.com/superinstance/mesh/internal/config"
	"github.com/superinstance/mesh/internal/money"
	"github.com/superinstance/mesh/internal/pki"
	"github.com/superinstance/mesh/internal/runner"
	"github.com/superinstance/mesh/internal/store"
	"github.com/superinstance/mesh/workers"
	"github.com/superinstance/mesh/workflows"
)

// ledgerCommand builds a command that opens the database and acts on one account.
type ledgerCommand struct {
	db      config.Database
	account string
	asJSON  bool
}

func (l *ledgerCommand) flags(fs *flag.FlagSet) {
	l.db.Register(fs)
	fs.StringVar(&l.account, "account", "dev", "the account")
	fs.BoolVar(&l.asJSON, "json", false, "print JSON")
}

func (l *ledgerCommand) run(fn func(ctx context.Context, st *store.Store, env *Env) (any, string, error)) func(context.Context, *Env, []string) error {
	return func(ctx context.Context, env *Env, args []string) error {
		if len(args) > 0 {
			return fmt.Errorf("unexpected argument %q", args[0])
		}
		st, err := l.db.Open(ctx)
		if err != nil {
			return err
		}
		defer st.Close()
		v, text, err := fn(ctx, st, env)
		if err != nil {
			if errors.Is(err, store.ErrNotFound) {
				return fmt.Errorf("account %s not found: create it with si account create", l.account)
			}
			return err
		}
		if l.asJSON {
			return printJSON(env.Stdout, v)
		}
		_, err = io.WriteString(env.Stdout, text)
		return err
	}
}

// accountJSON is an account as --json prints it: money in micro-dollars, with a display string.
type accountJSON struct {
	ID                   string `json:"id"`
	Email                string `json:"email,omitempty"`
	Tier                 string `json:"tier"`
	CreditsMicros        int64  `json:"credits_micros"`
	UnbilledMicros       int64  `json:"unbilled_micros"`
	CreditCeilingMicros  int64  `json:"credit_ceiling_micros"`
	FlushThresholdMicros int64  `json:"flush_threshold_micros"`
	Status               string `json:"status"`
	SuspendedReason      string `json:"suspended_reason,omitempty"`
	StripeCustomerID     string `json:"stripe_customer_id,omitempty"`
}

func toJSON(a store.Account) accountJSON {
	return accountJSON{ID: a.ID, Email: a.Email, Tier: a.Tier, CreditsMicros: int64(a.Credits), UnbilledMicros: int64(a.Unbilled),
		CreditCeilingMicros: int64(a.CreditCeiling), FlushThresholdMicros: int64(a.FlushThreshold), Status: a.Status,
		SuspendedReason: a.SuspendedReason, StripeCustomerID: a.StripeCustomerID}
}

// tokenJSON is an API token as the operator's token commands show it.
func tokenJSON(t store.APIToken) client.Token {
	return client.Token{ID: t.ID, Name: t.Name, CreatedAt: t.CreatedAt, RevokedAt: t.RevokedAt}
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func describe(a store.Account) string {
	status := a.Status
	if a.SuspendedReason != "" {
		status += " (" + strings.ReplaceAll(a.SuspendedReason, "_", " ") + ")"
	}
	return fmt.Sprintf("account   %s\ntier      %s\ncredits   %s\nunbilled  %s\nceiling   %s\nflush at  %s\nstatus    %s\n",
		a.ID, a.Tier, a.Credits.Dollars(), a.Unbilled.Dollars(), a.CreditCeiling.Dollars(), a.FlushThreshold.Dollars(), status)
}

// given wraps a flag's value and notes whether the command line (or its
// environment variable) set it.
type given struct {
	flag.Value
	given bool
}

func (g *given) Set(s string) error {
	g.given = true
	return g.Value.Set(s)
}

// Type names the flag's value in help as the string it is.
func (*given) Type() string { return "string" }

// givenFlag wraps fs's flag name, already defined, in a given.
func givenFlag(fs *flag.FlagSet, name string) *given {
	f := fs.Lookup(name)
	g := &given{Value: f.Value}
	f.Value = g
	return g
}

func accountCommand() *Command {
	var (
		l, tk, sh, ls, rv ledgerCommand
		revokeID          string
		revokeAccount     *given
		email             string
		sc                config.Stripe
		tokenName         string
	)
	return &Command{
		Name:  "account",
		Short: "billing accounts",
		Sub: []*Command{{
			Name:  "token",
			Short: "issue an API token for the HTTP API (shown once; only its hash is kept)",
			Flags: func(fs *flag.FlagSet) {
				tk.flags(fs)
				fs.StringVar(&tokenName, "name", "", "a label for the token")
			},
			Run: tk.run(func(ctx context.Context, st *store.Store, _ *Env) (any, string, error) {
				tok, err := st.CreateAPIToken(ctx, tk.account, tokenName)
				if err != nil {
					return nil, "", err
				}
				return map[string]string{"account": tk.account, "token": tok}, tok + "\n", nil
			}),
		}, {
			Name:  "tokens",
			Short: "list an account's API tokens: id, name, when issued and revoked (never the tokens)",
			Flags: ls.flags,
			Run: ls.run(func(ctx context.Context, st *store.Store, _ *Env) (any, string, error) {
				ts, err := st.APITokens(ctx, ls.account)
				if err != nil {
					return nil, "", err
				}
				out := make([]client.Token, 0, len(ts))
				for _, t := range ts {
					out = append(out, tokenJSON(t))
				}
				var text strings.Builder
				if len(ts) == 0 {
					fmt.Fprintf(&text, "account %s has no API tokens: issue one with si account token\n", ls.account)
				} else if err := writeTokens(&text, out); err != nil {
					return nil, "", err
				}
				return map[string]any{"account": ls.account, "tokens": out}, text.String(), nil
			}),
		}, {
			Name:  "revoke-token",
			Short: "revoke an API token, named by its id (si account tokens) or by the token itself; its browser sessions end with it",
			Long: `si account revoke-token revokes one API token: --id is its id as si account
tokens lists it (with --account), or the token itself, which names its own
account (--account is then not needed); --id - reads it from standard input, out of the process list and
shell history:

  si account revoke-token --account acme --id 3f9a0c12e4b7
  echo "$LEAKED" | si account revoke-token --id -

The api refuses the token from its next request, and the browser sessions
opened with it end.`,
			Flags: func(fs *flag.FlagSet) {
				rv.flags(fs)
				revokeAccount = givenFlag(fs, "account")
				fs.StringVar(&revokeID, "id", "", "the token's id as si account tokens lists it, the token itself, or - to read either from standard input (required)")
			},
			Run: rv.run(func(ctx context.Context, st *store.Store, env *Env) (any, string, error) {
				id := revokeID
				if id == "-" {
					line, err := bufio.NewReader(io.LimitReader(env.stdin(), 4096)).ReadString('\n')
					if err != nil && !errors.Is(err, io.EOF) {
						return nil, "", err
					}
					id = strings.TrimSpace(line)
				}
				if id == "" {
					return nil, "", errors.New("--id is required: the token's id as si account tokens lists it, or the token itself (--id - reads it from standard input)")
				}
				if strings.HasPrefix(id, store.TokenPrefix) {
					// The token names its own account; an --account given
					// must be that one.
					a, err := st.TokenAccount(ctx, id)
					switch {
					case err == nil && revokeAccount.given && a != rv.account:
						return nil, "", fmt.Errorf("the token belongs to account %s, not %q (--account or SI_ACCOUNT): none was revoked; give the token with neither", a, rv.account)
					case err == nil:
						rv.account = a
					case errors.Is(err, store.ErrNotFound):
						return nil, "", errors.New("no account has this token: none was revoked (check that it was copied whole)")
					default:
						return nil, "", err
					}
				}
				if _, err := st.AccountByID(ctx, rv.account); err != nil {
					return nil, "", err
				}
				t, err := st.RevokeAPIToken(ctx, rv.account, id)
				switch {
				case errors.Is(err, store.ErrTokenNotFound), errors.Is(err, store.ErrBadTokenID):
					return nil, "", fmt.Errorf("account %s: %w (si account tokens --account %s lists its tokens)", rv.account, err, rv.account)
				case errors.Is(err, store.ErrAmbiguousTokenID):
					return nil, "", fmt.Errorf("account %s: %w and none was revoked: give the token itself (--id -)", rv.account, err)
				case err != nil:
					return nil, "", err
				}
				return map[string]any{"account": rv.account, "token": tokenJSON(t)},
					fmt.Sprintf("revoked token %s (%s) of account %s\n", t.ID, orDash(t.Name), rv.account), nil
			}),
		}, {
			Name:  "show",
			Short: "an account's credits, unbilled balance, ceiling and status, and whether its books balance",
			Flags: sh.flags,
			Run: sh.run(func(ctx context.Context, st *store.Store, _ *Env) (any, string, error) {
				a, err := st.AccountByID(ctx, sh.account)
				if err != nil {
					return nil, "", err
				}
				b, err := st.Books(ctx, sh.account)
				if err != nil {
					return nil, "", err
				}
				text := describe(a) + fmt.Sprintf("charged   %s in all, %s of it flushed to Stripe\n", b.Charged.Dollars(), b.Flushed.Dollars())
				return map[string]any{"account": toJSON(a), "charged_micros": int64(b.Charged), "flushed_micros": int64(b.Flushed), "balanced": b.Balanced()}, text, nil
			}),
		}, {
			Name:  "create",
			Short: "create a billing account",
			Flags: func(fs *flag.FlagSet) {
				l.flags(fs)
				fs.StringVar(&email, "email", "", "the account's email (required)")
				sc.Register(fs)
			},
			Run: l.run(func(ctx context.Context, st *store.Store, _ *Env) (any, string, error) {
				if !strings.Contains(email, "@") {
					return nil, "", errors.New("--email is required")
				}
				if l.account == "dev" {
					l.account = slug(email)
				}
				if err := pki.ValidID("account", l.account); err != nil {
					return nil, "", err
				}
				// A signup run again after a failure carries on with its account
				// and its Stripe customer.
				prev, err := st.AccountByID(ctx, l.account)
				resuming := err == nil && prev.Email == email
				// The Stripe customer first: its idempotency key is the account
				// id, so a signup retried after a failure gets the same customer.
				sc.DevDir = l.db.DevDir
				var (
					customer, subscription string
					stripeAPI              *billing.Stripe
				)
				if resuming {
					customer = prev.StripeCustomerID
				}
				if base, key, ok := sc.Resolve(); ok {
					stripeAPI = billing.NewStripe(base, key, sc.MeterEvent)
					if customer == "" {
						if customer, err = stripeAPI.EnsureCustomer(ctx, l.account, email); err != nil {
							return nil, "", fmt.Errorf("creating the Stripe customer: %w", err)
						}
					}
				}
				a := prev
				if !resuming {
					if a, err = st.CreateAccount(ctx, l.account, email); err != nil {
						return nil, "", err
					}
				}
				if customer != "" && stripeAPI != nil {
					if err := st.SetStripeCustomer(ctx, a.ID, customer); err != nil {
						return nil, "", err
					}
					a.StripeCustomerID = customer
					// Then the subscription to the metered price, once.
					subscription, err = stripeAPI.SubscribeAccount(ctx, st, a.ID, customer)
					if err != nil && !errors.Is(err, billing.ErrNoSetup) {
						return nil, "", fmt.Errorf("subscribing %s to the metered price: %w (run the same si account create again to finish)", a.ID, err)
					}
				}
				text := describe(a)
				switch {
				case customer == "":
					text += "stripe    none (no --stripe-key and no si dev stripe-mock): usage accrues unbilled\n"
				case subscription == "":
					text += "stripe    " + customer + ", not subscribed to a price yet: si stripe setup subscribes it, and then Stripe invoices its usage\n"
				default:
					text += "stripe    " + customer + ", subscription " + subscription + "\n"
				}
				return struct {
					accountJSON
					StripeSubscription string `json:"stripe_subscription,omitempty"`
				}{toJSON(a), subscription}, text, nil
			}),
		}},
	}
}

// slug makes an account id from an email's local part.
func slug(email string) string {
	local, _, _ := strings.Cut(strings.ToLower(email), "@")
	var b strings.Builder
	for _, r := range local {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9', r == '.', r == '_', r == '-':
			b.WriteRune(r)
		default:
			b.WriteRune('-')
		}
	}
	s := strings.Trim(b.String(), ".-_")
	if len(s) > 63 {
		s = s[:63]
	}
	return s
}

func balanceCommand() *Command {
	var (
		api    apiFlags
		asJSON bool
	)
	return &Command{
		Name:  "balance",
		Short: "your account's credits, unbilled balance, ceiling and status",
		Long: `si balance shows the account your token names (si login): knowledge credits,
the unbilled balance, the credit ceiling, the tier and whether cloud access is
on. Money is shown in dollars; --json gives micro-dollars.`,
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
			b, err := c.Balance(ctx)
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(env.Stdout, b)
			}
			status := b.Status
			if b.SuspendedReason != "" {
				status += " (" + strings.ReplaceAll(b.SuspendedReason, "_", " ") + ")"
			}
			fmt.Fprintf(env.Stdout, "account   %s\ntier      %s\ncredits   %s\nunbilled  %s\nceiling   %s\nstatus    %s\n",
				b.Account, b.Tier, money.Micros(b.Credits).Dollars(), money.Micros(b.Unbilled).Dollars(), money.Micros(b.CreditCeiling).Dollars(), status)
			return nil
		},
	}
}

func usageCommand() *Command {
	var (
		api    apiFlags
		asJSON bool
		since  time.Duration
		limit  int
	)
	return &Command{
		Name:  "usage",
		Short: "your account's usage events, newest first",
		Long: `si usage lists the charged inference calls of the account your token names
(si login), guests' calls it pays for included, newest first.`,
		Flags: func(fs *flag.FlagSet) {
			api.register(fs)
			fs.BoolVar(&asJSON, "json", false, "print JSON")
			fs.DurationVar(&since, "since", 24*time.Hour, "how far back (at most 8784h)")
			fs.IntVar(&limit, "limit", 50, "at most this many events (1-1000)")
		},
		Run: func(ctx context.Context, env *Env, args []string) error {
			if len(args) > 0 {
				return fmt.Errorf("unexpected argument %q", args[0])
			}
			c, err := api.client()
			if err != nil {
				return err
			}
			events, err := c.Usage(ctx, since, limit)
			if err != nil {
				return err
			}
			if asJSON {
				if events == nil {
					events = []client.UsageEvent{}
				}
				return printJSON(env.Stdout, events)
			}
			if len(events) == 0 {
				fmt.Fprintln(env.Stdout, "no usage in that period")
				return nil
			}
			tw := tabwriter.NewWriter(env.Stdout, 0, 2, 2, ' ', 0)
			fmt.Fprintln(tw, "TIME\tEVENT\tPROJECT\tMODEL\tTOKENS\tCREDITS\tCHARGED")
			for _, e := range events {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d+%d\t%s\t%s\n", e.At.Local().Format("15:04:05"), e.EventID, e.Project, e.Model,
					e.PromptTokens, e.CompletionTokens, money.Micros(e.CreditsApplied).Dollars(), money.Micros(e.Charged).Dollars())
			}
			return tw.Flush()
		},
	}
}

func creditCommand() *Command {
	var (
		l      ledgerCommand
		amount string
	)
	return &Command{
		Name:  "credit",
		Short: "knowledge credits",
		Sub: []*Command{{
			Name:  "add",
			Short: "add knowledge credits to an account (spent before anything is billed)",
			Flags: func(fs *flag.FlagSet) {
				l.flags(fs)
				fs.StringVar(&amount, "amount", "", `dollars, e.g. "5" or "0.25"`)
			},
			Run: l.run(func(ctx context.Context, st *store.Store, _ *Env) (any, string, error) {
				amt, err := money.Parse(amount)
				if err != nil {
					return nil, "", err
				}
				a, err := st.AddCredits(ctx, l.account, amt, "cli-"+time.Now().UTC().Format(time.RFC3339Nano))
				if err != nil {
					return nil, "", err
				}
				return toJSON(a), describe(a), nil
			}),
		}},
	}
}

func tierCommand() *Command {
	var (
		l, p       ledgerCommand
		multiplier string
	)
	return &Command{
		Name:  "tier",
		Short: "pricing tiers",
		Sub: []*Command{{
			Name:  "price",
			Args:  "TIER",
			Short: "set a tier's multiplier on the cost basis (managed 1.03 and byok 1.30 by default)",
			Flags: func(fs *flag.FlagSet) {
				p.flags(fs)
				fs.StringVar(&multiplier, "multiplier", "", `e.g. "1.03"`)
			},
			Run: func(ctx context.Context, env *Env, args []string) error {
				if len(args) != 1 {
					return errors.New("give the tier: si tier price managed --multiplier 1.05")
				}
				tier := args[0]
				return p.run(func(ctx context.Context, st *store.Store, _ *Env) (any, string, error) {
					m, err := money.ParsePPM(multiplier)
					if err != nil {
						return nil, "", err
					}
					if err := st.SetMultiplier(ctx, tier, m); err != nil {
						return nil, "", err
					}
					all, err := st.Multipliers(ctx)
					if err != nil {
						return nil, "", err
					}
					out := map[string]string{}
					text := ""
					for _, t := range []string{"managed", "byok", tier} {
						if v, ok := all[t]; ok && out[t] == "" {
							out[t] = v.String()
							text += fmt.Sprintf("%-8s x%s\n", t, v)
						}
					}
					return out, text, nil
				})(ctx, env, nil)
			},
		}, {
			Name:  "set",
			Args:  "managed|byok",
			Short: "move an account to the managed (x1.03) or bring-your-own-key (x1.30) tier",
			Flags: l.flags,
			Run: func(ctx context.Context, env *Env, args []string) error {
				if len(args) != 1 {
					return errors.New("give the tier: si tier set managed|byok")
				}
				tier := args[0]
				return l.run(func(ctx context.Context, st *store.Store, _ *Env) (any, string, error) {
					if err := st.SetTier(ctx, l.account, tier); err != nil {
						return nil, "", err
					}
					a, err := st.AccountByID(ctx, l.account)
					return toJSON(a), describe(a), err
				})(ctx, env, nil)
			},
		}},
	}
}

func ceilingCommand() *Command {
	var (
		l      ledgerCommand
		amount string
	)
	return &Command{
		Name:  "ceiling",
		Short: "credit ceilings",
		Sub: []*Command{{
			Name:  "set",
			Short: "set the unbilled balance at which an account is suspended",
			Flags: func(fs *flag.FlagSet) {
				l.flags(fs)
				fs.StringVar(&amount, "amount", "", `dollars, e.g. "100"`)
			},
			Run: l.run(func(ctx context.Context, st *store.Store, _ *Env) (any, string, error) {
				amt, err := money.Parse(amount)
				if err != nil {
					return nil, "", err
				}
				if err := st.SetCeiling(ctx, l.account, amt); err != nil {
					return nil, "", err
				}
				a, err := st.AccountByID(ctx, l.account)
				return toJSON(a), describe(a), err
			}),
		}},
	}
}

func billingCommand() *Command {
	var (
		l    ledgerCommand
		t    config.Temporal
		fl   ledgerCommand
		wait time.Duration
		// in is the flush workflow's retry budget (zero: the workflow's defaults).
		in workflows.FlushInput
	)
	return &Command{
		Name:  "billing",
		Short: "Stripe flushes",
		Sub: []*Command{{
			Name:  "flush",
			Short: "flush an account's unbilled whole cents to Stripe now, and wait for the result",
			Long: `si billing flush reserves the account's unbilled whole cents as a new flush (its id
comes from the account's flush sequence, so no flush id is ever reused), starts
its workflow and waits up to --wait for Stripe's answer. An account with a flush
still open (pending, or in doubt because Stripe's answer was lost) gets that
flush's workflow started again if it had stopped, and no second flush: its cents
may be at Stripe already. A flush in doubt is retried under its own identifier
until Stripe accepts or refuses it; see si billing flushes.

--send-attempts and --retry-every shape that flush's retries (a test or a
drill shortens them; the billing sweep's flushes keep the defaults).`,
			Flags: func(fs *flag.FlagSet) {
				fl.flags(fs)
				t.Register(fs, "127.0.0.1:7233", "Temporal frontend host:port")
				fs.DurationVar(&wait, "wait", time.Minute, "how long to wait for Stripe's answer before reporting the flush's state")
				fs.Func("send-attempts", "quick tries to reach Stripe before the flush is in doubt (default 12, about 10 minutes)", func(v string) error {
					n, err := strconv.ParseInt(v, 10, 32)
					if err != nil || n < 1 || n > 100 {
						return fmt.Errorf("--send-attempts %q: give a whole number from 1 to 100", v)
					}
					in.SendAttempts = int32(n)
					return nil
				})
				fs.Func("retry-every", "pause between rounds of tries of a flush in doubt (default 10m, at least 1s)", func(v string) error {
					d, err := time.ParseDuration(v)
					if err != nil || d < time.Second {
						return fmt.Errorf("--retry-every %q: give a duration of at least 1s, e.g. 10m", v)
					}
					in.RetryEvery = d
					return nil
				})
			},
			Run: fl.run(func(ctx context.Context, st *store.Store, _ *Env) (any, string, error) {
				if _, err := st.AccountByID(ctx, fl.account); err != nil {
					return nil, "", err
				}
				c, err := t.Dial(5 * time.Second)
				if err != nil {
					return nil, "", err
				}
				defer c.Close()
				starter := workers.Flushes(c, st)
				starter.NewInput = func(account, id string) any {
					fi := in
					fi.Account, fi.FlushID = account, id
					return fi
				}
				s, err := starter.Start(ctx, fl.account)
				if errors.Is(err, store.ErrNothingToFlush) || errors.Is(err, store.ErrNoStripeCustomer) || errors.Is(err, store.ErrNoUsageSubscription) {
					a, _ := st.AccountByID(ctx, fl.account)
					out := flushJSON{Account: fl.account, Outcome: "nothing_to_flush", UnbilledMicros: int64(a.Unbilled), Reason: err.Error()}
					if errors.Is(err, store.ErrNoUsageSubscription) {
						out.Outcome = "not_billable"
					}
					return out, "no flush: " + err.Error() + "\n", nil
				}
				if err != nil {
					return nil, "", err
				}
				return reportFlush(ctx, c, st, s, wait)
			}),
		}, {
			Name:  "flushes",
			Short: "list flushes to Stripe and their state: pending, in_doubt, sent, failed (--account \"\" lists every account's)",
			Flags: l.flags,
			Run: l.run(func(ctx context.Context, st *store.Store, _ *Env) (any, string, error) {
				fs, err := st.Flushes(ctx, l.account)
				if err != nil {
					return nil, "", err
				}
				var sb strings.Builder
				// Accounts owing cents that no flush may bill yet.
				notBillable := ""
				if nb, err := st.UnbillableAccounts(ctx); err != nil {
					return nil, "", err
				} else if len(nb) > 0 && (l.account == "" || slices.Contains(nb, l.account)) {
					if l.account != "" {
						nb = []string{l.account}
					}
					notBillable = fmt.Sprintf("not billable, no flush until subscribed to the metered price (run si stripe setup): %s\n", strings.Join(nb, ", "))
				}
				rows := make([]flushRow, 0, len(fs))
				for _, f := range fs {
					rows = append(rows, newFlushRow(f))
				}
				if len(fs) == 0 {
					return rows, "no flushes\n" + notBillable, nil
				}
				tw := tabwriter.NewWriter(&sb, 0, 2, 2, ' ', 0)
				fmt.Fprintln(tw, "FLUSH\tACCOUNT\tAMOUNT\tSTATE\tATTEMPTS\tUPDATED\tERROR")
				inDoubt, overbilled := 0, int64(0)
				for _, f := range fs {
					if f.State == store.FlushInDoubt {
						inDoubt++
					}
					overbilled += f.OverbilledCents
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\t%s\n", f.ID, f.Account, dollars(f.AmountCents), f.State,
						f.Attempts, f.UpdatedAt.Format(time.RFC3339), f.Error)
				}
				_ = tw.Flush()
				if inDoubt > 0 {
					fmt.Fprintf(&sb, "%d flush(es) in doubt: Stripe may hold them; each is retried under its own identifier until Stripe answers\n", inDoubt)
				}
				if overbilled > 0 {
					fmt.Fprintf(&sb, "%s charged twice: Stripe holds copies of sent flushes it refused to cancel (see ERROR); credit the customers back\n", dollars(overbilled))
				}
				fmt.Fprint(&sb, notBillable)
				return rows, sb.String(), nil
			}),
		}},
	}
}

// dollars formats a whole number of cents, as Stripe holds them.
func dollars(cents int64) string { return (money.Micros(cents) * money.Cent).Dollars() }

// flushRow is a flush as --json prints it (store.Flush has no JSON names:
// it travels in workflow payloads, whose encoding stays as it is).
type flushRow struct {
	ID               string    `json:"id"`
	Account          string    `json:"account"`
	AmountCents      int64     `json:"amount_cents"`
	State            string    `json:"state"`
	StripeIdentifier string    `json:"stripe_identifier,omitempty"`
	Attempts         int       `json:"attempts"`
	Error            string    `json:"error,omitempty"`
	CreatedAt        time.Time `json:"created_at"`
	UpdatedAt        time.Time `json:"updated_at"`
	MeterAt          time.Time `json:"meter_at,omitzero"`
	FirstAttemptAt   time.Time `json:"first_attempt_at,omitzero"`
	OverbilledCents  int64     `json:"overbilled_cents,omitempty"`
}

func newFlushRow(f store.Flush) flushRow {
	return flushRow{ID: f.ID, Account: f.Account, AmountCents: f.AmountCents, State: f.State, StripeIdentifier: f.StripeIdentifier,
		Attempts: f.Attempts, Error: f.Error, CreatedAt: f.CreatedAt, UpdatedAt: f.UpdatedAt, MeterAt: f.MeterAt,
		FirstAttemptAt: f.FirstAttemptAt, OverbilledCents: f.OverbilledCents}
}

// flushJSON is what si billing flush --json prints.
type flushJSON struct {
	Account string `json:"account"`
	// Outcome: nothing_to_flush, not_billable (no subscription to the
	// metered price once si stripe setup has run), sent, failed, in_doubt, pending.
	Outcome        string    `json:"outcome"`
	Flush          *flushRow `json:"flush,omitempty"`
	AlreadyOpen    bool      `json:"already_open,omitempty"`
	UnbilledMicros int64     `json:"unbilled_micros"`
	Reason         string    `json:"reason,omitempty"`
}

// reportFlush waits up to wait for the flush's workflow and says what
// really happened, from the flush's row: sent, failed, or still open.
func reportFlush(ctx context.Context, c sdkclient.Client, st *store.Store, s activities.FlushStarted, wait time.Duration) (any, string, error) {
	var text strings.Builder
	if !s.Reserved {
		fmt.Fprintf(&text, "flush %s (%s) was already open (%s) and is carried on; no second flush while it is\n",
			s.Flush.ID, dollars(s.Flush.AmountCents), strings.ReplaceAll(s.Flush.State, "_", " "))
	}
	wctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	var res workflows.FlushResult
	werr := c.GetWorkflow(wctx, s.Flush.ID, s.RunID).Get(wctx, &res)
	f, err := st.FlushByID(ctx, s.Flush.ID)
	if err != nil {
		return nil, "", err
	}
	a, err := st.AccountByID(ctx, f.Account)
	if err != nil {
		return nil, "", err
	}
	row := newFlushRow(f)
	out := flushJSON{Account: f.Account, Outcome: f.State, Flush: &row, AlreadyOpen: !s.Reserved, UnbilledMicros: int64(a.Unbilled), Reason: f.Error}
	switch f.State {
	case store.FlushSent:
		fmt.Fprintf(&text, "flush %s: %s sent to Stripe after %d attempt(s); %s unbilled\n", f.ID, dollars(f.AmountCents), f.Attempts, a.Unbilled.Dollars())
	case store.FlushFailed:
		fmt.Fprintf(&text, "flush %s: %s refused by Stripe: %s; the cents are unbilled again (%s)\n", f.ID, dollars(f.AmountCents), f.Error, a.Unbilled.Dollars())
		return out, text.String(), runner.Cause(werr)
	case store.FlushInDoubt:
		fmt.Fprintf(&text, "flush %s: %s is in doubt after %d attempt(s) (last: %s): Stripe may hold it; it is retried under the same identifier until Stripe answers (si billing flushes)\n",
			f.ID, dollars(f.AmountCents), f.Attempts, f.Error)
	default:
		fmt.Fprintf(&text, "flush %s: %s still pending after %s (%d attempt(s)); it carries on in the background (si billing flushes)\n", f.ID, dollars(f.AmountCents), wait, f.Attempts)
	}
	if werr != nil && f.Open() && wctx.Err() == nil {
		// The workflow ended and left the flush open: the sweep starts it again.
		fmt.Fprintf(&text, "its workflow stopped (%v); the billing sweep starts it again\n", runner.Cause(werr))
	}
	return out, text.String(), nil
}
