package agent

import (
	"crypto/subtle"
	"encoding/json"
	"fmt"
	"mime"
	"net"
	"net/http"
	"strings"
	"time"

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
//	                   EscalationResponse (protojson) a line, ending with the result
//	GET  /v1/status    the link's Status as JSON
//
// Every request must name a loopback Host (localhost, 127.0.0.1 or [::1],
// any port), carry no Origin (no browser page), and send
// "Authorization: Bearer <secret>" with the secret from the hub's
// api-secret file; a POST must be application/json. A web page the hub's
// user visits can meet none of these: its simple requests are text/plain
// without the secret, and a DNS-rebound name is not a loopback Host.
func Handler(a *Agent, secret string) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/escalate", func(w http.ResponseWriter, r *http.Request) {
		var req EscalateRequest
		dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, MaxAPIBody))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&req); err != nil {
			apiError(w, http.StatusBadRequest, "invalid JSON body: "+err.Error())
			return
		}
		id, out, err := a.Escalate(&meshv1.EscalationRequest{RequestId: req.RequestID, Prompt: req.Prompt, Project: req.Project,
			MaxRounds: req.MaxRounds, Threshold: req.Threshold, Lora: req.LoRA})
		if err != nil {
			apiError(w, http.StatusBadRequest, err.Error())
			return
		}
		w.Header().Set("Content-Type", "application/x-ndjson")
		w.Header().Set("X-Request-Id", id)
		w.WriteHeader(http.StatusOK)
		fl, _ := w.(http.Flusher)
		if !a.Status().Connected {
			writeLine(w, &meshv1.EscalationResponse{RequestId: id, Body: &meshv1.EscalationResponse_Progress{Progress: &meshv1.EscalationProgress{
				Agent: "hub", Text: "bridge unreachable; the request is queued and will be sent when the link is back"}}})
		}
		if fl != nil {
			fl.Flush()
		}
		for {
			select {
			case resp, ok := <-out:
				if !ok {
					return
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
	mux.HandleFunc("GET /v1/status", func(w http.ResponseWriter, _ *http.Request) {
		st := a.Status()
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{
			"connected": st.Connected, "sessions": st.Sessions, "last_rtt_us": st.LastRTT / time.Microsecond,
			"heartbeats_acked": st.Acked, "queued_escalations": st.Queued, "queued_usage": st.QueuedUsage, "last_error": st.LastError,
		})
	})
	return guard(mux, secret)
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
