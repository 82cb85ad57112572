// Package api is the mesh's HTTP API: JSON in and out, every request
// authenticated by an account's API token (Authorization: Bearer si_...) or
// a guest's session cookie, every error answered as
// {"error": {"code": ..., "message": ...}}.
//
//	POST /v1/consensus        start a consensus billed to the token's account,
//	                          or a guest's host (402 when the account is
//	                          suspended, the guest's quota is spent, or
//	                          either cannot cover the run's worst case)
//	GET  /v1/consensus/{id}   its live or final state, to its account and the
//	                          members and guests of its project
//	GET  /join/{token}        the invite page (consumes nothing); POST accepts
//	                          it: a guest session in a cookie
//	POST /v1/handovers        hand a project the token's account owns over;
//	                          GET lists those it hosts or is sent, and
//	                          /v1/handovers/{id}/cancel cancels one it hosts
//	GET  /handover/{token}    the handover accept page (POST accepts, as the
//	                          signed-in recipient or a new account, or declines;
//	                          with a JSON body it answers JSON)
//	GET  /p/{project}         the project page a guest lands on
//	POST /v1/evals            record an si eval report (costs from the
//	                          ledger); GET lists the account's own
//	GET  /                    the signed-in account's dashboard (else a
//	                          sign-in page); GET /v1/dashboard as JSON
//
// Browser credentials (the si_session and si_guest cookies) hold opaque
// random secrets of which the mesh keeps only the SHA-256; a POST or DELETE
// that rides on a cookie must come from the mesh's own origin.
package api

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"time"

	"go.temporal.io/sdk/client"

	"github.com/superinstance/mesh/internal/blob"
	"github.com/superinstance/mesh/internal/httpjson"
	"github.com/superinstance/mesh/internal/runner"
	"github.com/superinstance/mesh/internal/store"
	"github.com/superinstance/mesh/workers"
	"github.com/superinstance/mesh/workflows"
)

// MaxBody bounds a request body.
const MaxBody = 1 << 20

// Server serves the API.
type Server struct {
	Store    *store.Store
	Temporal client.Client
	// LinkLimit bounds requests to /join, /handover and /v1/session per
	// client address. Default DefaultLinkLimit.
	LinkLimit *Limiter
	// Hub streams consensus progress to viewers.
	Hub *Hub
	// Webhook serves POST /v1/stripe/webhook when set.
	Webhook http.Handler
	// PublicURL is the base of links the API hands out (invites); default
	// the request's own scheme and host.
	PublicURL string
	// Blob holds adapters; nil turns the adapter upload routes off.
	Blob *blob.Store
	// ServedModels lists the inference backend's base models, so an
	// adapter for another model is refused before its upload; nil skips
	// that check (the push workflow makes it anyway).
	ServedModels func(context.Context) ([]string, error)
	// TemporalUIURL is the Temporal Web UI's base URL (http://127.0.0.1:8233
	// under si dev); the live page links each run there for operators. Empty
	// hides the link.
	TemporalUIURL string
	// TemporalNamespace is the namespace runs are in. Default "default".
	TemporalNamespace string
}

// Route is one endpoint of the API.
type Route struct {
	Method, Path string
	handler      http.HandlerFunc
}

// Routes lists every endpoint; the OpenAPI description is kept in step
// with it by a test.
func (s *Server) Routes() []Route {
	if s.LinkLimit == nil {
		s.LinkLimit = DefaultLinkLimit()
	}
	if s.Hub == nil {
		s.Hub = &Hub{Temporal: s.Temporal}
	}
	if s.Hub.Encode == nil {
		s.Hub.Encode = s.encodeView
	}
	routes := []Route{
		{"POST", "/v1/consensus", s.auth(s.startConsensus)},
		{"GET", "/v1/consensus/{id}", s.auth(s.getConsensus)},
		{"GET", "/v1/consensus/{id}/events", s.auth(s.events)},
		{"GET", "/v1/me", s.auth(s.me)},
		{"GET", "/v1/balance", s.auth(s.balance)},
		{"GET", "/v1/dashboard", s.auth(s.getDashboard)},
		{"GET", "/v1/usage", s.auth(s.usage)},
		{"GET", "/v1/tokens", s.auth(s.listTokens)},
		{"POST", "/v1/tokens/{id}/revoke", s.auth(s.revokeToken)},
		{"POST", "/v1/evals", s.auth(s.recordEval)},
		{"GET", "/v1/evals", s.auth(s.listEvals)},
		{"POST", "/v1/invites", s.auth(s.createInvite)},
		{"GET", "/v1/invites", s.auth(s.listInvites)},
		{"POST", "/v1/invites/{id}/revoke", s.auth(s.revokeInvite)},
		{"GET", "/v1/projects/{project}/guests", s.auth(s.projectGuests)},
		{"POST", "/v1/guests/{id}/revoke", s.auth(s.revokeGuest)},
		{"POST", "/v1/handovers", s.auth(s.startHandover)},
		{"GET", "/v1/handovers", s.auth(s.listHandovers)},
		{"POST", "/v1/handovers/{id}/cancel", s.auth(s.cancelHandover)},
		{"POST", "/v1/hubs/{device}/commands", s.auth(s.hubCommand)},
		{"POST", "/v1/adapters/uploads", s.auth(s.startUpload)},
		{"POST", "/v1/adapters", s.auth(s.pushAdapter)},
		{"GET", "/v1/adapters", s.auth(s.listAdapters)},
		{"GET", "/v1/adapters/{id}", s.auth(s.getAdapter)},
		{"DELETE", "/v1/adapters/{id}", s.auth(s.removeAdapter)},
		{"POST", "/v1/session", s.LinkLimit.Wrap(s.signIn)},
		{"DELETE", "/v1/session", s.signOut},
		{"GET", "/join/{token}", s.LinkLimit.Wrap(s.joinPage)},
		{"POST", "/join/{token}", s.LinkLimit.Wrap(s.join)},
		{"GET", "/handover/{token}", s.LinkLimit.Wrap(s.handoverPage)},
		{"POST", "/handover/{token}", s.LinkLimit.Wrap(s.handoverAnswer)},
		{"GET", "/", s.home},
		{"GET", "/p/{project}", s.projectPage},
		{"GET", "/c/{id}", s.livePage},
		{"GET", "/assets/{file}", s.asset},
		{"GET", "/openapi.json", s.openAPI},
	}
	if s.Webhook != nil {
		routes = append(routes, Route{"POST", "/v1/stripe/webhook", s.Webhook.ServeHTTP})
	}
	return routes
}

// Handler routes the API. A request no route serves is answered in the
// mesh's own form: 404, or 405 with Allow, as the JSON error on API paths
// (/v1/..., /openapi.json, /assets/...) and as the error page elsewhere.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	for _, rt := range s.Routes() {
		p := rt.Path
		if p == "/" {
			p = "/{$}" // the dashboard is at / alone, not under every path
		}
		mux.HandleFunc(rt.Method+" "+p, rt.handler)
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, pattern := mux.Handler(r); pattern != "" {
			mux.ServeHTTP(w, r)
			return
		}
		// The mux's own fallback: a 404, a 405 or a redirect to the
		// cleaned path. Only the redirect is passed on as it is.
		c := &captured{header: http.Header{}}
		mux.ServeHTTP(c, r)
		switch c.status {
		case http.StatusNotFound, http.StatusMethodNotAllowed:
			s.routeError(w, r, c.status, c.header.Get("Allow"))
		default:
			for k, v := range c.header {
				w.Header()[k] = v
			}
			w.WriteHeader(c.status)
			_, _ = w.Write(c.body.Bytes())
		}
	})
}

// GuestCookie holds a guest session's secret.
const GuestCookie = "si_guest"

// Caller is who makes a request: an account by its API token or browser
// session, or a guest by the session cookie (Account is then the host who
// pays).
type Caller struct {
	Account string
	Guest   *store.GuestSession
	// TokenID names the API token the request carried, or the one its
	// browser session was opened with (store.TokenID); "" for a guest.
	TokenID string
}

// errNoCredential: the request carries no credential at all.
var errNoCredential = errors.New("no credential")

// identify resolves the request's credential: an API token
// (Authorization: Bearer), else a browser session cookie, else a guest
// session cookie. cookie reports whether a cookie was the credential. An
// unknown, revoked or expired credential is store.ErrNotFound; none at all
// is errNoCredential.
func (s *Server) identify(r *http.Request) (c Caller, cookie bool, err error) {
	// The scheme is case-insensitive (RFC 9110): Bearer, bearer, BEARER.
	if scheme, token, ok := strings.Cut(strings.TrimSpace(r.Header.Get("Authorization")), " "); ok && strings.EqualFold(scheme, "Bearer") {
		token = strings.TrimSpace(token)
		c.Account, err = s.Store.AccountForToken(r.Context(), token)
		if err == nil {
			c.TokenID = store.TokenID(token)
		}
		return c, false, err
	}
	if ck, err := r.Cookie(SessionCookie); err == nil {
		c.Account, c.TokenID, err = s.Store.AccountForBrowserSession(r.Context(), ck.Value)
		return c, true, err
	}
	if ck, err := r.Cookie(GuestCookie); err == nil {
		g, err := s.Store.GuestSessionBySecret(r.Context(), ck.Value)
		if err != nil {
			return c, true, err
		}
		return Caller{Account: g.Host, Guest: &g}, true, nil
	}
	return c, false, errNoCredential
}

// guest returns the live guest session the request's cookie proves, if any.
func (s *Server) guest(r *http.Request) (*store.GuestSession, error) {
	c, err := r.Cookie(GuestCookie)
	if err != nil {
		return nil, store.ErrNotFound
	}
	g, err := s.Store.GuestSessionBySecret(r.Context(), c.Value)
	if err != nil {
		return nil, err
	}
	return &g, nil
}

// origin is this server's origin (scheme://host) as browsers see it.
func (s *Server) origin(r *http.Request) string {
	if u, err := url.Parse(s.baseURL(r)); err == nil {
		return u.Scheme + "://" + u.Host
	}
	return ""
}

// sameOrigin reports whether a browser request comes from the mesh's own
// pages. Browsers name the page's origin in Origin (and Sec-Fetch-Site) on
// every cross-origin POST and DELETE; a request with neither is not a
// browser's cross-site request.
func (s *Server) sameOrigin(r *http.Request) bool {
	if site := r.Header.Get("Sec-Fetch-Site"); site != "" && site != "same-origin" && site != "none" {
		return false
	}
	o := r.Header.Get("Origin")
	return o == "" || strings.EqualFold(o, s.origin(r))
}

// crossOrigin answers a browser request from another site's page.
func crossOrigin(w http.ResponseWriter) {
	httpjson.Error(w, http.StatusForbidden, "cross_origin",
		"this request came from a page on another site; the mesh takes changes made with its cookies only from its own pages")
}

// secureCookies reports whether cookies must be Secure: the request came
// over TLS or the public URL is https.
func (s *Server) secureCookies(r *http.Request) bool {
	return r.TLS != nil || strings.HasPrefix(strings.ToLower(s.PublicURL), "https://")
}

// ConsensusRequest is POST /v1/consensus's body.
type ConsensusRequest struct {
	Prompt    string  `json:"prompt"`
	Project   string  `json:"project,omitempty"`
	MaxRounds int     `json:"max_rounds,omitempty"`
	Threshold float64 `json:"threshold,omitempty"`
	Placement string  `json:"placement,omitempty"`
	LoRA      string  `json:"lora,omitempty"`
	// MaxTokens bounds each agent call's completion (16-32768); the run is
	// admitted only if its worst case at this bound fits. Default 1024.
	MaxTokens int `json:"max_tokens,omitempty"`
	// Continue starts from this finished run (a failed one too), which the
	// caller may see: Pathos reads the new prompt, Logos the earlier answer
	// and Ethos's last feedback; its project too, unless Project names another.
	Continue string `json:"continue,omitempty"`
	// Strategy is debate (default), vote or single; Samples (vote: 1-15,
	// default 5) and Temperature (0-2; vote default 0.7, single 0) say how
	// Logos is sampled.
	Strategy    string   `json:"strategy,omitempty"`
	Samples     int      `json:"samples,omitempty"`
	Temperature *float64 `json:"temperature,omitempty"`
}

type handler func(w http.ResponseWriter, r *http.Request, c Caller)

func (s *Server) auth(h handler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		c, cookie, err := s.identify(r)
		switch {
		case errors.Is(err, errNoCredential):
			httpjson.Error(w, http.StatusUnauthorized, "unauthenticated", "send an API token: Authorization: Bearer si_... (si account token creates one), or open an invite link")
			return
		case errors.Is(err, store.ErrNotFound) && cookie:
			httpjson.Error(w, http.StatusUnauthorized, "unauthenticated", "your session has ended (signed out, revoked or expired): sign in again or open a new invite link")
			return
		case errors.Is(err, store.ErrNotFound):
			httpjson.Error(w, http.StatusUnauthorized, "unauthenticated", "unknown or revoked API token")
			return
		case err != nil:
			httpjson.Error(w, http.StatusServiceUnavailable, "unavailable", "the credential store is unreachable")
			return
		}
		if cookie && r.Method != http.MethodGet && r.Method != http.MethodHead && !s.sameOrigin(r) {
			crossOrigin(w)
			return
		}
		h(w, r, c)
	}
}

func (s *Server) startConsensus(w http.ResponseWriter, r *http.Request, c Caller) {
	account := c.Account
	var req ConsensusRequest
	if !decode(w, r, &req) {
		return
	}
	p, err := workflows.ParsePlacement(req.Placement)
	if err != nil {
		httpjson.Error(w, http.StatusBadRequest, "invalid_request", err.Error())
		return
	}
	in := workflows.ConsensusInput{Prompt: req.Prompt, Project: req.Project, Account: account, MaxRounds: req.MaxRounds,
		Threshold: req.Threshold, Placement: p, LoRA: req.LoRA, MaxTokens: req.MaxTokens,
		Strategy: workflows.Strategy(req.Strategy), Samples: req.Samples, Temperature: req.Temperature}
	if g := c.Guest; g != nil {
		if req.Project != "" && req.Project != g.Project {
			httpjson.Error(w, http.StatusNotFound, "not_found", "no project "+req.Project)
			return
		}
		if !store.CanWrite(g.Role) {
			httpjson.Error(w, http.StatusForbidden, "forbidden", "a "+g.Role+" guest can watch the project's runs but not start one")
			return
		}
		if g.Remaining <= 0 {
			httpjson.Error(w, http.StatusPaymentRequired, "guest_quota_exhausted", "guest quota exhausted: ask the host for a new invite")
			return
		}
		in.Project, in.GuestSession = g.Project, g.ID
	}
	if req.Continue != "" {
		prev, ok := s.visibleState(w, r, c, req.Continue)
		if !ok {
			return
		}
		in.Resume, err = workflows.ResumeFrom(req.Continue, prev)
		if err != nil {
			httpjson.Error(w, http.StatusConflict, "run_in_progress", "consensus "+req.Continue+" is still running: continue from it once it has finished (si ask --follow "+req.Continue+")")
			return
		}
		if in.Project == "" {
			in.Project = prev.Project
		}
	}
	if in.Placement != workflows.PlacementCloud {
		// Only a hub of the paying account may see its prompts: the
		// account's connected hub, least loaded first; none runs in the cloud.
		hub, err := s.Store.PreferredHub(r.Context(), account)
		switch {
		case err == nil:
			in.HubQueue = workers.HubQueue(hub.DeviceID)
		case !errors.Is(err, store.ErrNotFound):
			httpjson.Error(w, http.StatusServiceUnavailable, "unavailable", "the hub registry is unreachable")
			return
		case in.Placement == workflows.PlacementHub:
			httpjson.Error(w, http.StatusConflict, "no_hub", "placement hub needs a connected hub of account "+account+": start si hub, or use placement auto or cloud")
			return
		}
	}
	norm, err := in.Normalize()
	if err != nil {
		httpjson.Error(w, http.StatusBadRequest, "invalid_request", err.Error())
		return
	}
	// The same claim the workflow's project check makes: a project new to the
	// mesh becomes the caller's; someone else's is as absent as one that
	// never was.
	if c.Guest == nil && norm.Project != workflows.DefaultProject {
		role, err := s.Store.ClaimProject(r.Context(), norm.Project, account)
		switch {
		case errors.Is(err, store.ErrNotFound):
			httpjson.Error(w, http.StatusNotFound, "not_found", "no project "+norm.Project)
			return
		case err != nil:
			httpjson.Error(w, http.StatusServiceUnavailable, "unavailable", "the project store is unreachable")
			return
		case !store.CanWrite(role):
			httpjson.Error(w, http.StatusForbidden, "forbidden", "a "+role+" of project "+norm.Project+" can watch its runs but not start one")
			return
		}
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
	// The run's hold, taken here so that a run that cannot be covered is a
	// 402 now; the workflow's own reservation under the same id finds it.
	bounds, ttl := workflows.WorstCase(norm)
	_, err = s.Store.ReserveHold(ctx, store.HoldRequest{ID: id, Account: account, GuestSession: in.GuestSession, Bounds: bounds, TTL: ttl})
	var he *store.HeadroomError
	var se *store.SuspendedError
	switch {
	case errors.As(err, &he) && he.GuestSession != "":
		httpjson.Error(w, http.StatusPaymentRequired, "guest_quota_too_low", he.Error())
		return
	case errors.As(err, &he):
		httpjson.Error(w, http.StatusPaymentRequired, "insufficient_headroom", he.Error())
		return
	case errors.As(err, &se):
		httpjson.Error(w, http.StatusPaymentRequired, se.Reason, se.Error())
		return
	case err != nil:
		httpjson.Error(w, http.StatusServiceUnavailable, "unavailable", "the ledger is unreachable")
		return
	}
	if _, err := runner.Start(ctx, s.Temporal, id, in); err != nil {
		_, _ = s.Store.ReleaseHold(context.WithoutCancel(ctx), id)
		httpjson.Error(w, http.StatusServiceUnavailable, "unavailable", "could not start the consensus: "+err.Error())
		return
	}
	httpjson.Write(w, http.StatusAccepted, map[string]string{"workflow_id": id, "state_url": "/v1/consensus/" + id,
		"events_url": "/v1/consensus/" + id + "/events", "page_url": "/c/" + id})
}

func (s *Server) getConsensus(w http.ResponseWriter, r *http.Request, c Caller) {
	if st, ok := s.visibleState(w, r, c, r.PathValue("id")); ok {
		httpjson.Write(w, http.StatusOK, s.viewFor(r.Context(), c, r.PathValue("id"), st))
	}
}

// visibleState reads a consensus the caller may see, answering 404 for one
// they may not (or that does not exist).
func (s *Server) visibleState(w http.ResponseWriter, r *http.Request, c Caller, id string) (workflows.ConsensusState, bool) {
	ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
	defer cancel()
	st, err := s.queryState(ctx, id)
	// A run the caller may not see is as absent as a run that never was.
	if err != nil || !s.maySee(r.Context(), c, st) {
		httpjson.Error(w, http.StatusNotFound, "not_found", "no consensus "+id)
		return st, false
	}
	return st, true
}

// consensusID says whether id names a consensus run (one si ask or an
// escalation started); anything else is never queried.
func consensusID(id string) bool {
	return strings.HasPrefix(id, "consensus-") || strings.HasPrefix(id, "escalation-")
}

// queryState reads a consensus's state from its workflow.
func (s *Server) queryState(ctx context.Context, id string) (workflows.ConsensusState, error) {
	var st workflows.ConsensusState
	if !consensusID(id) {
		return st, errors.New("not a consensus id")
	}
	v, err := s.Temporal.QueryWorkflow(ctx, id, "", workflows.QueryState)
	if err == nil {
		err = v.Get(&st)
	}
	return st, err
}

// maySee reports whether the caller may read a run: a guest, the runs of
// their project paid by their host; an account, its own runs and those of
// the named projects it is a member of. Another account's run is shown in
// a project only while that account may write there, so that a run
// started by anyone else (refused, but named the project) is no one's to
// read but its own account's.
func (s *Server) maySee(ctx context.Context, c Caller, st workflows.ConsensusState) bool {
	if c.Guest == nil && st.Account == c.Account {
		return true
	}
	if st.Project == "" || st.Project == workflows.DefaultProject {
		return false
	}
	if c.Guest != nil {
		if st.Project != c.Guest.Project || st.Account != c.Guest.Host {
			return false
		}
	} else if _, err := s.Store.ProjectRole(ctx, st.Project, c.Account); err != nil {
		return false
	}
	role, err := s.Store.ProjectRole(ctx, st.Project, st.Account)
	return err == nil && store.CanWrite(role)
}
