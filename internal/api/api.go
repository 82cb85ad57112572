// Package api is the mesh's HTTP API: JSON in and out, every request
// authenticated by an account's API token (Authorization: Bearer si_...),
// every error answered as {"error": {"code": ..., "message": ...}}.
//
//	POST /v1/consensus        start a consensus billed to the token's account
//	                          (402 when the account is suspended)
//	GET  /v1/consensus/{id}   its live or final state
package api

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"time"

	"go.temporal.io/sdk/client"

	"github.com/superinstance/mesh/internal/httpjson"
	"github.com/superinstance/mesh/internal/runner"
	"github.com/superinstance/mesh/internal/store"
	"github.com/superinstance/mesh/workflows"
)

// MaxBody bounds a request body.
const MaxBody = 1 << 20

// Server serves the API.
type Server struct {
	Store    *store.Store
	Temporal client.Client
	// HubQueue is the hub consensus prefers when a request names none; empty for none.
	HubQueue string
}

// Handler routes the API.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/consensus", s.auth(s.startConsensus))
	mux.HandleFunc("GET /v1/consensus/{id}", s.auth(s.getConsensus))
	return mux
}

// ConsensusRequest is POST /v1/consensus's body.
type ConsensusRequest struct {
	Prompt    string  `json:"prompt"`
	Project   string  `json:"project,omitempty"`
	MaxRounds int     `json:"max_rounds,omitempty"`
	Threshold float64 `json:"threshold,omitempty"`
	Placement string  `json:"placement,omitempty"`
	LoRA      string  `json:"lora,omitempty"`
}

type handler func(w http.ResponseWriter, r *http.Request, account string)

func (s *Server) auth(h handler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		token, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok {
			httpjson.Error(w, http.StatusUnauthorized, "unauthenticated", "send an API token: Authorization: Bearer si_... (si account token creates one)")
			return
		}
		account, err := s.Store.AccountForToken(r.Context(), strings.TrimSpace(token))
		if err != nil {
			if errors.Is(err, store.ErrNotFound) {
				httpjson.Error(w, http.StatusUnauthorized, "unauthenticated", "unknown or revoked API token")
				return
			}
			httpjson.Error(w, http.StatusServiceUnavailable, "unavailable", "the token store is unreachable")
			return
		}
		h(w, r, account)
	}
}

func (s *Server) startConsensus(w http.ResponseWriter, r *http.Request, account string) {
	var req ConsensusRequest
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, MaxBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		httpjson.Error(w, http.StatusBadRequest, "invalid_json", "the body is not a consensus request: "+err.Error())
		return
	}
	p, err := workflows.ParsePlacement(req.Placement)
	if err != nil {
		httpjson.Error(w, http.StatusBadRequest, "invalid_request", err.Error())
		return
	}
	in := workflows.ConsensusInput{Prompt: req.Prompt, Project: req.Project, Account: account, MaxRounds: req.MaxRounds,
		Threshold: req.Threshold, Placement: p, LoRA: req.LoRA, HubQueue: s.HubQueue}
	if _, err := in.Normalize(); err != nil {
		httpjson.Error(w, http.StatusBadRequest, "invalid_request", err.Error())
		return
	}
	a, err := s.Store.AccountByID(r.Context(), account)
	if err != nil {
		httpjson.Error(w, http.StatusServiceUnavailable, "unavailable", "the ledger is unreachable")
		return
	}
	if a.Status == "suspended" {
		se := &store.SuspendedError{Account: a.ID, Reason: a.SuspendedReason, Unbilled: a.Unbilled, Ceiling: a.CreditCeiling}
		httpjson.Error(w, http.StatusPaymentRequired, a.SuspendedReason, se.Error())
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
	defer cancel()
	id := runner.NewWorkflowID(time.Now())
	if _, err := runner.Start(ctx, s.Temporal, id, in); err != nil {
		httpjson.Error(w, http.StatusServiceUnavailable, "unavailable", "could not start the consensus: "+err.Error())
		return
	}
	httpjson.Write(w, http.StatusAccepted, map[string]string{"workflow_id": id, "state_url": "/v1/consensus/" + id})
}

func (s *Server) getConsensus(w http.ResponseWriter, r *http.Request, account string) {
	id := r.PathValue("id")
	ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
	defer cancel()
	v, err := s.Temporal.QueryWorkflow(ctx, id, "", workflows.QueryState)
	var st workflows.ConsensusState
	if err == nil {
		err = v.Get(&st)
	}
	// Another account's run is as absent as a run that never was.
	if err != nil || st.Account != account || !strings.HasPrefix(id, "consensus-") && !strings.HasPrefix(id, "escalation-") {
		httpjson.Error(w, http.StatusNotFound, "not_found", "no consensus "+id)
		return
	}
	httpjson.Write(w, http.StatusOK, st)
}
