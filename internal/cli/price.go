package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/superinstance/mesh/internal/config"
	"github.com/superinstance/mesh/internal/money"
	"github.com/superinstance/mesh/internal/store"
)

// withSub adds subcommands to a command group.
func withSub(c *Command, subs ...*Command) *Command {
	c.Sub = append(c.Sub, subs...)
	return c
}

// priceJSON is a model price as --json prints it: micro-dollars per million tokens.
type priceJSON struct {
	Model                   string `json:"model"`
	PromptPerMTokMicros     int64  `json:"prompt_per_mtok_micros"`
	CompletionPerMTokMicros int64  `json:"completion_per_mtok_micros"`
}

func pricesTable(ps []store.ModelPrice) ([]priceJSON, string) {
	var sb strings.Builder
	tw := tabwriter.NewWriter(&sb, 0, 2, 2, ' ', 0)
	fmt.Fprintln(tw, "MODEL\tPROMPT /1M TOKENS\tCOMPLETION /1M TOKENS")
	out := []priceJSON{}
	for _, p := range ps {
		out = append(out, priceJSON{p.Model, int64(p.PromptPerMTok), int64(p.CompletionPerMTok)})
		name := p.Model
		if name == "*" {
			name = "* (any other model)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\n", name, p.PromptPerMTok.Dollars(), p.CompletionPerMTok.Dollars())
	}
	_ = tw.Flush()
	return out, sb.String()
}

// priceAmount reads a per-million-token price in dollars.
func priceAmount(flagName, s string) (money.Micros, error) {
	if s == "" {
		return 0, fmt.Errorf("--%s is required: dollars per million tokens, e.g. --%s 0.15", flagName, flagName)
	}
	v, err := money.Parse(s)
	if err != nil {
		return 0, fmt.Errorf("--%s: %w", flagName, err)
	}
	if v < 0 {
		return 0, fmt.Errorf("--%s %s: a price cannot be negative", flagName, s)
	}
	return v, nil
}

// operatorCommand opens the database for a command that acts on no one account.
type operatorCommand struct {
	db     config.Database
	asJSON bool
}

func (o *operatorCommand) flags(fs *flag.FlagSet) {
	o.db.Register(fs)
	fs.BoolVar(&o.asJSON, "json", false, "print JSON")
}

func (o *operatorCommand) run(fn func(ctx context.Context, st *store.Store) (any, string, error)) func(context.Context, *Env, []string) error {
	return func(ctx context.Context, env *Env, args []string) error {
		if len(args) > 0 {
			return fmt.Errorf("unexpected argument %q", args[0])
		}
		st, err := o.db.Open(ctx)
		if err != nil {
			return err
		}
		defer st.Close()
		v, text, err := fn(ctx, st)
		if err != nil {
			return err
		}
		if o.asJSON {
			return printJSON(env.Stdout, v)
		}
		_, err = io.WriteString(env.Stdout, text)
		return err
	}
}

func priceCommand() *Command {
	var (
		set, ls            operatorCommand
		model              string
		prompt, completion string
	)
	return &Command{
		Name:  "price",
		Short: "model prices, the cost basis of usage (operator)",
		Sub: []*Command{{
			Name:  "set",
			Short: "set a model's prompt and completion prices in dollars per million tokens (--model '*' prices every other model)",
			Long: `si price set sets the cost basis of one model in dollars per million tokens,
e.g. si price set --model llama-3-70b --prompt 0.59 --completion 0.79. The
tier multiplier applies on top. Usage logged from now on is priced with it;
what was logged before keeps the price it had. --model '*' is the price of
every model without one of its own.`,
			Flags: func(fs *flag.FlagSet) {
				set.flags(fs)
				fs.StringVar(&model, "model", "", "the model name, as the inference server takes it")
				fs.StringVar(&prompt, "prompt", "", `dollars per million prompt tokens, e.g. "0.15"`)
				fs.StringVar(&completion, "completion", "", `dollars per million completion tokens, e.g. "0.60"`)
			},
			Run: set.run(func(ctx context.Context, st *store.Store) (any, string, error) {
				if model == "" {
					return nil, "", errors.New("--model is required: the model to price, or '*' for every model without a price")
				}
				if err := store.ValidModelName(model); err != nil {
					return nil, "", err
				}
				p, err := priceAmount("prompt", prompt)
				if err != nil {
					return nil, "", err
				}
				c, err := priceAmount("completion", completion)
				if err != nil {
					return nil, "", err
				}
				if err := st.SetModelPrice(ctx, store.ModelPrice{Model: model, PromptPerMTok: p, CompletionPerMTok: c}); err != nil {
					return nil, "", err
				}
				out, text := pricesTable([]store.ModelPrice{{Model: model, PromptPerMTok: p, CompletionPerMTok: c}})
				return out[0], text, nil
			}),
		}, {
			Name:  "ls",
			Short: "list model prices in dollars per million tokens",
			Flags: ls.flags,
			Run: ls.run(func(ctx context.Context, st *store.Store) (any, string, error) {
				ps, err := st.ModelPrices(ctx)
				if err != nil {
					return nil, "", err
				}
				out, text := pricesTable(ps)
				return out, text, nil
			}),
		}},
	}
}

func thresholdCommand() *Command {
	var (
		l      ledgerCommand
		amount string
	)
	return &Command{
		Name:  "threshold",
		Short: "flush thresholds: the unbilled balance at which it is sent to Stripe",
		Sub: []*Command{{
			Name:  "set",
			Short: "set the unbilled balance at which an account is flushed to Stripe",
			Flags: func(fs *flag.FlagSet) {
				l.flags(fs)
				fs.StringVar(&amount, "amount", "", `dollars, e.g. "10.00" (at least one cent)`)
			},
			Run: l.run(func(ctx context.Context, st *store.Store, _ *Env) (any, string, error) {
				if amount == "" {
					return nil, "", errors.New(`--amount is required: dollars, e.g. --amount 10.00`)
				}
				amt, err := money.Parse(amount)
				if err != nil {
					return nil, "", fmt.Errorf("--amount: %w", err)
				}
				a, err := st.SetFlushThreshold(ctx, l.account, amt)
				if err != nil {
					return nil, "", err
				}
				text := describe(a)
				if a.FlushThreshold >= a.CreditCeiling {
					text += fmt.Sprintf("note      the threshold is not under the credit ceiling (%s): the account is suspended before its balance is flushed\n", a.CreditCeiling.Dollars())
				}
				return toJSON(a), text, nil
			}),
		}},
	}
}
