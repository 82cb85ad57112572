package agent

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// OpsHandler serves what an operator's tools read, on an address of its
// own (si hub --metrics-listen), without the local API's secret: nothing
// here starts work or bills, and nothing in it is a secret.
//
//	GET /metrics  Prometheus: link state, sessions and reconnects, heartbeat
//	              RTT, outbox depth by kind, the oldest queued item's age,
//	              the device certificate's expiry
//	GET /ready    200 once the link is up and the certificate valid, else 503;
//	              the JSON body says which, with no addresses or errors in it
//
// extra, if not nil, is served beside the agent's own metrics (the Temporal
// SDK's, say).
func OpsHandler(a *Agent, extra *prometheus.Registry) http.Handler {
	reg := prometheus.NewRegistry()
	reg.MustRegister(&hubCollector{a: a})
	gather := prometheus.Gatherers{reg}
	if extra != nil {
		gather = append(gather, extra)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(gather, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /ready", func(w http.ResponseWriter, _ *http.Request) {
		st, notAfter := a.Status(), a.CertNotAfter()
		link, cert := "up", "valid"
		ready := true
		if !st.Connected {
			link, ready = "down: the hub is not connected to the bridge (si hub's log says why)", false
		}
		switch {
		case notAfter.IsZero():
			cert, ready = "unknown: no device certificate loaded", false
		case time.Now().After(notAfter):
			cert, ready = "expired on "+notAfter.UTC().Format(time.RFC3339)+": renew it (si device renew)", false
		default:
			cert = "valid until " + notAfter.UTC().Format(time.RFC3339)
		}
		w.Header().Set("Content-Type", "application/json")
		if !ready {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		_ = json.NewEncoder(w).Encode(map[string]any{"ready": ready, "link": link, "certificate": cert,
			"queued_escalations": st.Queued, "queued_usage": st.QueuedUsage})
	})
	return mux
}

// GuardOps refuses what a web page could send to the ops address: any
// request with an Origin header and, when the address is a loopback one
// (loopback true), any whose Host is not localhost, 127.0.0.1 or [::1], so
// that a page DNS-rebinding its own name to the hub reads nothing. An ops
// address on another interface serves the names operators scrape it by.
func GuardOps(next http.Handler, loopback bool) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if loopback && !loopbackHost(r.Host) {
			apiError(w, http.StatusMisdirectedRequest, fmt.Sprintf("the hub's metrics address is on loopback and answers only for localhost, not Host %q: scrape http://127.0.0.1:<port>/", r.Host))
			return
		}
		if o := r.Header.Get("Origin"); o != "" {
			apiError(w, http.StatusForbidden, fmt.Sprintf("requests from web pages (Origin %q) are refused: scrape /metrics and /ready from a monitoring agent", o))
			return
		}
		next.ServeHTTP(w, r)
	})
}

// CertNotAfter is when the device certificate the agent dials with
// expires (the renewed one, once renewed); zero when it has none.
func (a *Agent) CertNotAfter() time.Time {
	if a.opts.Certs != nil {
		return a.opts.Certs.Leaf().NotAfter
	}
	return leafNotAfter(a.opts.TLS)
}

func leafNotAfter(tc *tls.Config) time.Time {
	if tc == nil || len(tc.Certificates) == 0 || len(tc.Certificates[0].Certificate) == 0 {
		return time.Time{}
	}
	c := tc.Certificates[0]
	if c.Leaf != nil {
		return c.Leaf.NotAfter
	}
	leaf, err := x509.ParseCertificate(c.Certificate[0])
	if err != nil {
		return time.Time{}
	}
	return leaf.NotAfter
}

// hubCollector reads the agent's Status at each scrape.
type hubCollector struct{ a *Agent }

var (
	descUp       = prometheus.NewDesc("si_hub_link_up", "1 while the hub's control stream to the bridge is up.", nil, nil)
	descSessions = prometheus.NewDesc("si_hub_link_sessions_total", "Control sessions established with the bridge since start.", nil, nil)
	descRecon    = prometheus.NewDesc("si_hub_link_reconnects_total", "Control sessions established after the first.", nil, nil)
	descRTT      = prometheus.NewDesc("si_hub_heartbeat_rtt_seconds", "Round trip of the last acked heartbeat (0 before the first).", nil, nil)
	descAcked    = prometheus.NewDesc("si_hub_heartbeats_acked_total", "Heartbeats the bridge acked.", nil, nil)
	descDepth    = prometheus.NewDesc("si_hub_outbox_depth", "Items waiting in the hub for the bridge: escalations not yet answered, usage records not yet acked.", []string{"kind"}, nil)
	descOldest   = prometheus.NewDesc("si_hub_outbox_oldest_age_seconds", "Age of the oldest item waiting (0 when none waits).", nil, nil)
	descExpiry   = prometheus.NewDesc("si_hub_certificate_expiry_timestamp_seconds", "When the device certificate expires (Unix time; 0 if none).", nil, nil)
)

func (c *hubCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descUp, descSessions, descRecon, descRTT, descAcked, descDepth, descOldest, descExpiry} {
		ch <- d
	}
}

func (c *hubCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.a.Status()
	up := 0.0
	if st.Connected {
		up = 1
	}
	ch <- prometheus.MustNewConstMetric(descUp, prometheus.GaugeValue, up)
	ch <- prometheus.MustNewConstMetric(descSessions, prometheus.CounterValue, float64(st.Sessions))
	ch <- prometheus.MustNewConstMetric(descRecon, prometheus.CounterValue, float64(max(st.Sessions-1, 0)))
	ch <- prometheus.MustNewConstMetric(descRTT, prometheus.GaugeValue, st.LastRTT.Seconds())
	ch <- prometheus.MustNewConstMetric(descAcked, prometheus.CounterValue, float64(st.Acked))
	ch <- prometheus.MustNewConstMetric(descDepth, prometheus.GaugeValue, float64(st.Queued), "escalation")
	ch <- prometheus.MustNewConstMetric(descDepth, prometheus.GaugeValue, float64(st.QueuedUsage), "usage")
	ch <- prometheus.MustNewConstMetric(descOldest, prometheus.GaugeValue, oldestAge(st.OldestQueued))
	expiry := 0.0
	if t := c.a.CertNotAfter(); !t.IsZero() {
		expiry = float64(t.Unix())
	}
	ch <- prometheus.MustNewConstMetric(descExpiry, prometheus.GaugeValue, expiry)
}
