package bridge

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Metrics are the bridge's Prometheus metrics.
type Metrics struct {
	Registry    *prometheus.Registry
	connected   prometheus.Gauge
	connects    prometheus.Counter
	reconnects  prometheus.Counter
	rtt         prometheus.Histogram
	heartbeats  prometheus.Counter
	escalations *prometheus.CounterVec
	prewarms    prometheus.Counter
	links       *prometheus.CounterVec
	enrolls     *prometheus.CounterVec
}

// NewMetrics creates the metrics in a registry of their own.
func NewMetrics() *Metrics { return NewMetricsIn(prometheus.NewRegistry()) }

// NewMetricsIn creates the metrics in reg.
func NewMetricsIn(reg *prometheus.Registry) *Metrics {
	m := &Metrics{
		Registry: reg,
		connected: prometheus.NewGauge(prometheus.GaugeOpts{Name: "si_bridge_connected_hubs",
			Help: "Hubs with an open control stream."}),
		connects: prometheus.NewCounter(prometheus.CounterOpts{Name: "si_bridge_hub_connects_total",
			Help: "Control streams opened."}),
		reconnects: prometheus.NewCounter(prometheus.CounterOpts{Name: "si_bridge_hub_reconnects_total",
			Help: "Control streams opened by hubs that had connected before."}),
		rtt: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "si_bridge_heartbeat_rtt_seconds",
			Help:    "Heartbeat round trip as hubs measure it.",
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1}}),
		heartbeats: prometheus.NewCounter(prometheus.CounterOpts{Name: "si_bridge_heartbeats_total",
			Help: "Heartbeats acked."}),
		escalations: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "si_bridge_escalations_total",
			Help: "Escalation streams served, by outcome."}, []string{"outcome"}),
		prewarms: prometheus.NewCounter(prometheus.CounterOpts{Name: "si_bridge_prewarms_total",
			Help: "Pre-warm signals received."}),
		links: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "si_bridge_links_total",
			Help: "Hub connections accepted, by transport (quic, or tcp: the fallback where UDP is blocked)."}, []string{"transport"}),
		enrolls: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "si_bridge_enrollments_total",
			Help: "Enrollment requests (ALPN si-enroll/1), by outcome: enrolled, refused, limited."}, []string{"outcome"}),
	}
	m.Registry.MustRegister(m.connected, m.connects, m.reconnects, m.rtt, m.heartbeats, m.escalations, m.prewarms, m.links, m.enrolls)
	return m
}

// Handler serves the metrics in Prometheus's text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{})
}

func (m *Metrics) hubConnected(reconnect bool) {
	m.connected.Inc()
	m.connects.Inc()
	if reconnect {
		m.reconnects.Inc()
	}
}

func (m *Metrics) hubDisconnected() { m.connected.Dec() }

func (m *Metrics) heartbeat(rttMicros uint32) {
	m.heartbeats.Inc()
	if rttMicros > 0 {
		m.rtt.Observe(float64(rttMicros) / 1e6)
	}
}

func (m *Metrics) escalation(outcome string) { m.escalations.WithLabelValues(outcome).Inc() }

func (m *Metrics) prewarm() { m.prewarms.Inc() }

func (m *Metrics) transport(t string) { m.links.WithLabelValues(t).Inc() }

func (m *Metrics) enrollment(outcome string) { m.enrolls.WithLabelValues(outcome).Inc() }
