package server

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/superinstance/mesh/internal/store"
)

// openFlushes exports the open flushes (pending, in doubt), read from
// PostgreSQL at each scrape: a flush in doubt may be at Stripe and is
// retried under its own identifier until Stripe answers.
type openFlushes struct {
	store *store.Store
	count *prometheus.Desc
	cents *prometheus.Desc
	up    *prometheus.Desc
}

func newOpenFlushes(st *store.Store) *openFlushes {
	return &openFlushes{
		store: st,
		count: prometheus.NewDesc("si_flushes_open", "Open flushes to Stripe by state: pending, in_doubt (Stripe's answer was lost; retried under the same identifier).",
			[]string{"state"}, nil),
		cents: prometheus.NewDesc("si_flushes_open_cents", "Cents held by open flushes to Stripe, by state (pending, in_doubt).", []string{"state"}, nil),
		up:    prometheus.NewDesc("si_flushes_up", "1 when the open flushes could be read.", nil, nil),
	}
}

func (c *openFlushes) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.count
	ch <- c.cents
	ch <- c.up
}

func (c *openFlushes) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	st, err := c.store.FlushStats(ctx)
	if err != nil {
		ch <- prometheus.MustNewConstMetric(c.up, prometheus.GaugeValue, 0)
		return
	}
	ch <- prometheus.MustNewConstMetric(c.up, prometheus.GaugeValue, 1)
	ch <- prometheus.MustNewConstMetric(c.count, prometheus.GaugeValue, float64(st.Pending), store.FlushPending)
	ch <- prometheus.MustNewConstMetric(c.count, prometheus.GaugeValue, float64(st.InDoubt), store.FlushInDoubt)
	ch <- prometheus.MustNewConstMetric(c.cents, prometheus.GaugeValue, float64(st.PendingCents), store.FlushPending)
	ch <- prometheus.MustNewConstMetric(c.cents, prometheus.GaugeValue, float64(st.InDoubtCents), store.FlushInDoubt)
}
