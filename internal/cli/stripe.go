package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"strings"

	"github.com/superinstance/mesh/internal/billing"
	"github.com/superinstance/mesh/internal/config"
	"github.com/superinstance/mesh/internal/store"
)

func stripeCommand() *Command {
	var (
		db            config.Database
		sc            config.Stripe
		publicURL     string
		webhookSecret string
		asJSON        bool
		existing      bool
	)
	return &Command{
		Name:  "stripe",
		Short: "set Stripe up for usage billing (operator)",
		Sub: []*Command{{
			Name:  "setup",
			Short: "create or find the billing meter, metered price and webhook endpoint; safe to run again",
			Long: `si stripe setup makes what Stripe needs to invoice the mesh's usage, once:
the billing meter that flushes report to (sum of "value", customer from
"stripe_customer_id"), a metered price on it (one cent a unit, monthly) and
the webhook endpoint at --public-url/v1/stripe/webhook for the invoice
events the mesh acts on. It records their ids and the webhook's signing
secret in the database: si server reads them from there, and each new
account is subscribed to the price. Running it again creates nothing; a new
--public-url moves the endpoint and keeps its secret.`,
			Flags: func(fs *flag.FlagSet) {
				db.Register(fs)
				sc.Register(fs)
				fs.StringVar(&publicURL, "public-url", "", "the mesh's base URL as Stripe reaches it, e.g. https://mesh.example.com (required)")
				fs.StringVar(&webhookSecret, "webhook-secret", "", "the signing secret of a webhook endpoint made before whose secret this database lost")
				fs.BoolVar(&existing, "subscribe-existing", true, "also subscribe the accounts that have a Stripe customer but no usage subscription yet")
				fs.BoolVar(&asJSON, "json", false, "print JSON")
			},
			Run: func(ctx context.Context, env *Env, args []string) error {
				if len(args) > 0 {
					return fmt.Errorf("unexpected argument %q", args[0])
				}
				if publicURL == "" {
					return errors.New("--public-url is required: the base URL Stripe sends webhooks to, e.g. --public-url https://mesh.example.com")
				}
				if _, err := billing.WebhookURL(publicURL); err != nil {
					return err
				}
				sc.DevDir = db.DevDir
				base, key, ok := sc.Resolve()
				if !ok {
					return errors.New("no Stripe to set up: pass --stripe-key (or SI_STRIPE_KEY), or start si dev for its stripe-mock")
				}
				st, err := db.Open(ctx)
				if err != nil {
					return err
				}
				defer st.Close()
				have, err := st.StripeSetup(ctx)
				if err != nil && !errors.Is(err, store.ErrNotFound) {
					return err
				}
				api := billing.NewStripe(base, key, sc.MeterEvent)
				r, err := api.EnsureSetup(ctx, billing.SetupOptions{
					PublicURL: publicURL, Have: have, WebhookSecret: webhookSecret})
				if err != nil {
					return err
				}
				if err := st.SaveStripeSetup(ctx, r.StripeSetup); err != nil {
					return err
				}
				// Accounts that signed up before the price existed.
				subscribed := []string{}
				if existing {
					accts, err := st.UnsubscribedCustomers(ctx)
					if err != nil {
						return err
					}
					for _, a := range accts {
						if _, err := api.SubscribeAccount(ctx, st, a[0], a[1]); err != nil {
							return fmt.Errorf("the setup is recorded, but subscribing account %s failed: %w (run si stripe setup again to carry on)", a[0], err)
						}
						subscribed = append(subscribed, a[0])
					}
				}
				if r.Created == nil {
					r.Created = []string{}
				}
				if r.Updated == nil {
					r.Updated = []string{}
				}
				if asJSON {
					return printJSON(env.Stdout, struct {
						billing.SetupResult
						Subscribed []string `json:"subscribed_accounts"`
					}{r, subscribed})
				}
				secret := r.WebhookSecret
				if secret == "" {
					secret = "(none: Stripe returned no signing secret, as stripe-mock does; pass --webhook-secret)"
				}
				changed := "nothing new"
				if len(r.Created)+len(r.Updated) > 0 {
					changed = strings.Join(append(append([]string{}, r.Created...), r.Updated...), ", ")
				}
				fmt.Fprintf(env.Stdout, "meter           %s (event %s: sum of %q per %q)\n", r.MeterID, r.MeterEvent, billing.MeterValueKey, billing.MeterCustomerKey)
				fmt.Fprintf(env.Stdout, "price           %s (1 cent a unit, monthly, product %s)\n", r.PriceID, r.ProductID)
				fmt.Fprintf(env.Stdout, "webhook         %s %s\n", r.WebhookEndpointID, r.WebhookURL)
				fmt.Fprintf(env.Stdout, "webhook secret  %s\n", secret)
				fmt.Fprintf(env.Stdout, "changed         %s\n", changed)
				if len(subscribed) > 0 {
					fmt.Fprintf(env.Stdout, "subscribed      %s\n", strings.Join(subscribed, ", "))
				}
				fmt.Fprintln(env.Stdout, "si server reads these from the database; new accounts are subscribed to the price.")
				return nil
			},
		}},
	}
}
