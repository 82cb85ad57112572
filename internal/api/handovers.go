package api

import (
	"context"
	"errors"
	"net/http"
	"time"

	"github.com/superinstance/mesh/internal/httpjson"
	"github.com/superinstance/mesh/internal/runner"
	"github.com/superinstance/mesh/internal/store"
	"github.com/superinstance/mesh/workflows"
)

// HandoverRequest is POST /v1/handovers's body.
type HandoverRequest struct {
	Project string `json:"project"`
	To      string `json:"to"`
}

// HandoverInfo is a handover as the API shows it. Role says whether the
// caller hosts it or is its recipient.
type HandoverInfo struct {
	store.Handover
	Role string `json:"role"`
	// PaymentURL is the Stripe-hosted page where the new owner saves a
	// payment method to start their plan: shown to the new owner alone,
	// while the handover is awaiting_payment.
	PaymentURL string `json:"payment_url,omitempty"`
}

func handoverInfo(h store.Handover, account string) HandoverInfo {
	role := "recipient"
	if h.Host == account {
		role = "host"
	}
	return HandoverInfo{Handover: h, Role: role}
}

// handoverAs is h as account sees it: with the open payment link when
// the handover awaits account's own payment method.
func (s *Server) handoverAs(ctx context.Context, h store.Handover, account string) HandoverInfo {
	info := handoverInfo(h, account)
	if h.State == store.HandoverAwaitingPayment && h.NewOwner == account {
		if _, open, ok, err := s.Store.PaymentSessions(ctx, h.ID, time.Now()); err == nil && ok {
			info.PaymentURL = open.URL
		}
	}
	return info
}

// startHandover hands a project the caller owns over to an email address.
// A project the caller does not own answers 404, as if it did not exist.
func (s *Server) startHandover(w http.ResponseWriter, r *http.Request, c Caller) {
	if !accountOnly(w, c) {
		return
	}
	var req HandoverRequest
	if !decode(w, r, &req) {
		return
	}
	if err := store.ValidProjectID(req.Project); err != nil || req.Project == workflows.DefaultProject {
		httpjson.Error(w, http.StatusBadRequest, "invalid_project", "project: name a project you own (the default project is each account's own and cannot be handed over)")
		return
	}
	if err := store.ValidEmail(req.To); err != nil {
		httpjson.Error(w, http.StatusBadRequest, "invalid_email", "to: "+err.Error())
		return
	}
	if role, err := s.Store.ProjectRole(r.Context(), req.Project, c.Account); errors.Is(err, store.ErrNotFound) || err == nil && role != store.RoleOwner {
		httpjson.Error(w, http.StatusNotFound, "not_found", "no project "+req.Project+" of yours")
		return
	} else if err != nil {
		httpjson.Error(w, http.StatusServiceUnavailable, "unavailable", "the project store is unreachable")
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 15*time.Second)
	defer cancel()
	h, err := runner.StartHandover(ctx, s.Store, s.Temporal, c.Account, req.Project, req.To)
	switch {
	case errors.Is(err, store.ErrExists):
		httpjson.Error(w, http.StatusConflict, "handover_open", err.Error()+": cancel it first (si handover cancel)")
		return
	case errors.Is(err, store.ErrNotFound), errors.Is(err, store.ErrForbidden):
		httpjson.Error(w, http.StatusNotFound, "not_found", "no project "+req.Project+" of yours")
		return
	case err != nil:
		httpjson.Error(w, http.StatusServiceUnavailable, "unavailable", "could not start the handover: "+runner.Cause(err).Error())
		return
	}
	httpjson.Write(w, http.StatusCreated, handoverInfo(h, c.Account))
}

// listHandovers lists the handovers the caller hosts or is offered.
func (s *Server) listHandovers(w http.ResponseWriter, r *http.Request, c Caller) {
	if !accountOnly(w, c) {
		return
	}
	hs, err := s.Store.HandoversOf(r.Context(), c.Account)
	if err != nil {
		httpjson.Error(w, http.StatusServiceUnavailable, "unavailable", "the handover store is unreachable")
		return
	}
	out := make([]HandoverInfo, 0, len(hs))
	for _, h := range hs {
		out = append(out, s.handoverAs(r.Context(), h, c.Account))
	}
	httpjson.Write(w, http.StatusOK, map[string]any{"handovers": out})
}

// cancelHandover cancels a pending handover the caller hosts and answers
// its final state. Anyone else's handover answers 404.
func (s *Server) cancelHandover(w http.ResponseWriter, r *http.Request, c Caller) {
	if !accountOnly(w, c) {
		return
	}
	id := r.PathValue("id")
	h, err := s.Store.HandoverByID(r.Context(), id)
	if errors.Is(err, store.ErrNotFound) || err == nil && h.Host != c.Account {
		httpjson.Error(w, http.StatusNotFound, "not_found", "no handover "+id+" of yours")
		return
	}
	if err != nil {
		httpjson.Error(w, http.StatusServiceUnavailable, "unavailable", "the handover store is unreachable")
		return
	}
	if reason := h.ClosedReason(time.Now()); reason != "" {
		httpjson.Error(w, http.StatusConflict, "handover_closed", reason)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 15*time.Second)
	defer cancel()
	if err := s.Temporal.SignalWorkflow(ctx, workflows.HandoverWorkflowID(h.ID), "", workflows.HandoverCancelSignal, nil); err != nil {
		httpjson.Error(w, http.StatusConflict, "handover_closed", "handover "+id+" is no longer open")
		return
	}
	var st workflows.HandoverState
	if err := s.Temporal.GetWorkflow(ctx, workflows.HandoverWorkflowID(h.ID), "").Get(ctx, &st); err != nil {
		httpjson.Error(w, http.StatusServiceUnavailable, "unavailable", "the cancel did not finish: "+runner.Cause(err).Error())
		return
	}
	if h, err = s.Store.HandoverByID(r.Context(), id); err != nil {
		httpjson.Error(w, http.StatusServiceUnavailable, "unavailable", "the handover store is unreachable")
		return
	}
	httpjson.Write(w, http.StatusOK, handoverInfo(h, c.Account))
}

// HandoverAnswer is the JSON body of POST /handover/{token} from an API
// client (si handover accept/decline): Answer is accept or decline.
type HandoverAnswer struct {
	Answer string `json:"answer"`
}

// handoverAnswerJSON answers a handover for an API client. Accepting takes
// the project as the signed-in account (its API token), which the workflow
// refuses unless the account's email is the recipient's; an API client
// cannot create an account here (the browser page can). Declining needs the
// link alone, as on the page.
func (s *Server) handoverAnswerJSON(w http.ResponseWriter, r *http.Request, h store.Handover) {
	var req HandoverAnswer
	if !decode(w, r, &req) {
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 15*time.Second)
	defer cancel()
	switch req.Answer {
	case "decline":
		if err := s.Temporal.SignalWorkflow(ctx, workflows.HandoverWorkflowID(h.ID), "", workflows.HandoverDeclineSignal, nil); err != nil {
			httpjson.Error(w, http.StatusGone, "handover_closed", "this handover is no longer open")
			return
		}
		var st workflows.HandoverState
		if err := s.Temporal.GetWorkflow(ctx, workflows.HandoverWorkflowID(h.ID), "").Get(ctx, &st); err != nil {
			httpjson.Error(w, http.StatusServiceUnavailable, "unavailable", "the decline did not finish: "+runner.Cause(err).Error())
			return
		}
		h.State = st.Status
		httpjson.Write(w, http.StatusOK, HandoverInfo{Handover: h, Role: "recipient"})
	case "accept":
		account := s.signedInAccount(r)
		if account == "" {
			httpjson.Error(w, http.StatusUnauthorized, "unauthenticated",
				"accepting needs the recipient's API token (si login); a new account is made on the handover page in a browser")
			return
		}
		if err := runner.AcceptHandover(ctx, s.Temporal, h.ID, workflows.HandoverAccept{Account: account}); err != nil {
			httpjson.Error(w, http.StatusConflict, "handover_refused", runner.Cause(err).Error())
			return
		}
		h.State, h.NewOwner = store.HandoverAccepted, account
		httpjson.Write(w, http.StatusAccepted, HandoverInfo{Handover: h, Role: "recipient"})
	default:
		httpjson.Error(w, http.StatusBadRequest, "invalid_answer", "answer must be accept or decline")
	}
}
