package server

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/superinstance/mesh/internal/store"
)

// conversion exports invite and handover conversion, read from PostgreSQL
// at each scrape: the funnel's steps as counters (each counted once, never
// lowered), the states as they are now, and the accept rates.
type conversion struct {
	store           *store.Store
	funnelInvites   *prometheus.Desc
	funnelHandovers *prometheus.Desc
	invites         *prometheus.Desc
	handovers       *prometheus.Desc
	pending         *prometheus.Desc
	rates           *prometheus.Desc
	up              *prometheus.Desc
}

func newConversion(st *store.Store) *conversion {
	return &conversion{
		store: st,
		funnelInvites: prometheus.NewDesc("si_funnel_invites_total",
			"Invites that reached each funnel step: sent, opened, accepted, first_run (the guest's first run). Never goes down.",
			[]string{"step"}, nil),
		funnelHandovers: prometheus.NewDesc("si_funnel_handovers_total",
			"Handovers that reached each funnel step: started, opened, accepted, first_paid (the new owner's first paid invoice). Never goes down.",
			[]string{"step"}, nil),
		invites: prometheus.NewDesc("si_invites_total", "Invites by outcome: sent, accepted, revoked, expired.",
			[]string{"outcome"}, nil),
		handovers: prometheus.NewDesc("si_handovers_total", "Handovers by outcome: started, accepted, declined, expired, cancelled, failed.",
			[]string{"outcome"}, nil),
		pending: prometheus.NewDesc("si_handovers_pending", "Handovers waiting for the recipient.", nil, nil),
		rates: prometheus.NewDesc("si_conversion_ratio",
			"Accepted over sent invites, and accepted over decided (accepted, declined, expired) handovers; absent while there are none.",
			[]string{"kind"}, nil),
		up: prometheus.NewDesc("si_conversion_up", "1 when the conversion figures could be read.", nil, nil),
	}
}

func (c *conversion) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.funnelInvites
	ch <- c.funnelHandovers
	ch <- c.invites
	ch <- c.handovers
	ch <- c.pending
	ch <- c.rates
	ch <- c.up
}

func (c *conversion) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	v, err := c.store.Conversion(ctx, "")
	var f store.Funnel
	if err == nil {
		f, _, err = c.store.Funnels(ctx, "", 0)
	}
	if err != nil {
		ch <- prometheus.MustNewConstMetric(c.up, prometheus.GaugeValue, 0)
		return
	}
	ch <- prometheus.MustNewConstMetric(c.up, prometheus.GaugeValue, 1)
	for outcome, n := range map[string]int64{"sent": v.InvitesSent, "accepted": v.InvitesAccepted, "revoked": v.InvitesRevoked, "expired": v.InvitesExpired} {
		ch <- prometheus.MustNewConstMetric(c.invites, prometheus.CounterValue, float64(n), outcome)
	}
	for outcome, n := range map[string]int64{"started": v.HandoversStarted, "accepted": v.HandoversAccepted, "declined": v.HandoversDeclined,
		"expired": v.HandoversExpired, "cancelled": v.HandoversCanceled, "failed": v.HandoversFailed} {
		ch <- prometheus.MustNewConstMetric(c.handovers, prometheus.CounterValue, float64(n), outcome)
	}
	ch <- prometheus.MustNewConstMetric(c.pending, prometheus.GaugeValue, float64(v.HandoversPending))
	for step, n := range map[string]int64{"sent": f.Invites.Sent, "opened": f.Invites.Opened, "accepted": f.Invites.Accepted,
		"first_run": f.Invites.FirstRun} {
		ch <- prometheus.MustNewConstMetric(c.funnelInvites, prometheus.CounterValue, float64(n), step)
	}
	for step, n := range map[string]int64{"started": f.Handovers.Started, "opened": f.Handovers.Opened, "accepted": f.Handovers.Accepted,
		"first_paid": f.Handovers.FirstPaid} {
		ch <- prometheus.MustNewConstMetric(c.funnelHandovers, prometheus.CounterValue, float64(n), step)
	}
	invite, handover := f.AcceptRates(v)
	if invite != nil {
		ch <- prometheus.MustNewConstMetric(c.rates, prometheus.GaugeValue, *invite, "invite")
	}
	if handover != nil {
		ch <- prometheus.MustNewConstMetric(c.rates, prometheus.GaugeValue, *handover, "handover")
	}
}
