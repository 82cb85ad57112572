package api

import (
	"context"
	"net/http"
	"time"

	"github.com/superinstance/mesh/hub/hubcmd"
	"github.com/superinstance/mesh/internal/httpjson"
	"github.com/superinstance/mesh/internal/pki"
	"github.com/superinstance/mesh/internal/runner"
	"github.com/superinstance/mesh/workflows"
)

// HubCommandRequest is POST /v1/hubs/{device}/commands: run one command of
// the hub's allow-list.
type HubCommandRequest struct {
	Command string   `json:"command"`
	Args    []string `json:"args,omitempty"`
	// TimeoutSeconds bounds the run under the hub's own bound; default 60, at most 300.
	TimeoutSeconds int `json:"timeout_seconds,omitempty"`
}

// maxAPIHubCommand bounds a command asked through the API: the request
// waits for it.
const maxAPIHubCommand = 5 * time.Minute

// hubCommand asks one of the caller's own hubs to run a command its
// allow-list admits, and answers with the outcome. Another account's
// device answers 404, as one that does not exist; both are audited.
func (s *Server) hubCommand(w http.ResponseWriter, r *http.Request, c Caller) {
	if !accountOnly(w, c) {
		return
	}
	// A device id follows the certificate's rule; anything else names no
	// hub and would break the command record's CHECK inside the workflow.
	device := r.PathValue("device")
	if err := pki.ValidID("device id", device); err != nil {
		httpjson.Error(w, http.StatusBadRequest, "invalid_request", err.Error())
		return
	}
	var req HubCommandRequest
	if !decode(w, r, &req) {
		return
	}
	if err := hubcmd.ValidRequest(req.Command, req.Args); err != nil {
		httpjson.FieldError(w, http.StatusBadRequest, "invalid_request", err.Error(), "command")
		return
	}
	timeout := workflows.DefaultHubCommandTimeout
	if req.TimeoutSeconds != 0 {
		timeout = time.Duration(req.TimeoutSeconds) * time.Second
	}
	if timeout <= 0 || timeout > maxAPIHubCommand {
		httpjson.FieldError(w, http.StatusBadRequest, "invalid_request", "timeout_seconds: want 1 to 300", "timeout_seconds")
		return
	}
	const pickup = 30 * time.Second
	ctx, cancel := context.WithTimeout(r.Context(), timeout+pickup+time.Minute)
	defer cancel()
	res, err := runner.HubCommand(ctx, s.Temporal, workflows.HubCommandInput{Device: device, Account: c.Account,
		AskedBy: "account " + c.Account + " (API)", Command: req.Command, Args: req.Args, Timeout: timeout, Pickup: pickup})
	switch {
	case err != nil:
		httpjson.Error(w, http.StatusServiceUnavailable, "unavailable", "the mesh could not ask the hub; try again")
	case res.RefusedBy == "cloud":
		httpjson.Error(w, http.StatusNotFound, "not_found", res.Refused)
	case res.RefusedBy == "hub":
		httpjson.Error(w, http.StatusForbidden, "refused_by_hub", res.Refused+" (the hub's owner admits commands in its allow-list: si hub commands on the hub)")
	case res.Error != "":
		httpjson.Error(w, http.StatusGatewayTimeout, "hub_unavailable", res.Error)
	default:
		httpjson.Write(w, http.StatusOK, res)
	}
}
