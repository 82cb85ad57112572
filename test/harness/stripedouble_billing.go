package harness

import (
	"fmt"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"
)

// What `si stripe setup` and signup make at the double: products, prices
// (a recurring metered price sums a meter's events), webhook endpoints and
// subscriptions; and the upcoming invoice that bills those events.

type doubleBilling struct {
	products      map[string]map[string]any
	prices        map[string]*doublePrice
	priceOrder    []string
	webhooks      map[string]*doubleWebhook
	webhookOrder  []string
	subscriptions []*DoubleSubscription
	checkouts     []DoubleCheckout
}

// DoubleCheckout is one Checkout Session the double made.
type DoubleCheckout struct {
	ID, Mode, Customer, Currency, SuccessURL, CancelURL, URL string
	Expires                                                  time.Time
}

type doublePrice struct {
	ID, Product, Currency, LookupKey string
	UnitAmount                       int64
	Interval, UsageType, Meter       string
	Active                           bool
	Created                          int64
}

type doubleWebhook struct {
	ID, URL, Secret, Description string
	Events                       []string
	Disabled                     bool
}

// DoubleSubscription is one subscription the double holds.
type DoubleSubscription struct {
	ID, Customer string
	// Schedule is the subscription schedule that made it, if one did.
	Schedule string
	Prices   []string // one item per price
	Metadata map[string]string
	Start    time.Time // the current period's start, by the double's clock (whole seconds)
}

func (d *StripeDouble) addBillingRoutes() {
	d.bill = &doubleBilling{products: map[string]map[string]any{}, prices: map[string]*doublePrice{}, webhooks: map[string]*doubleWebhook{}}
	d.Handle("GET /v1/billing/meters/{id}", d.getMeter)
	d.Handle("GET /v1/products/{id}", d.getProduct)
	d.Handle("POST /v1/products", d.createProduct)
	d.Handle("GET /v1/prices/{id}", d.getPrice)
	d.Handle("GET /v1/prices", d.listPrices)
	d.Handle("POST /v1/prices", d.createPrice)
	d.Handle("GET /v1/webhook_endpoints/{id}", d.getWebhook)
	d.Handle("GET /v1/webhook_endpoints", d.listWebhooks)
	d.Handle("POST /v1/webhook_endpoints", d.createWebhook)
	d.Handle("POST /v1/webhook_endpoints/{id}", d.updateWebhook)
	d.Handle("POST /v1/subscriptions", d.createSubscription)
	d.Handle("GET /v1/invoices/upcoming", d.upcomingInvoice)
	d.Handle("POST /v1/checkout/sessions", d.createCheckout)
	d.Handle("POST /v1/subscription_schedules", d.createSchedule)
}

// Checkouts returns the Checkout Sessions made for customer (all when
// empty), in order.
func (d *StripeDouble) Checkouts(customer string) []DoubleCheckout {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []DoubleCheckout
	for _, c := range d.bill.checkouts {
		if customer == "" || c.Customer == customer {
			out = append(out, c)
		}
	}
	return out
}

// createCheckout makes a setup-mode Checkout Session: a page for the
// customer to save a payment method, open for 24 hours.
func (d *StripeDouble) createCheckout(r *doubleRequest) (int, any) {
	f := r.Form
	c := DoubleCheckout{Mode: f.Get("mode"), Customer: f.Get("customer"), Currency: f.Get("currency"),
		SuccessURL: f.Get("success_url"), CancelURL: f.Get("cancel_url"), Expires: r.Now.Add(24 * time.Hour)}
	if c.Mode != "setup" {
		return 400, stripeErrorParam("invalid_request_error", "", "The double makes setup-mode sessions only.", "mode")
	}
	if _, ok := d.customers[c.Customer]; !ok {
		return 400, stripeErrorParam("invalid_request_error", "resource_missing", "No such customer: "+strconv.Quote(c.Customer), "customer")
	}
	if c.Currency == "" && indexed(f, "payment_method_types") == nil {
		return 400, stripeErrorParam("invalid_request_error", "parameter_missing", "currency is required in setup mode unless payment_method_types is set.", "currency")
	}
	for _, u := range []struct{ name, v string }{{"success_url", c.SuccessURL}, {"cancel_url", c.CancelURL}} {
		if pu, err := url.Parse(u.v); u.v != "" && (err != nil || (pu.Scheme != "https" && pu.Scheme != "http") || pu.Host == "") {
			return 400, stripeErrorParam("invalid_request_error", "url_invalid", "Not a valid URL", u.name)
		}
	}
	if c.SuccessURL == "" {
		return 400, stripeErrorParam("invalid_request_error", "parameter_missing", "Missing required param: success_url.", "success_url")
	}
	d.seq++
	c.ID = fmt.Sprintf("cs_double%04d", d.seq)
	c.URL = "https://checkout.stripe.com/c/pay/" + c.ID
	d.bill.checkouts = append(d.bill.checkouts, c)
	return 200, map[string]any{"id": c.ID, "object": "checkout.session", "mode": c.Mode, "customer": c.Customer, "currency": c.Currency,
		"success_url": c.SuccessURL, "cancel_url": c.CancelURL, "url": c.URL, "status": "open", "expires_at": c.Expires.Unix()}
}

// Subscriptions returns copies of the customer's subscriptions (all when
// empty), in the order made.
func (d *StripeDouble) Subscriptions(customer string) []DoubleSubscription {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []DoubleSubscription
	for _, s := range d.bill.subscriptions {
		if customer == "" || s.Customer == customer {
			c := *s
			c.Prices = append([]string(nil), s.Prices...)
			out = append(out, c)
		}
	}
	return out
}

// Prices lists the double's price ids, in the order made.
func (d *StripeDouble) Prices() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]string(nil), d.bill.priceOrder...)
}

// WebhookEndpoints lists the double's webhook endpoint ids, in the order made.
func (d *StripeDouble) WebhookEndpoints() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]string(nil), d.bill.webhookOrder...)
}

func noSuch(what, param, id string) (int, any) {
	return 404, stripeErrorParam("invalid_request_error", "resource_missing", "No such "+what+": "+strconv.Quote(id), param)
}

// indexed reads a form list (name[0]=a&name[1]=b, or name[]=a) in index order.
func indexed(f url.Values, name string) []string {
	type kv struct {
		i int
		v string
	}
	var got []kv
	for k, vs := range f {
		if k == name+"[]" {
			for _, v := range vs {
				got = append(got, kv{len(got), v})
			}
			continue
		}
		rest, ok := strings.CutPrefix(k, name+"[")
		if !ok || !strings.HasSuffix(rest, "]") {
			continue
		}
		i, err := strconv.Atoi(strings.TrimSuffix(rest, "]"))
		if err != nil || len(vs) == 0 {
			continue
		}
		got = append(got, kv{i, vs[0]})
	}
	sort.Slice(got, func(a, b int) bool { return got[a].i < got[b].i })
	out := make([]string, len(got))
	for i, g := range got {
		out[i] = g.v
	}
	return out
}

func (d *StripeDouble) getMeter(r *doubleRequest) (int, any) {
	if r.PathValue("id") != DoubleMeterID {
		return noSuch("billing meter", "id", r.PathValue("id"))
	}
	return 200, d.meter()
}

func (d *StripeDouble) getProduct(r *doubleRequest) (int, any) {
	p, ok := d.bill.products[r.PathValue("id")]
	if !ok {
		return noSuch("product", "id", r.PathValue("id"))
	}
	return 200, p
}

func (d *StripeDouble) createProduct(r *doubleRequest) (int, any) {
	name := r.Form.Get("name")
	if name == "" {
		return 400, stripeErrorParam("invalid_request_error", "parameter_missing", "Missing required param: name.", "name")
	}
	id := r.Form.Get("id")
	if id == "" {
		d.seq++
		id = fmt.Sprintf("prod_double%04d", d.seq)
	}
	if _, ok := d.bill.products[id]; ok {
		return 400, stripeErrorParam("invalid_request_error", "resource_already_exists", "Product already exists.", "id")
	}
	p := map[string]any{"id": id, "object": "product", "name": name, "active": true, "created": r.Now.Unix()}
	d.bill.products[id] = p
	return 200, p
}

func (p *doublePrice) json() map[string]any {
	return map[string]any{"id": p.ID, "object": "price", "active": p.Active, "currency": p.Currency, "product": p.Product,
		"unit_amount": p.UnitAmount, "lookup_key": p.LookupKey, "type": "recurring", "billing_scheme": "per_unit", "created": p.Created,
		"recurring": map[string]any{"interval": p.Interval, "interval_count": 1, "usage_type": p.UsageType, "meter": p.Meter}}
}

func (d *StripeDouble) getPrice(r *doubleRequest) (int, any) {
	p, ok := d.bill.prices[r.PathValue("id")]
	if !ok {
		return noSuch("price", "id", r.PathValue("id"))
	}
	return 200, p.json()
}

func (d *StripeDouble) listPrices(r *doubleRequest) (int, any) {
	keys := indexed(r.Form, "lookup_keys")
	active := r.Form.Get("active")
	data := []any{}
	for _, id := range d.bill.priceOrder {
		p := d.bill.prices[id]
		if len(keys) > 0 && (p.LookupKey == "" || !contains(keys, p.LookupKey)) {
			continue
		}
		if active != "" && strconv.FormatBool(p.Active) != active {
			continue
		}
		data = append(data, p.json())
	}
	return 200, stripeList(r.URL.Path, data)
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

func (d *StripeDouble) createPrice(r *doubleRequest) (int, any) {
	f := r.Form
	if f.Get("currency") != "usd" {
		return 400, stripeErrorParam("invalid_request_error", "", "The double prices in usd only.", "currency")
	}
	if _, ok := d.bill.products[f.Get("product")]; !ok {
		return 400, stripeErrorParam("invalid_request_error", "resource_missing", "No such product: "+strconv.Quote(f.Get("product")), "product")
	}
	unit, err := strconv.ParseInt(f.Get("unit_amount"), 10, 64)
	if err != nil || unit < 0 {
		return 400, stripeErrorParam("invalid_request_error", "", "unit_amount must be a non-negative whole number of cents", "unit_amount")
	}
	p := &doublePrice{Product: f.Get("product"), Currency: "usd", UnitAmount: unit, LookupKey: f.Get("lookup_key"), Active: true,
		Interval: f.Get("recurring[interval]"), UsageType: f.Get("recurring[usage_type]"), Meter: f.Get("recurring[meter]"), Created: r.Now.Unix()}
	switch p.Interval {
	case "day", "week", "month", "year":
	default:
		return 400, stripeErrorParam("invalid_request_error", "", "recurring[interval] must be day, week, month or year", "recurring[interval]")
	}
	if p.UsageType == "" {
		p.UsageType = "licensed"
	}
	if p.UsageType == "metered" && p.Meter != DoubleMeterID {
		return 400, stripeErrorParam("invalid_request_error", "resource_missing", "No such billing meter: "+strconv.Quote(p.Meter), "recurring[meter]")
	}
	if p.LookupKey != "" {
		for _, o := range d.bill.prices {
			if o.LookupKey != p.LookupKey {
				continue
			}
			if f.Get("transfer_lookup_key") != "true" {
				return 400, stripeErrorParam("invalid_request_error", "", "A price ("+o.ID+") already uses that lookup key.", "lookup_key")
			}
			o.LookupKey = ""
		}
	}
	d.seq++
	p.ID = fmt.Sprintf("price_double%04d", d.seq)
	d.bill.prices[p.ID] = p
	d.bill.priceOrder = append(d.bill.priceOrder, p.ID)
	return 200, p.json()
}

func (w *doubleWebhook) json(withSecret bool) map[string]any {
	status := "enabled"
	if w.Disabled {
		status = "disabled"
	}
	m := map[string]any{"id": w.ID, "object": "webhook_endpoint", "url": w.URL, "enabled_events": w.Events, "status": status, "description": w.Description}
	if withSecret {
		m["secret"] = w.Secret // Stripe shows the secret only when it makes the endpoint
	}
	return m
}

func (d *StripeDouble) getWebhook(r *doubleRequest) (int, any) {
	w, ok := d.bill.webhooks[r.PathValue("id")]
	if !ok {
		return noSuch("webhook endpoint", "id", r.PathValue("id"))
	}
	return 200, w.json(false)
}

func (d *StripeDouble) listWebhooks(r *doubleRequest) (int, any) {
	data := []any{}
	for _, id := range d.bill.webhookOrder {
		data = append(data, d.bill.webhooks[id].json(false))
	}
	return 200, stripeList(r.URL.Path, data)
}

func webhookForm(w *doubleWebhook, f url.Values) (int, any) {
	if v := f.Get("url"); v != "" || w.URL == "" {
		u, err := url.Parse(v)
		if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			return 400, stripeErrorParam("invalid_request_error", "url_invalid", "Invalid URL: "+strconv.Quote(v), "url")
		}
		w.URL = v
	}
	if ev := indexed(f, "enabled_events"); len(ev) > 0 {
		w.Events = ev
	} else if w.Events == nil {
		return 400, stripeErrorParam("invalid_request_error", "parameter_missing", "Missing required param: enabled_events.", "enabled_events")
	}
	if v := f.Get("disabled"); v != "" {
		w.Disabled = v == "true"
	}
	if v := f.Get("description"); v != "" {
		w.Description = v
	}
	return 0, nil
}

func (d *StripeDouble) createWebhook(r *doubleRequest) (int, any) {
	w := &doubleWebhook{}
	if status, e := webhookForm(w, r.Form); status != 0 {
		return status, e
	}
	d.seq++
	w.ID = fmt.Sprintf("we_double%04d", d.seq)
	w.Secret = fmt.Sprintf("whsec_double%04d", d.seq)
	d.bill.webhooks[w.ID] = w
	d.bill.webhookOrder = append(d.bill.webhookOrder, w.ID)
	return 200, w.json(true)
}

func (d *StripeDouble) updateWebhook(r *doubleRequest) (int, any) {
	w, ok := d.bill.webhooks[r.PathValue("id")]
	if !ok {
		return noSuch("webhook endpoint", "id", r.PathValue("id"))
	}
	c := *w
	if status, e := webhookForm(&c, r.Form); status != 0 {
		return status, e
	}
	*w = c
	return 200, w.json(false)
}

func (d *StripeDouble) subscriptionJSON(s *DoubleSubscription) map[string]any {
	items := []any{}
	for i, pid := range s.Prices {
		items = append(items, map[string]any{"id": fmt.Sprintf("si_%s_%d", s.ID, i), "object": "subscription_item", "price": d.bill.prices[pid].json(), "subscription": s.ID})
	}
	return map[string]any{"id": s.ID, "object": "subscription", "customer": s.Customer, "status": "active", "metadata": s.Metadata,
		"start_date": s.Start.Unix(), "current_period_start": s.Start.Unix(), "current_period_end": s.periodEnd().Unix(),
		"items": map[string]any{"object": "list", "has_more": false, "url": "/v1/subscription_items?subscription=" + s.ID, "data": items}}
}

// periodEnd is a month after the period's start, as for the metered price.
func (s *DoubleSubscription) periodEnd() time.Time { return s.Start.AddDate(0, 1, 0) }

func (d *StripeDouble) createSubscription(r *doubleRequest) (int, any) {
	f := r.Form
	customer := f.Get("customer")
	if _, ok := d.customers[customer]; !ok {
		return 400, stripeErrorParam("invalid_request_error", "resource_missing", "No such customer: "+strconv.Quote(customer), "customer")
	}
	var prices []string
	for i := 0; ; i++ {
		pid := f.Get(fmt.Sprintf("items[%d][price]", i))
		if pid == "" {
			break
		}
		p, ok := d.bill.prices[pid]
		if !ok || !p.Active {
			return 400, stripeErrorParam("invalid_request_error", "resource_missing", "No such price: "+strconv.Quote(pid), fmt.Sprintf("items[%d][price]", i))
		}
		prices = append(prices, pid)
	}
	if len(prices) == 0 {
		return 400, stripeErrorParam("invalid_request_error", "parameter_missing", "Missing required param: items.", "items")
	}
	meta := map[string]string{}
	for k, vs := range f {
		if key, ok := strings.CutPrefix(k, "metadata["); ok && strings.HasSuffix(key, "]") && len(vs) > 0 {
			meta[strings.TrimSuffix(key, "]")] = vs[0]
		}
	}
	d.seq++
	s := &DoubleSubscription{ID: fmt.Sprintf("sub_double%04d", d.seq), Customer: customer, Prices: prices, Metadata: meta, Start: r.Now.Truncate(time.Second)}
	d.bill.subscriptions = append(d.bill.subscriptions, s)
	return 200, d.subscriptionJSON(s)
}

// upcomingInvoice bills, for each of the customer's subscriptions, each
// metered price's meter: the customer's live meter events timestamped in
// the current period, times the unit amount. As at Stripe, two
// subscriptions to the same metered price bill the same events twice.
func (d *StripeDouble) upcomingInvoice(r *doubleRequest) (int, any) {
	customer := r.Form.Get("customer")
	if customer == "" {
		return 400, stripeErrorParam("invalid_request_error", "parameter_missing", "Missing required param: customer.", "customer")
	}
	if _, ok := d.customers[customer]; !ok {
		return 400, stripeErrorParam("invalid_request_error", "resource_missing", "No such customer: "+strconv.Quote(customer), "customer")
	}
	var subs []*DoubleSubscription
	for _, s := range d.bill.subscriptions {
		if s.Customer == customer {
			subs = append(subs, s)
		}
	}
	if len(subs) == 0 {
		return 404, stripeError("invalid_request_error", "invoice_upcoming_none", "No upcoming invoices for customer: "+customer)
	}
	lines := []any{}
	var total int64
	start, end := subs[0].Start, subs[0].periodEnd()
	for _, s := range subs {
		if s.Start.Before(start) {
			start = s.Start
		}
		if s.periodEnd().After(end) {
			end = s.periodEnd()
		}
		for _, pid := range s.Prices {
			p := d.bill.prices[pid]
			var qty int64
			if p.UsageType == "metered" {
				for _, e := range d.events {
					if e.Customer == customer && !e.Cancelled && !e.Timestamp.Before(s.Start) && e.Timestamp.Before(s.periodEnd()) {
						qty += e.Value
					}
				}
			} else {
				qty = 1
			}
			amount := qty * p.UnitAmount
			total += amount
			lines = append(lines, map[string]any{"object": "line_item", "amount": amount, "currency": "usd", "quantity": qty,
				"subscription": s.ID, "price": p.json(), "type": "subscription",
				"period": map[string]int64{"start": s.Start.Unix(), "end": s.periodEnd().Unix()}})
		}
	}
	inv := map[string]any{"object": "invoice", "customer": customer, "currency": "usd", "amount_due": total, "subtotal": total, "total": total,
		"period_start": start.Unix(), "period_end": end.Unix(), "status": "draft",
		"lines": map[string]any{"object": "list", "has_more": false, "url": "/v1/invoices/upcoming/lines?customer=" + customer, "data": lines}}
	if len(subs) == 1 {
		inv["subscription"] = subs[0].ID
	}
	return 200, inv
}

// createSchedule makes a subscription schedule that starts now: a
// subscription to its first phase's price (made from the phase's
// price_data, recurring yearly, licensed).
func (d *StripeDouble) createSchedule(r *doubleRequest) (int, any) {
	f := r.Form
	customer := f.Get("customer")
	if _, ok := d.customers[customer]; !ok {
		return 400, stripeErrorParam("invalid_request_error", "resource_missing", "No such customer: "+strconv.Quote(customer), "customer")
	}
	if f.Get("start_date") != "now" {
		return 400, stripeErrorParam("invalid_request_error", "", "The double makes schedules that start now.", "start_date")
	}
	item := "phases[0][items][0][price_data]"
	product, amount := f.Get(item+"[product]"), f.Get(item+"[unit_amount]")
	cents, err := strconv.ParseInt(amount, 10, 64)
	if _, ok := d.bill.products[product]; !ok || err != nil || cents <= 0 || f.Get(item+"[recurring][interval]") == "" {
		return 400, stripeErrorParam("invalid_request_error", "", "The first phase needs price_data with a known product, a unit_amount and an interval.", item)
	}
	meta := map[string]string{}
	for k, vs := range f {
		if key, ok := strings.CutPrefix(k, "metadata["); ok && strings.HasSuffix(key, "]") && len(vs) > 0 {
			meta[strings.TrimSuffix(key, "]")] = vs[0]
		}
	}
	d.seq++
	price := &doublePrice{ID: fmt.Sprintf("price_double%04d", d.seq), Product: product, Currency: f.Get(item + "[currency]"),
		UnitAmount: cents, Interval: f.Get(item + "[recurring][interval]"), UsageType: "licensed", Active: true, Created: r.Now.Unix()}
	d.bill.prices[price.ID] = price
	d.bill.priceOrder = append(d.bill.priceOrder, price.ID)
	d.seq++
	sched := fmt.Sprintf("sub_sched_double%04d", d.seq)
	sub := &DoubleSubscription{ID: fmt.Sprintf("sub_double%04d", d.seq), Customer: customer, Schedule: sched, Prices: []string{price.ID},
		Metadata: meta, Start: r.Now.Truncate(time.Second)}
	d.bill.subscriptions = append(d.bill.subscriptions, sub)
	return 200, map[string]any{"id": sched, "object": "subscription_schedule", "customer": customer, "status": "active",
		"subscription": sub.ID, "metadata": meta, "end_behavior": f.Get("end_behavior")}
}

// CompletedCheckoutEvent is the checkout.session.completed event Stripe
// sends when the customer of session id finishes it (the session must be
// the double's), as the JSON a webhook receives, with event id eventID.
func (d *StripeDouble) CompletedCheckoutEvent(eventID, session string) []byte {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, c := range d.bill.checkouts {
		if c.ID == session || c.URL == session {
			return mustJSON(map[string]any{"id": eventID, "object": "event", "type": "checkout.session.completed",
				"created": time.Now().Add(d.offset).Unix(), "api_version": "2023-10-16",
				"data": map[string]any{"object": map[string]any{"id": c.ID, "object": "checkout.session", "mode": c.Mode,
					"status": "complete", "customer": c.Customer, "setup_intent": "seti_" + strings.TrimPrefix(c.ID, "cs_")}}})
		}
	}
	return nil
}
