package telemetry

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the mesh's own Prometheus metrics, beside the bridge's and the
// Temporal SDK's. A nil *Metrics records nothing.
type Metrics struct {
	stage    *prometheus.HistogramVec
	events   *prometheus.CounterVec
	charged  prometheus.Counter
	flushes  *prometheus.CounterVec
	attempts *prometheus.CounterVec
}

// NewMetrics registers the metrics in reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		stage: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "si_consensus_stage_seconds",
			Help:    "Time an agent step of a consensus took, by stage (pathos, logos, ethos, arbiter), repair included.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60}}, []string{"stage"}),
		events: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "si_ledger_events_total",
			Help: "Usage events the ledger logged, by outcome (charged, duplicate)."}, []string{"outcome"}),
		charged: prometheus.NewCounter(prometheus.CounterOpts{Name: "si_ledger_charged_micros_total",
			Help: "Micro-dollars charged to accounts."}),
		flushes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "si_flushes_total",
			Help: "Flushes to Stripe that ended, by outcome (sent, failed)."}, []string{"outcome"}),
		attempts: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "si_flush_attempts_total",
			Help: "Meter event requests to Stripe, by result (ok, retry, rejected)."}, []string{"result"}),
	}
	reg.MustRegister(m.stage, m.events, m.charged, m.flushes, m.attempts)
	return m
}

// Stage records one agent step's duration.
func (m *Metrics) Stage(stage string, d time.Duration) {
	if m != nil {
		m.stage.WithLabelValues(stage).Observe(d.Seconds())
	}
}

// Usage records a logged usage event.
func (m *Metrics) Usage(charged int64, duplicate bool) {
	if m == nil {
		return
	}
	if duplicate {
		m.events.WithLabelValues("duplicate").Inc()
		return
	}
	m.events.WithLabelValues("charged").Inc()
	m.charged.Add(float64(charged))
}

// Flush records how a flush ended.
func (m *Metrics) Flush(outcome string) {
	if m != nil {
		m.flushes.WithLabelValues(outcome).Inc()
	}
}

// FlushAttempt records one request to Stripe.
func (m *Metrics) FlushAttempt(result string) {
	if m != nil {
		m.attempts.WithLabelValues(result).Inc()
	}
}
