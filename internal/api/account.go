package api

import (
	"context"
	"embed"
	"errors"
	"mime"
	"net/http"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/superinstance/mesh/internal/httpjson"
	"github.com/superinstance/mesh/internal/money"
	"github.com/superinstance/mesh/internal/runner"
	"github.com/superinstance/mesh/internal/store"
)

// SessionCookie holds a browser session's id for the pages (set by POST
// /v1/session): an opaque random secret, never the API token it was opened
// with; DELETE /v1/session revokes it.
const SessionCookie = "si_session"

//go:embed web openapi.json
var assets embed.FS

// accountOnly refuses guests: the endpoint is about an account's own affairs.
func accountOnly(w http.ResponseWriter, c Caller) bool {
	if c.Guest != nil {
		httpjson.Error(w, http.StatusForbidden, "forbidden", "guests cannot use this endpoint")
		return false
	}
	return true
}

// Me is GET /v1/me: who the caller is.
type Me struct {
	Kind    string     `json:"kind"` // account or guest
	Account string     `json:"account,omitempty"`
	Guest   *GuestInfo `json:"guest,omitempty"`
}

// GuestInfo is a guest session as the API shows it. Session is the
// session's handle (for revoking it), never its secret.
type GuestInfo struct {
	Session   string    `json:"session"`
	Project   string    `json:"project"`
	Role      string    `json:"role"`
	Host      string    `json:"host"`
	Quota     int64     `json:"quota_micros"`
	Remaining int64     `json:"remaining_micros"`
	Since     time.Time `json:"since"`
	ExpiresAt time.Time `json:"expires_at"`
	// State is active, revoked or expired.
	State string `json:"state"`
}

func guestInfo(g store.GuestSession) *GuestInfo {
	state := "active"
	switch {
	case g.RevokedAt != nil:
		state = "revoked"
	case g.ClosedReason(time.Now()) != "":
		state = "expired"
	}
	return &GuestInfo{Session: g.ID, Project: g.Project, Role: g.Role, Host: g.Host, Quota: int64(g.Quota),
		Remaining: int64(g.Remaining), Since: g.CreatedAt, ExpiresAt: g.ExpiresAt, State: state}
}

func (s *Server) me(w http.ResponseWriter, _ *http.Request, c Caller) {
	if c.Guest != nil {
		httpjson.Write(w, http.StatusOK, Me{Kind: "guest", Guest: guestInfo(*c.Guest)})
		return
	}
	httpjson.Write(w, http.StatusOK, Me{Kind: "account", Account: c.Account})
}

// Balance is GET /v1/balance.
type Balance struct {
	Account         string `json:"account"`
	Status          string `json:"status"`
	SuspendedReason string `json:"suspended_reason,omitempty"`
	Credits         int64  `json:"credits_micros"`
	Unbilled        int64  `json:"unbilled_micros"`
	CreditCeiling   int64  `json:"credit_ceiling_micros"`
	Tier            string `json:"tier"`
}

func (s *Server) balance(w http.ResponseWriter, r *http.Request, c Caller) {
	if !accountOnly(w, c) {
		return
	}
	a, err := s.Store.AccountByID(r.Context(), c.Account)
	if err != nil {
		httpjson.Error(w, http.StatusServiceUnavailable, "unavailable", "the ledger is unreachable")
		return
	}
	httpjson.Write(w, http.StatusOK, Balance{Account: a.ID, Status: a.Status, SuspendedReason: a.SuspendedReason,
		Credits: int64(a.Credits), Unbilled: int64(a.Unbilled), CreditCeiling: int64(a.CreditCeiling), Tier: a.Tier})
}

// UsageEvent is one charged inference call in GET /v1/usage.
type UsageEvent struct {
	EventID          string    `json:"event_id"`
	Project          string    `json:"project"`
	GuestSession     string    `json:"guest_session,omitempty"`
	Model            string    `json:"model"`
	PromptTokens     int64     `json:"prompt_tokens"`
	CompletionTokens int64     `json:"completion_tokens"`
	Charged          int64     `json:"charged_micros"`
	CreditsApplied   int64     `json:"credits_applied_micros"`
	At               time.Time `json:"at"`
}

func (s *Server) usage(w http.ResponseWriter, r *http.Request, c Caller) {
	if !accountOnly(w, c) {
		return
	}
	since := 24 * time.Hour
	if v := r.URL.Query().Get("since"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 || d > 366*24*time.Hour {
			httpjson.Error(w, http.StatusBadRequest, "invalid_request", "since must be a duration such as 24h, at most 8784h")
			return
		}
		since = d
	}
	limit := 100
	if v := r.URL.Query().Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 1000 {
			httpjson.Error(w, http.StatusBadRequest, "invalid_request", "limit must be 1 to 1000")
			return
		}
		limit = n
	}
	rows, err := s.Store.UsageSince(r.Context(), c.Account, time.Now().Add(-since), limit)
	if err != nil {
		httpjson.Error(w, http.StatusServiceUnavailable, "unavailable", "the ledger is unreachable")
		return
	}
	out := make([]UsageEvent, 0, len(rows))
	for _, u := range rows {
		out = append(out, UsageEvent{EventID: u.Usage.EventID, Project: u.Project, GuestSession: u.GuestSession, Model: u.Model,
			PromptTokens: u.PromptTokens, CompletionTokens: u.CompletionTokens, Charged: int64(u.Charged),
			CreditsApplied: int64(u.CreditsApplied), At: u.CreatedAt})
	}
	httpjson.Write(w, http.StatusOK, map[string]any{"account": c.Account, "events": out})
}

// InviteRequest is POST /v1/invites's body.
type InviteRequest struct {
	Project string `json:"project"`
	Role    string `json:"role"`
	Quota   string `json:"quota"`   // dollars, e.g. "1.00"
	Expires string `json:"expires"` // a duration, e.g. "24h"
}

// TokenInfo is an API token as the API shows it: never the token itself.
// Current marks the token the request carried, or its browser session was
// opened with.
type TokenInfo struct {
	ID        string     `json:"id"`
	Name      string     `json:"name"`
	CreatedAt time.Time  `json:"created_at"`
	RevokedAt *time.Time `json:"revoked_at,omitempty"`
	Current   bool       `json:"current,omitempty"`
}

func tokenInfo(t store.APIToken, c Caller) TokenInfo {
	return TokenInfo{ID: t.ID, Name: t.Name, CreatedAt: t.CreatedAt, RevokedAt: t.RevokedAt, Current: c.TokenID != "" && t.ID == c.TokenID}
}

// listTokens is GET /v1/tokens: the caller's account's API tokens.
func (s *Server) listTokens(w http.ResponseWriter, r *http.Request, c Caller) {
	if !accountOnly(w, c) {
		return
	}
	ts, err := s.Store.APITokens(r.Context(), c.Account)
	if errors.Is(err, store.ErrNotFound) {
		httpjson.Error(w, http.StatusNotFound, "not_found", "no account "+c.Account)
		return
	}
	if err != nil {
		httpjson.Error(w, http.StatusServiceUnavailable, "unavailable", "the token store is unreachable")
		return
	}
	out := make([]TokenInfo, 0, len(ts))
	for _, t := range ts {
		out = append(out, tokenInfo(t, c))
	}
	httpjson.Write(w, http.StatusOK, map[string]any{"tokens": out})
}

// revokeToken is POST /v1/tokens/{id}/revoke: the caller revokes one of its
// account's API tokens, the one it is using too. The id is the one GET
// /v1/tokens lists; a token itself is refused, so that it never travels in
// a URL.
func (s *Server) revokeToken(w http.ResponseWriter, r *http.Request, c Caller) {
	if !accountOnly(w, c) {
		return
	}
	id := r.PathValue("id")
	if strings.HasPrefix(id, store.TokenPrefix) {
		httpjson.Error(w, http.StatusBadRequest, "invalid_request", "give the token's id as GET /v1/tokens lists it, not the token")
		return
	}
	t, err := s.Store.RevokeAPIToken(r.Context(), c.Account, id)
	switch {
	case errors.Is(err, store.ErrBadTokenID):
		httpjson.Error(w, http.StatusBadRequest, "invalid_request", "a token id is 12 hex digits, as GET /v1/tokens lists it")
		return
	case errors.Is(err, store.ErrTokenNotFound):
		httpjson.Error(w, http.StatusNotFound, "not_found", "no token "+id)
		return
	case errors.Is(err, store.ErrAmbiguousTokenID):
		httpjson.Error(w, http.StatusConflict, "ambiguous_id", "token id "+id+" names more than one of your tokens and none was revoked: an operator can revoke it by the token itself (si account revoke-token)")
		return
	}
	if err != nil {
		httpjson.Error(w, http.StatusServiceUnavailable, "unavailable", "the token store is unreachable")
		return
	}
	httpjson.Write(w, http.StatusOK, tokenInfo(t, c))
}

// InviteInfo is an invite as the API shows it; Link and Token only when created.
type InviteInfo struct {
	ID        string    `json:"id"`
	Project   string    `json:"project"`
	Role      string    `json:"role"`
	Quota     int64     `json:"quota_micros"`
	State     string    `json:"state"`
	ExpiresAt time.Time `json:"expires_at"`
	Link      string    `json:"link,omitempty"`
	Token     string    `json:"token,omitempty"`
}

func inviteInfo(i store.Invite) InviteInfo {
	return InviteInfo{ID: i.ID, Project: i.Project, Role: i.Role, Quota: int64(i.Quota), State: i.State, ExpiresAt: i.ExpiresAt}
}

// baseURL is where users reach this server: PublicURL, else the request's host.
func (s *Server) baseURL(r *http.Request) string {
	if s.PublicURL != "" {
		return strings.TrimRight(s.PublicURL, "/")
	}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	return scheme + "://" + r.Host
}

func (s *Server) createInvite(w http.ResponseWriter, r *http.Request, c Caller) {
	if !accountOnly(w, c) {
		return
	}
	var req InviteRequest
	if !decode(w, r, &req) {
		return
	}
	if req.Role == "" {
		req.Role = store.RoleViewer
	}
	if req.Role != store.RoleViewer && req.Role != store.RoleEditor {
		httpjson.Error(w, http.StatusBadRequest, "invalid_request", "role must be viewer or editor")
		return
	}
	q, err := money.Parse(req.Quota)
	if err != nil || q <= 0 {
		httpjson.Error(w, http.StatusBadRequest, "invalid_request", "quota must be a positive dollar amount such as \"1.00\"")
		return
	}
	expires := 24 * time.Hour
	if req.Expires != "" {
		if expires, err = time.ParseDuration(req.Expires); err != nil || expires <= 0 || expires > 30*24*time.Hour {
			httpjson.Error(w, http.StatusBadRequest, "invalid_request", "expires must be a duration between 1s and 720h")
			return
		}
	}
	if err := store.ValidProjectID(req.Project); err != nil {
		httpjson.Error(w, http.StatusBadRequest, "invalid_request", err.Error())
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
	defer cancel()
	tok, inv, err := runner.StartInvite(ctx, s.Store, s.Temporal, store.Invite{Project: req.Project, Host: c.Account,
		Role: req.Role, Quota: q, ExpiresAt: time.Now().Add(expires).UTC()})
	switch {
	case errors.Is(err, store.ErrDefaultProject):
		httpjson.Error(w, http.StatusBadRequest, "invalid_request", err.Error())
		return
	case errors.Is(err, store.ErrNotFound):
		httpjson.Error(w, http.StatusNotFound, "not_found", "no project "+req.Project)
		return
	case errors.Is(err, store.ErrForbidden):
		httpjson.Error(w, http.StatusForbidden, "forbidden", err.Error())
		return
	case err != nil:
		httpjson.Error(w, http.StatusServiceUnavailable, "unavailable", "could not create the invite: "+err.Error())
		return
	}
	info := inviteInfo(inv)
	info.Token, info.Link = tok, s.baseURL(r)+"/join/"+tok
	httpjson.Write(w, http.StatusCreated, info)
}

func (s *Server) listInvites(w http.ResponseWriter, r *http.Request, c Caller) {
	if !accountOnly(w, c) {
		return
	}
	invs, err := s.Store.Invites(r.Context(), c.Account)
	if err != nil {
		httpjson.Error(w, http.StatusServiceUnavailable, "unavailable", "the invite store is unreachable")
		return
	}
	out := make([]InviteInfo, 0, len(invs))
	for _, i := range invs {
		out = append(out, inviteInfo(i))
	}
	httpjson.Write(w, http.StatusOK, map[string]any{"invites": out})
}

func (s *Server) revokeInvite(w http.ResponseWriter, r *http.Request, c Caller) {
	if !accountOnly(w, c) {
		return
	}
	id := r.PathValue("id")
	inv, err := s.Store.RevocableInvite(r.Context(), id, c.Account)
	if errors.Is(err, store.ErrNotFound) {
		httpjson.Error(w, http.StatusNotFound, "not_found", "no invite "+id)
		return
	}
	if err != nil {
		httpjson.Error(w, http.StatusServiceUnavailable, "unavailable", "the invite store is unreachable")
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
	defer cancel()
	state, err := runner.RevokeInvite(ctx, s.Temporal, id)
	if errors.Is(err, runner.ErrNotPending) {
		httpjson.Error(w, http.StatusConflict, "invite_closed", "invite "+id+" is "+inv.State+"; only a pending invite can be revoked")
		return
	}
	if err != nil {
		httpjson.Error(w, http.StatusServiceUnavailable, "unavailable", "the revoke did not finish: "+err.Error())
		return
	}
	inv.State = state
	httpjson.Write(w, http.StatusOK, inviteInfo(inv))
}

// projectGuests lists a project's guests and their quotas, to its owners and editors.
func (s *Server) projectGuests(w http.ResponseWriter, r *http.Request, c Caller) {
	project := r.PathValue("project")
	role := ""
	if c.Guest == nil {
		role, _ = s.Store.ProjectRole(r.Context(), project, c.Account)
	}
	if !store.CanWrite(role) {
		httpjson.Error(w, http.StatusNotFound, "not_found", "no project "+project+" whose guests you may see")
		return
	}
	gs, err := s.Store.ProjectGuests(r.Context(), project)
	if err != nil {
		httpjson.Error(w, http.StatusServiceUnavailable, "unavailable", "the guest store is unreachable")
		return
	}
	out := make([]*GuestInfo, 0, len(gs))
	for _, g := range gs {
		out = append(out, guestInfo(g))
	}
	httpjson.Write(w, http.StatusOK, map[string]any{"project": project, "guests": out})
}

// revokeGuest ends a guest session at once, for the session's host or an
// owner or editor of its project; the guest's cookie stops working and the
// workflows it started may not start again.
func (s *Server) revokeGuest(w http.ResponseWriter, r *http.Request, c Caller) {
	if !accountOnly(w, c) {
		return
	}
	id := r.PathValue("id")
	g, err := s.Store.RevocableGuestSession(r.Context(), id, c.Account)
	if errors.Is(err, store.ErrNotFound) {
		httpjson.Error(w, http.StatusNotFound, "not_found", "no guest session "+id+" of a project you own or edit")
		return
	}
	if err != nil {
		httpjson.Error(w, http.StatusServiceUnavailable, "unavailable", "the guest store is unreachable")
		return
	}
	if _, err := s.Store.RevokeGuestSession(r.Context(), g.ID); err != nil {
		httpjson.Error(w, http.StatusServiceUnavailable, "unavailable", "the guest store is unreachable")
		return
	}
	if g, err = s.Store.GuestSessionByID(r.Context(), g.ID); err != nil {
		httpjson.Error(w, http.StatusServiceUnavailable, "unavailable", "the guest store is unreachable")
		return
	}
	httpjson.Write(w, http.StatusOK, guestInfo(g))
}

// signIn opens a browser session for the account an API token names and
// puts the session's id (not the token) in an HTTP-only cookie.
func (s *Server) signIn(w http.ResponseWriter, r *http.Request) {
	if !s.sameOrigin(r) {
		crossOrigin(w)
		return
	}
	var req struct {
		Token string `json:"token"`
	}
	if !decode(w, r, &req) {
		return
	}
	account, err := s.startBrowserSession(w, r, strings.TrimSpace(req.Token))
	if errors.Is(err, store.ErrNotFound) {
		httpjson.Error(w, http.StatusUnauthorized, "unauthenticated", "unknown or revoked API token")
		return
	}
	if err != nil {
		httpjson.Error(w, http.StatusServiceUnavailable, "unavailable", "the session store is unreachable")
		return
	}
	httpjson.Write(w, http.StatusOK, Me{Kind: "account", Account: account})
}

// startBrowserSession opens a browser session for the account of the API
// token (the session ends when the token is revoked) and sets its cookie.
func (s *Server) startBrowserSession(w http.ResponseWriter, r *http.Request, token string) (string, error) {
	account, id, err := s.Store.CreateBrowserSession(r.Context(), token)
	if err != nil {
		return "", err
	}
	http.SetCookie(w, &http.Cookie{Name: SessionCookie, Value: id, Path: "/", HttpOnly: true, Secure: s.secureCookies(r),
		SameSite: http.SameSiteStrictMode, MaxAge: int(store.BrowserSessionLifetime.Seconds())})
	return account, nil
}

// signOut revokes the browser session and the guest session the request's
// cookies hold, then clears the cookies: a copy of either cookie no longer
// works.
func (s *Server) signOut(w http.ResponseWriter, r *http.Request) {
	if !s.sameOrigin(r) {
		crossOrigin(w)
		return
	}
	if c, err := r.Cookie(SessionCookie); err == nil {
		if err := s.Store.RevokeBrowserSession(r.Context(), c.Value); err != nil {
			httpjson.Error(w, http.StatusServiceUnavailable, "unavailable", "the session store is unreachable; you are still signed in")
			return
		}
	}
	if g, err := s.guest(r); err == nil {
		if _, err := s.Store.RevokeGuestSession(r.Context(), g.ID); err != nil {
			httpjson.Error(w, http.StatusServiceUnavailable, "unavailable", "the session store is unreachable; you are still signed in")
			return
		}
	}
	secure := s.secureCookies(r)
	http.SetCookie(w, &http.Cookie{Name: SessionCookie, Value: "", Path: "/", HttpOnly: true, Secure: secure, MaxAge: -1})
	http.SetCookie(w, &http.Cookie{Name: GuestCookie, Value: "", Path: "/", HttpOnly: true, Secure: secure, MaxAge: -1})
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) asset(w http.ResponseWriter, r *http.Request) {
	serveAsset(w, r.PathValue("file"))
}

func (s *Server) openAPI(w http.ResponseWriter, r *http.Request) {
	b, _ := assets.ReadFile("openapi.json")
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(b)
}

func serveAsset(w http.ResponseWriter, name string) {
	b, err := assets.ReadFile("web/" + path.Base(name))
	if err != nil || strings.HasPrefix(path.Base(name), ".") {
		httpjson.Error(w, http.StatusNotFound, "not_found", "no asset "+name)
		return
	}
	w.Header().Set("Content-Type", mime.TypeByExtension(path.Ext(name)))
	w.Header().Set("Cache-Control", "no-cache")
	_, _ = w.Write(b)
}
