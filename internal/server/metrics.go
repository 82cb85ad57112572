package server

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/superinstance/mesh/internal/store"
)

// conversion exports invite and handover conversion, read from PostgreSQL
// at each scrape.
type conversion struct {
	store     *store.Store
	invites   *prometheus.Desc
	handovers *prometheus.Desc
	pending   *prometheus.Desc
	rates     *prometheus.Desc
	up        *prometheus.Desc
}

func newConversion(st *store.Store) *conversion {
	return &conversion{
		store: st,
		invites: prometheus.NewDesc("si_invites_total", "Invites by outcome: sent, accepted, revoked, expired.",
			[]string{"outcome"}, nil),
		handovers: prometheus.NewDesc("si_handovers_total", "Handovers by outcome: started, accepted, declined, expired, cancelled, failed.",
			[]string{"outcome"}, nil),
		pending: prometheus.NewDesc("si_handovers_pending", "Handovers waiting for the recipient.", nil, nil),
		rates: prometheus.NewDesc("si_conversion_ratio", "Accepted over sent invites, and accepted over decided handovers.",
			[]string{"kind"}, nil),
		up: prometheus.NewDesc("si_conversion_up", "1 when the conversion figures could be read.", nil, nil),
	}
}

func (c *conversion) Describe(ch chan<- *prometheus.Desc) {
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
	ch <- prometheus.MustNewConstMetric(c.rates, prometheus.GaugeValue, v.InviteAcceptRate(), "invite")
	ch <- prometheus.MustNewConstMetric(c.rates, prometheus.GaugeValue, v.HandoverAcceptRate(), "handover")
}
