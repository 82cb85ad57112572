package agent

import (
	"encoding/json"
	"net/http"
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
func Handler(a *Agent) http.Handler {
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
		for resp := range out {
			writeLine(w, resp)
			if fl != nil {
				fl.Flush()
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
	return mux
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
