package api

import (
	"net/http"

	"github.com/superinstance/mesh/internal/httpjson"
)

// DecodeOnly serves POST /v1/consensus's body decoding alone, for fuzzing
// without a mesh: 200 when the body decodes.
func (s *Server) DecodeOnly() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req ConsensusRequest
		if decode(w, r, &req) {
			httpjson.Write(w, http.StatusOK, req)
		}
	})
}

// ValidateEvalOnly serves POST /v1/evals's decoding and validation alone,
// for fuzzing without a mesh: 200 with the strategies when the body passes.
func ValidateEvalOnly() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req EvalRequest
		if !decode(w, r, &req) {
			return
		}
		strategies, err := req.validate()
		if err != nil {
			httpjson.Error(w, http.StatusBadRequest, "invalid_request", err.Error())
			return
		}
		httpjson.Write(w, http.StatusOK, map[string]any{"strategies": strategies, "results": len(req.Results)})
	})
}
