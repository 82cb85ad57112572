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
