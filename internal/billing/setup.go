package billing

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/stripe/stripe-go/v76"

	"github.com/superinstance/mesh/internal/store"
)

// WebhookPath is where the mesh serves Stripe's webhook.
const WebhookPath = "/v1/stripe/webhook"

// Payload keys of a meter event (SendMeterEvent): the meter maps the first to
// the customer and sums the second.
const (
	MeterCustomerKey = "stripe_customer_id"
	MeterValueKey    = "value"
)

// ErrNoSetup: `si stripe setup` has not recorded a metered price yet.
var ErrNoSetup = errors.New("Stripe is not set up for usage billing: run si stripe setup")

// SetupOptions says what EnsureSetup makes.
type SetupOptions struct {
	// PublicURL is the mesh's base URL as Stripe reaches it; the webhook
	// endpoint is PublicURL + WebhookPath.
	PublicURL string
	// Have is the setup recorded before (zero: none).
	Have store.StripeSetup
	// WebhookSecret is the signing secret of an endpoint made before whose
	// secret this database does not hold; empty: none.
	WebhookSecret string
}

// SetupResult is the setup and what this run changed at Stripe.
type SetupResult struct {
	store.StripeSetup
	Created []string `json:"created"`
	Updated []string `json:"updated"`
}

// WebhookURL is the webhook endpoint's URL for a public base URL.
func WebhookURL(publicURL string) (string, error) {
	u, err := url.Parse(strings.TrimSpace(publicURL))
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
		return "", fmt.Errorf("--public-url %q is not an http(s) base URL such as https://mesh.example.com", publicURL)
	}
	return strings.TrimRight(u.String(), "/") + WebhookPath, nil
}

// UsagePriceLookupKey names the metered price of a meter event.
func UsagePriceLookupKey(meterEvent string) string { return "si_usage_" + meterEvent }

func notFound(err error) bool {
	var se *stripe.Error
	return errors.As(err, &se) && se.HTTPStatusCode == http.StatusNotFound
}

// EnsureSetup finds or creates, idempotently, what usage billing needs at
// Stripe: the billing meter of the meter events flushes send (sum of
// "value", customer by "stripe_customer_id"), a metered price on it (one
// cent a unit, monthly) of the SuperInstance Cloud product, and the webhook
// endpoint for the events the mesh handles. What o.Have records and still
// exists is used as it is; otherwise Stripe is searched before anything is
// created, and each create carries an idempotency key from our own names.
func (s *Stripe) EnsureSetup(ctx context.Context, o SetupOptions) (SetupResult, error) {
	hook, err := WebhookURL(o.PublicURL)
	if err != nil {
		return SetupResult{}, err
	}
	r := SetupResult{StripeSetup: store.StripeSetup{MeterEvent: s.meterEvent, ProductID: DefaultPlan.Product, WebhookURL: hook}}
	if r.MeterID, err = s.ensureMeter(ctx, o.Have, &r); err != nil {
		return r, fmt.Errorf("billing meter: %w", err)
	}
	if o.Have.ProductID != r.ProductID {
		if err := s.ensureProduct(ctx, r.ProductID); err != nil {
			return r, fmt.Errorf("product %s: %w", r.ProductID, err)
		}
	}
	if r.PriceID, err = s.ensurePrice(ctx, o.Have, &r); err != nil {
		return r, fmt.Errorf("metered price: %w", err)
	}
	if err := s.ensureWebhook(ctx, o, &r); err != nil {
		return r, fmt.Errorf("webhook endpoint: %w", err)
	}
	return r, nil
}

func (s *Stripe) ensureMeter(ctx context.Context, have store.StripeSetup, r *SetupResult) (string, error) {
	if have.MeterID != "" && have.MeterEvent == s.meterEvent {
		p := &stripe.BillingMeterParams{}
		p.Context = ctx
		m, err := s.api.BillingMeters.Get(have.MeterID, p)
		if err == nil && m.Status == stripe.BillingMeterStatusActive {
			return m.ID, nil
		}
		if err != nil && !notFound(err) {
			return "", classify(err)
		}
	}
	lp := &stripe.BillingMeterListParams{Status: stripe.String(string(stripe.BillingMeterStatusActive))}
	lp.Context = ctx
	it := s.api.BillingMeters.List(lp)
	for it.Next() {
		if m := it.BillingMeter(); m.EventName == s.meterEvent {
			return m.ID, nil
		}
	}
	if err := it.Err(); err != nil {
		return "", classify(err)
	}
	p := &stripe.BillingMeterParams{
		DisplayName:        stripe.String("SuperInstance usage (cents)"),
		EventName:          stripe.String(s.meterEvent),
		DefaultAggregation: &stripe.BillingMeterDefaultAggregationParams{Formula: stripe.String(string(stripe.BillingMeterDefaultAggregationFormulaSum))},
		CustomerMapping: &stripe.BillingMeterCustomerMappingParams{
			EventPayloadKey: stripe.String(MeterCustomerKey), Type: stripe.String(string(stripe.BillingMeterCustomerMappingTypeByID))},
		ValueSettings: &stripe.BillingMeterValueSettingsParams{EventPayloadKey: stripe.String(MeterValueKey)},
	}
	p.Context = ctx
	p.SetIdempotencyKey("si-setup-meter-" + s.meterEvent)
	m, err := s.api.BillingMeters.New(p)
	if err != nil {
		return "", classify(err)
	}
	r.Created = append(r.Created, "meter "+m.ID)
	return m.ID, nil
}

func (s *Stripe) ensurePrice(ctx context.Context, have store.StripeSetup, r *SetupResult) (string, error) {
	if have.PriceID != "" && have.MeterID == r.MeterID {
		p := &stripe.PriceParams{}
		p.Context = ctx
		pr, err := s.api.Prices.Get(have.PriceID, p)
		if err == nil && pr.Active {
			return pr.ID, nil
		}
		if err != nil && !notFound(err) {
			return "", classify(err)
		}
	}
	key := UsagePriceLookupKey(s.meterEvent)
	lp := &stripe.PriceListParams{LookupKeys: []*string{stripe.String(key)}, Active: stripe.Bool(true)}
	lp.Context = ctx
	it := s.api.Prices.List(lp)
	for it.Next() {
		if pr := it.Price(); pr.LookupKey == key && pr.Recurring != nil && pr.Recurring.Meter == r.MeterID {
			return pr.ID, nil
		}
	}
	if err := it.Err(); err != nil {
		return "", classify(err)
	}
	// The meter counts cents, so a unit is one cent.
	p := &stripe.PriceParams{
		Currency:   stripe.String(string(stripe.CurrencyUSD)),
		Product:    stripe.String(r.ProductID),
		UnitAmount: stripe.Int64(1),
		Nickname:   stripe.String("SuperInstance usage, per cent"),
		Recurring: &stripe.PriceRecurringParams{
			Interval:  stripe.String(string(stripe.PriceRecurringIntervalMonth)),
			UsageType: stripe.String(string(stripe.PriceRecurringUsageTypeMetered)),
			Meter:     stripe.String(r.MeterID),
		},
		LookupKey:         stripe.String(key),
		TransferLookupKey: stripe.Bool(true),
	}
	p.Context = ctx
	p.SetIdempotencyKey("si-setup-price-" + r.MeterID)
	pr, err := s.api.Prices.New(p)
	if err != nil {
		return "", classify(err)
	}
	r.Created = append(r.Created, "price "+pr.ID)
	return pr.ID, nil
}

func sameEvents(have []string) bool {
	a, b := slices.Clone(have), slices.Clone(WebhookEvents)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}

func (s *Stripe) ensureWebhook(ctx context.Context, o SetupOptions, r *SetupResult) error {
	var found *stripe.WebhookEndpoint
	if o.Have.WebhookEndpointID != "" {
		p := &stripe.WebhookEndpointParams{}
		p.Context = ctx
		we, err := s.api.WebhookEndpoints.Get(o.Have.WebhookEndpointID, p)
		switch {
		case err == nil:
			found = we
			r.WebhookSecret = o.Have.WebhookSecret
		case !notFound(err):
			return classify(err)
		}
	}
	if found == nil {
		lp := &stripe.WebhookEndpointListParams{}
		lp.Context = ctx
		it := s.api.WebhookEndpoints.List(lp)
		for it.Next() {
			if we := it.WebhookEndpoint(); we.URL == r.WebhookURL {
				found = we
				break
			}
		}
		if err := it.Err(); err != nil {
			return classify(err)
		}
		if found != nil && o.WebhookSecret == "" {
			return fmt.Errorf("endpoint %s for %s exists at Stripe but its signing secret is not in this database: "+
				"pass it with --webhook-secret (Stripe dashboard, Developers, Webhooks), or delete the endpoint and run si stripe setup again",
				found.ID, r.WebhookURL)
		}
	}
	if o.WebhookSecret != "" {
		r.WebhookSecret = o.WebhookSecret
	}
	events := make([]*string, len(WebhookEvents))
	for i, e := range WebhookEvents {
		events[i] = stripe.String(e)
	}
	if found != nil {
		r.WebhookEndpointID = found.ID
		if found.URL == r.WebhookURL && sameEvents(found.EnabledEvents) && found.Status != "disabled" {
			return nil
		}
		// A new --public-url or event list moves the endpoint: its secret stays.
		p := &stripe.WebhookEndpointParams{URL: stripe.String(r.WebhookURL), EnabledEvents: events, Disabled: stripe.Bool(false)}
		p.Context = ctx
		if _, err := s.api.WebhookEndpoints.Update(found.ID, p); err != nil {
			return classify(err)
		}
		r.Updated = append(r.Updated, "webhook endpoint "+found.ID)
		return nil
	}
	sum := sha256.Sum256([]byte(r.WebhookURL))
	p := &stripe.WebhookEndpointParams{URL: stripe.String(r.WebhookURL), EnabledEvents: events,
		Description: stripe.String("SuperInstance mesh: invoice payments suspend and reinstate accounts")}
	p.Context = ctx
	p.SetIdempotencyKey("si-setup-webhook-" + hex.EncodeToString(sum[:12]))
	we, err := s.api.WebhookEndpoints.New(p)
	if err != nil {
		return classify(err)
	}
	r.WebhookEndpointID = we.ID
	if we.Secret != "" {
		r.WebhookSecret = we.Secret
	}
	r.Created = append(r.Created, "webhook endpoint "+we.ID)
	return nil
}

// UsageSubscriptionKey is the idempotency key of an account's subscription
// to the metered price: the same for every retry of its signup.
func UsageSubscriptionKey(account string) string { return "si-usage-subscription-" + account }

// SubscribeUsage subscribes customer to the metered price, under an
// idempotency key from the account.
func (s *Stripe) SubscribeUsage(ctx context.Context, account, customer, price string) (string, error) {
	sub, _, err := s.subscribeUsage(ctx, account, customer, price)
	return sub, err
}

// subscribeUsage is SubscribeUsage that also returns when the
// subscription's current period started, by Stripe's clock.
func (s *Stripe) subscribeUsage(ctx context.Context, account, customer, price string) (string, time.Time, error) {
	p := &stripe.SubscriptionParams{
		Customer: stripe.String(customer),
		Items:    []*stripe.SubscriptionItemsParams{{Price: stripe.String(price)}},
	}
	p.AddMetadata("si_account", account)
	p.Context = ctx
	p.SetIdempotencyKey(UsageSubscriptionKey(account))
	sub, err := s.api.Subscriptions.New(p)
	if err != nil {
		return "", time.Time{}, classify(err)
	}
	start := sub.CurrentPeriodStart
	if sub.StartDate > start {
		start = sub.StartDate
	}
	return sub.ID, time.Unix(start, 0).UTC(), nil
}

// SubscribeAccount subscribes the account's Stripe customer to the metered
// price that `si stripe setup` recorded, once: a subscription already
// recorded is returned as it is. ErrNoSetup when there is no setup yet.
func (s *Stripe) SubscribeAccount(ctx context.Context, st *store.Store, account, customer string) (string, error) {
	if sub, err := st.UsageSubscription(ctx, account); err != nil || sub != "" {
		return sub, err
	}
	setup, err := st.StripeSetup(ctx)
	if errors.Is(err, store.ErrNotFound) {
		return "", ErrNoSetup
	}
	if err != nil {
		return "", err
	}
	if setup.MeterEvent != s.meterEvent {
		return "", fmt.Errorf("the metered price is on meter event %q but this server sends %q: run si stripe setup with --stripe-meter-event %s",
			setup.MeterEvent, s.meterEvent, s.meterEvent)
	}
	sub, start, err := s.subscribeUsage(ctx, account, customer, setup.PriceID)
	if err != nil {
		return "", err
	}
	// The start first: a flush reserved once the subscription is recorded
	// is never stamped before it.
	if start.Unix() > 0 {
		if err := st.SetUsageSubscriptionStart(ctx, account, start); err != nil {
			return "", err
		}
	}
	return sub, st.SetUsageSubscription(ctx, account, sub)
}

// Signup gives an account its Stripe customer (unless it has one) and its
// subscription to the metered price (when Stripe is set up), each once.
func (s *Stripe) Signup(ctx context.Context, st *store.Store, account, email string) (customer, subscription string, err error) {
	a, err := st.AccountByID(ctx, account)
	if err != nil {
		return "", "", err
	}
	customer = a.StripeCustomerID
	if customer == "" {
		if customer, err = s.EnsureCustomer(ctx, account, email); err != nil {
			return "", "", err
		}
		if err := st.SetStripeCustomer(ctx, account, customer); err != nil {
			return "", "", err
		}
	}
	subscription, err = s.SubscribeAccount(ctx, st, account, customer)
	return customer, subscription, err
}
