package api

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/superinstance/mesh/internal/money"
	"github.com/superinstance/mesh/internal/store"
)

// The dashboard's charts are inline SVG drawn here, on the server: no
// script and no library, and they scale to a phone's width.

// palette colours a chart's series in order; the rest share the last.
var palette = []string{"#3b5bdb", "#2b8a3e", "#e8590c", "#ae3ec9", "#1098ad", "#f59f00", "#868e96"}

// barChart is a stacked bar chart: one bar per period, one segment per series.
type barChart struct {
	// Label names the chart for screen readers; default "usage per day".
	Label  string
	W, H   int
	Base   int // the bars' baseline
	Bars   []bar
	Legend []legendItem
	Axis   []axisLabel
	Max    string // the highest bar's total, labelled at the top
	Empty  bool
}

type bar struct {
	X, Y, W, H float64
	Color      string
	Title      string
}

type legendItem struct{ Color, Label string }

type axisLabel struct {
	X    float64
	Text string
}

// stackedUsage charts what was charged per day over days days ending
// today, a segment per key (model or project); the largest keys get their
// own colour, the rest are "other".
func stackedUsage(buckets []store.UsageBucket, days int, today time.Time, key func(store.UsageBucket) string) barChart {
	const w, h, top, bottom = 600, 180, 14, 22
	c := barChart{W: w, H: h, Base: h - bottom}
	start := today.AddDate(0, 0, 1-days)
	in := buckets[:0:0]
	for _, b := range buckets {
		if !b.Start.Before(start) && b.Start.Before(today.AddDate(0, 0, 1)) {
			in = append(in, b)
		}
	}
	buckets = in
	totals := map[string]money.Micros{}
	for _, b := range buckets {
		totals[key(b)] += b.Charged
	}
	keys := make([]string, 0, len(totals))
	for k := range totals {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b string) int {
		if c := cmp.Compare(totals[b], totals[a]); c != 0 {
			return c
		}
		return strings.Compare(a, b)
	})
	colour := map[string]string{}
	for i, k := range keys {
		if i < len(palette)-1 {
			colour[k] = palette[i]
			c.Legend = append(c.Legend, legendItem{palette[i], k + " " + totals[k].Dollars()})
		} else {
			colour[k] = palette[len(palette)-1]
		}
	}
	if len(keys) >= len(palette) {
		var rest money.Micros
		for _, k := range keys[len(palette)-1:] {
			rest += totals[k]
		}
		c.Legend = append(c.Legend, legendItem{palette[len(palette)-1], fmt.Sprintf("%d others %s", len(keys)-len(palette)+1, rest.Dollars())})
	}
	perDay := make([]map[string]money.Micros, days)
	dayTotal := make([]money.Micros, days)
	var peak money.Micros
	for _, b := range buckets {
		i := int(b.Start.Sub(start).Hours() / 24)
		if i < 0 || i >= days {
			continue
		}
		if perDay[i] == nil {
			perDay[i] = map[string]money.Micros{}
		}
		perDay[i][key(b)] += b.Charged
		dayTotal[i] += b.Charged
		peak = max(peak, dayTotal[i])
	}
	c.Empty = peak == 0
	c.Max = peak.Dollars()
	slot := float64(w) / float64(days)
	for i := range days {
		x := float64(i) * slot
		if i%2 == 0 || days <= 7 {
			c.Axis = append(c.Axis, axisLabel{X: x + slot/2, Text: start.AddDate(0, 0, i).Format("2 Jan")})
		}
		y := float64(h - bottom)
		for _, k := range keys {
			v := perDay[i][k]
			if v <= 0 {
				continue
			}
			bh := float64(v) / float64(peak) * float64(h-top-bottom)
			y -= bh
			c.Bars = append(c.Bars, bar{X: x + slot*0.15, Y: y, W: slot * 0.7, H: bh, Color: colour[k],
				Title: fmt.Sprintf("%s · %s: %s", start.AddDate(0, 0, i).Format("2 Jan"), k, v.Dollars())})
		}
	}
	return c
}

// lineChart draws series over the last hour on a 0..1 (load) scale.
type lineChart struct {
	W, H  int
	Lines []line
	Empty bool
}

type line struct {
	Color, Label, Points string
}

func vitalsChart(ps []store.VitalsPoint, now time.Time) lineChart {
	const w, h = 300, 80
	c := lineChart{W: w, H: h, Empty: len(ps) == 0}
	from := now.Add(-time.Hour)
	series := []struct {
		label, color string
		v            func(store.VitalsPoint) float64
	}{
		{"GPU load", palette[0], func(p store.VitalsPoint) float64 { return p.GPULoad }},
		{"CPU load", palette[1], func(p store.VitalsPoint) float64 { return p.CPULoad }},
		{"GPU °C / 100", palette[2], func(p store.VitalsPoint) float64 { return p.GPUTempC / 100 }},
	}
	for _, s := range series {
		var pts []string
		for _, p := range ps {
			x := p.At.Sub(from).Seconds() / time.Hour.Seconds() * w
			y := h - min(max(s.v(p), 0), 1)*(h-4) - 2
			pts = append(pts, fmt.Sprintf("%.1f,%.1f", min(max(x, 0), w), y))
		}
		c.Lines = append(c.Lines, line{Color: s.color, Label: s.label, Points: strings.Join(pts, " ")})
	}
	return c
}

// funnelStep is one step of a funnel as drawn: its count, its share of the
// first step (the bar's width) and its rate from the step before ("-" when
// that step counted none).
type funnelStep struct {
	Label string
	N     int64
	Width float64
	Rate  string
}

func funnelSteps(labels []string, counts []int64) []funnelStep {
	out := make([]funnelStep, len(counts))
	for i, n := range counts {
		out[i] = funnelStep{Label: labels[i], N: n}
		if counts[0] > 0 {
			out[i].Width = 100 * float64(n) / float64(counts[0])
		}
		if i > 0 {
			out[i].Rate = RateText(n, counts[i-1])
		}
	}
	return out
}

// RateText is n over d as a percentage, or "-" when d is zero.
func RateText(n, d int64) string {
	r := store.Ratio(n, d)
	if r == nil {
		return "-"
	}
	return fmt.Sprintf("%.0f%%", 100**r)
}

// dashView is what the dashboard template renders.
type dashView struct {
	Title string
	D     Dashboard
	Now   time.Time
	// Suspended explains a suspension in one sentence, or is empty.
	Suspended       string
	Headroom        money.Micros
	UsageByModel    barChart
	UsageByProject  barChart
	UsageTotal      money.Micros
	Hubs            []hubView
	InviteFunnel    []funnelStep
	HandoverFunnel  []funnelStep
	RunningProjects int
	// EvalAccuracy and EvalCost chart the latest evaluation (D.Evals[0]).
	EvalAccuracy, EvalCost barChart
}

type hubView struct {
	HubInfo
	Chart lineChart
}

func newDashView(d Dashboard, now time.Time) dashView {
	v := dashView{Title: "Dashboard · " + d.Account, D: d, Now: now}
	b := d.Balance
	v.Headroom = money.Micros(max(b.CreditCeiling-b.Unbilled, 0))
	switch b.SuspendedReason {
	case "credit_ceiling":
		v.Suspended = "Cloud runs are suspended: the unbilled balance reached the credit ceiling. They resume when a flush to Stripe goes through or the ceiling is raised (si credit / the operator)."
	case "payment_failed":
		v.Suspended = "Cloud runs are suspended: an invoice payment failed. They resume when Stripe reports the invoice paid; update the payment method with your billing contact."
	default:
		if b.Status == "suspended" {
			v.Suspended = "Cloud runs are suspended; ask the operator why."
		}
	}
	today := now.UTC().Truncate(24 * time.Hour)
	v.UsageByModel = stackedUsage(d.Usage, d.UsageDays, today, func(u store.UsageBucket) string { return u.Model })
	v.UsageByProject = stackedUsage(d.Usage, d.UsageDays, today, func(u store.UsageBucket) string { return u.Project })
	for _, u := range d.Usage {
		v.UsageTotal += u.Charged
	}
	for _, h := range d.Hubs {
		v.Hubs = append(v.Hubs, hubView{HubInfo: h, Chart: vitalsChart(h.Vitals, now)})
	}
	f := d.Funnel
	v.InviteFunnel = funnelSteps([]string{"sent", "opened", "accepted", "guest's first run"},
		[]int64{f.Invites.Sent, f.Invites.Opened, f.Invites.Accepted, f.Invites.FirstRun})
	v.HandoverFunnel = funnelSteps([]string{"started", "opened", "accepted", "first invoice paid"},
		[]int64{f.Handovers.Started, f.Handovers.Opened, f.Handovers.Accepted, f.Handovers.FirstPaid})
	if len(d.Evals) > 0 {
		v.EvalAccuracy, v.EvalCost = evalCharts(d.Evals[0])
	}
	for _, p := range d.Projects {
		if len(p.Running) > 0 {
			v.RunningProjects++
		}
	}
	return v
}

// ago says how long before now t was, roughly.
func ago(t time.Time) string {
	d := time.Since(t)
	switch {
	case d < time.Minute:
		return "just now"
	case d < time.Hour:
		return fmt.Sprintf("%d min ago", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%d h ago", int(d.Hours()))
	}
	return fmt.Sprintf("%d days ago", int(d.Hours()/24))
}

// byteSize says a size in bytes the way people read it: "4.0 MiB".
func byteSize(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit && exp < 4; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTP"[exp])
}
