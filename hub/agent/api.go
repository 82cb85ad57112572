package agent

import (
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"strings"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
	"google.golang.org/protobuf/encoding/protojson"

	meshv1 "github.com/superinstance/mesh/proto/meshv1"
)

// MaxAPIBody bounds a request to the hub's local API.
const MaxAPIBody = 1 << 20

// EscalateRequest is the local API's JSON body for POST /v1/escalate.
type EscalateRequest struct {
	Prompt    string  `json:"prompt"`
	Project   string  `json:"project,omitempty"`
	MaxRounds uint32  `json:"max_rounds,omitempty"`
	Threshold float64 `json:"threshold,omitempty"`
	LoRA      string  `json:"lora,omitempty"`
	RequestID string  `json:"request_id,omitempty"`
}

// Handler is the hub's local API, served on loopback for `si escalate`:
//
//	POST /v1/escalate  body EscalateRequest; answers NDJSON, one
//	                   EscalationResponse (protojson) a line, ending with the result;
//	                   lines from agent "hub" (step 0) say the link is down or back.
//	                   The same request_id again attaches to the request in flight.
//	POST /v1/usage     body UsageRequest: one call the local kernel served itself,
//	                   answered 202 once it is in the hub's outbox
//	GET  /v1/status    the link's Status as JSON
//
// Every request must name a loopback Host (localhost, 127.0.0.1 or [::1],
// any port), carry no Origin (no browser page), and send
// "Authorization: Bearer <secret>" with the secret from the hub's
// api-secret file; a POST must be application/json. A web page the hub's
// user visits can meet none of these: its simple requests are text/plain
// without the secret, and a DNS-rebound name is not a loopback Host.
func Handler(a *Agent, secret string) http.Handler { return HandlerWith(a, secret, nil) }

// HandlerWith is Handler whose requests are spans of tp (nil: none): one
// per escalation or usage record, with its id and outcome, never its
// prompt or the secret.
func HandlerWith(a *Agent, secret string, tp trace.TracerProvider) http.Handler {
	if tp == nil {
		tp = noop.NewTracerProvider()
	}
	tracer := tp.Tracer("github.com/superinstance/mesh/hub/agent")
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/escalate", func(w http.ResponseWriter, r *http.Request) {
		ctx, span := tracer.Start(r.Context(), "hub.escalate", trace.WithSpanKind(trace.SpanKindServer))
		defer span.End()
		r = r.WithContext(ctx)
		var req EscalateRequest
		dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, MaxAPIBody))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&req); err != nil {
			apiError(w, http.StatusBadRequest, "invalid JSON body: "+err.Error())
			return
		}
		id, out, err := a.EscalateContext(r.Context(), &meshv1.EscalationRequest{RequestId: req.RequestID, Prompt: req.Prompt, Project: req.Project,
			MaxRounds: req.MaxRounds, Threshold: req.Threshold, Lora: req.LoRA})
		if err != nil {
			span.SetStatus(codes.Error, "not queued")
			queueError(w, err)
			return
		}
		span.SetAttributes(attribute.String("si.request_id", id), attribute.Bool("si.link_up", a.Status().Connected))
		w.Header().Set("Content-Type", "application/x-ndjson")
		w.Header().Set("X-Request-Id", id)
		w.WriteHeader(http.StatusOK)
		fl, _ := w.(http.Flusher)
		hubLine := func(text string) {
			writeLine(w, &meshv1.EscalationResponse{RequestId: id, Body: &meshv1.EscalationResponse_Progress{Progress: &meshv1.EscalationProgress{
				Agent: "hub", Text: text}}})
		}
		up := a.Status().Connected
		if !up {
			hubLine(LinkDownText)
		}
		if fl != nil {
			fl.Flush()
		}
		link := time.NewTicker(500 * time.Millisecond)
		defer link.Stop()
		for {
			select {
			case <-link.C:
				if now := a.Status().Connected; now != up {
					up = now
					if up {
						hubLine("link to the bridge is back; the request is being sent")
					} else {
						hubLine(LinkDownText)
					}
					if fl != nil {
						fl.Flush()
					}
				}
			case resp, ok := <-out:
				if !ok {
					return
				}
				switch b := resp.GetBody().(type) {
				case *meshv1.EscalationResponse_Result:
					span.SetAttributes(attribute.String("si.status", b.Result.GetStatus()), attribute.String("si.workflow_id", b.Result.GetWorkflowId()))
				case *meshv1.EscalationResponse_Error:
					span.SetStatus(codes.Error, b.Error.GetCode())
				}
				writeLine(w, resp)
				if fl != nil {
					fl.Flush()
				}
			case <-r.Context().Done():
				// The caller left; the request stays with the agent until it is answered.
				return
			}
		}
	})
	mux.HandleFunc("POST /v1/usage", func(w http.ResponseWriter, r *http.Request) {
		_, span := tracer.Start(r.Context(), "hub.usage", trace.WithSpanKind(trace.SpanKindServer))
		defer span.End()
		b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxUsageBody))
		if err != nil {
			apiError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("the body is more than %d bytes: send one usage record per request", MaxUsageBody))
			return
		}
		rec, err := DecodeUsage(b, time.Now())
		if err != nil {
			span.SetStatus(codes.Error, "invalid record")
			apiError(w, http.StatusBadRequest, err.Error())
			return
		}
		span.SetAttributes(attribute.String("si.event_id", rec.GetEventId()), attribute.String("si.model", rec.GetModel()))
		if err := a.RecordUsage(rec); err != nil {
			span.SetStatus(codes.Error, "not queued")
			queueError(w, err)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusAccepted)
		_ = json.NewEncoder(w).Encode(map[string]any{"event_id": rec.GetEventId(), "queued": true})
	})
	mux.HandleFunc("GET /v1/status", func(w http.ResponseWriter, _ *http.Request) {
		st := a.Status()
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{
			"connected": st.Connected, "sessions": st.Sessions, "last_rtt_us": st.LastRTT / time.Microsecond,
			"heartbeats_acked": st.Acked, "queued_escalations": st.Queued, "queued_usage": st.QueuedUsage, "last_error": st.LastError,
			"oldest_queued_age_s": oldestAge(st.OldestQueued),
		})
	})
	return guard(mux, secret)
}

// LinkDownText is the hub's line to a caller whose request waits for the link.
const LinkDownText = "waiting for the link to the bridge; the request is queued and sent when the link is back"

func oldestAge(t time.Time) float64 {
	if t.IsZero() {
		return 0
	}
	return time.Since(t).Seconds()
}

// queueError answers a request the agent could not take: a bad request, or
// an outbox that could not store it (the hub's disk), which is worth a retry.
func queueError(w http.ResponseWriter, err error) {
	var ve *outboxError
	switch {
	case errors.Is(err, ErrOutboxFull):
		apiError(w, http.StatusServiceUnavailable, err.Error())
	case errors.As(err, &ve):
		apiError(w, http.StatusServiceUnavailable, "the hub could not store the request in its outbox, so it did not take it: "+err.Error()+"; fix the disk and send it again")
	default:
		apiError(w, http.StatusBadRequest, err.Error())
	}
}

// SecretHeader names the header that carries the local API's secret.
const SecretHeader = "Authorization"

func guard(next http.Handler, secret string) http.Handler {
	want := []byte("Bearer " + secret)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !loopbackHost(r.Host) {
			apiError(w, http.StatusMisdirectedRequest, fmt.Sprintf("this hub API answers only for localhost, not Host %q: call http://127.0.0.1:<port>/", r.Host))
			return
		}
		if o := r.Header.Get("Origin"); o != "" {
			apiError(w, http.StatusForbidden, fmt.Sprintf("requests from web pages (Origin %q) are refused: use si escalate", o))
			return
		}
		got := r.Header.Get(SecretHeader)
		if got == "" {
			apiError(w, http.StatusUnauthorized, "missing the hub API secret: send \"Authorization: Bearer <secret>\" with the secret from the hub's "+SecretFile+" file (si escalate does)")
			return
		}
		if secret == "" || subtle.ConstantTimeCompare([]byte(got), want) != 1 {
			apiError(w, http.StatusUnauthorized, "wrong hub API secret: use the one in the hub's "+SecretFile+" file (the hub writes it when it starts)")
			return
		}
		if r.Method == http.MethodPost {
			ct := r.Header.Get("Content-Type")
			if mt, _, err := mime.ParseMediaType(ct); err != nil || mt != "application/json" {
				apiError(w, http.StatusUnsupportedMediaType, fmt.Sprintf("Content-Type must be application/json, not %q", ct))
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}

// loopbackHost reports whether a request's Host is localhost, 127.0.0.1 or
// [::1], with or without a port.
func loopbackHost(host string) bool {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	} else if strings.HasPrefix(host, "[") && strings.HasSuffix(host, "]") {
		host = host[1 : len(host)-1]
	}
	switch strings.ToLower(host) {
	case "localhost", "127.0.0.1", "::1":
		return true
	}
	return false
}

func writeLine(w http.ResponseWriter, m *meshv1.EscalationResponse) {
	b, err := protojson.Marshal(m)
	if err != nil {
		return
	}
	_, _ = w.Write(append(b, '\n'))
}

func apiError(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{"error": map[string]any{"code": http.StatusText(status), "message": msg}})
}
