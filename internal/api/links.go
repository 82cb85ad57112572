package api

import (
	"context"
	"errors"
	"html/template"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/superinstance/mesh/internal/httpjson"
	"github.com/superinstance/mesh/internal/runner"
	"github.com/superinstance/mesh/internal/store"
	"github.com/superinstance/mesh/workflows"
)

// Limiter bounds the requests each client address may make: a token bucket
// per address. It keeps at most MaxClients buckets and starts over when full.
type Limiter struct {
	Rate       rate.Limit
	Burst      int
	MaxClients int
	mu         sync.Mutex
	clients    map[string]*rate.Limiter
}

// DefaultLinkLimit allows a burst of 10 link requests per address, then one
// every 6 seconds.
func DefaultLinkLimit() *Limiter {
	return &Limiter{Rate: rate.Every(6 * time.Second), Burst: 10, MaxClients: 100_000}
}

// Allow takes a token from addr's bucket.
func (l *Limiter) Allow(addr string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.clients == nil || len(l.clients) >= l.MaxClients {
		l.clients = map[string]*rate.Limiter{}
	}
	b := l.clients[addr]
	if b == nil {
		b = rate.NewLimiter(l.Rate, l.Burst)
		l.clients[addr] = b
	}
	return b.Allow()
}

// Wrap refuses requests over the limit with 429.
func (l *Limiter) Wrap(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		host, _, err := net.SplitHostPort(r.RemoteAddr)
		if err != nil {
			host = r.RemoteAddr
		}
		if !l.Allow(host) {
			w.Header().Set("Retry-After", "6")
			p := problem{Status: http.StatusTooManyRequests, Code: "rate_limited", Title: "Too many requests",
				What: "Too many link requests came from this address", Do: "Wait a few seconds, then try again."}
			if wantsHTML(r) {
				writeErrorPage(w, p)
				return
			}
			httpjson.Error(w, http.StatusTooManyRequests, "rate_limited", "too many link requests from this address; try again shortly")
			return
		}
		h(w, r)
	}
}

// prefetch reports whether a browser fetched the page ahead of a click
// (which is no one opening it).
func prefetch(r *http.Request) bool {
	for _, h := range []string{"Sec-Purpose", "Purpose", "X-Moz"} {
		if strings.Contains(strings.ToLower(r.Header.Get(h)), "prefetch") {
			return true
		}
	}
	return false
}

// wantsHTML reports whether the client is a browser rather than an API client.
func wantsHTML(r *http.Request) bool { return strings.Contains(r.Header.Get("Accept"), "text/html") }

// JoinReply is POST /join/{token}'s JSON answer. GuestSession is the
// session's secret (the si_guest cookie's value), shown to the guest alone;
// SessionID is its handle.
type JoinReply struct {
	GuestSession string    `json:"guest_session"`
	SessionID    string    `json:"session_id"`
	Project      string    `json:"project"`
	Role         string    `json:"role"`
	Host         string    `json:"host"`
	Remaining    int64     `json:"remaining_micros"`
	ExpiresAt    time.Time `json:"expires_at"`
	PageURL      string    `json:"page_url"`
}

// InviteOffer is GET /join/{token}'s JSON answer: what accepting gives.
type InviteOffer struct {
	Project   string    `json:"project"`
	Role      string    `json:"role"`
	Host      string    `json:"host"`
	Quota     int64     `json:"quota_micros"`
	ExpiresAt time.Time `json:"expires_at"`
	Accept    string    `json:"accept"`
}

// openInvite finds the open invite a link names, answering the error
// itself: a page to a browser, the JSON error to an API client.
func (s *Server) openInvite(w http.ResponseWriter, r *http.Request) (store.Invite, bool) {
	inv, err := s.Store.InviteByToken(r.Context(), r.PathValue("token"))
	if errors.Is(err, store.ErrNotFound) {
		s.answer(w, wantsHTML(r), problem{Status: http.StatusNotFound, Code: "invalid_token", Title: "This invite link is not valid",
			What: "This invite link is not valid.", Do: "Check that you copied the whole link, or ask the host for a new one."})
		return inv, false
	}
	if err != nil {
		s.answer(w, wantsHTML(r), unavailable("the invite store"))
		return inv, false
	}
	if reason := inv.ClosedReason(time.Now()); reason != "" {
		s.answer(w, wantsHTML(r), inviteClosed(reason))
		return inv, false
	}
	return inv, true
}

// inviteClosed is a used, revoked or expired invite; reason says which and
// what to do.
func inviteClosed(reason string) problem {
	return problem{Status: http.StatusGone, Code: "invite_closed", Title: "This invite link cannot be used any more", What: reason,
		Do: "If you accepted it already, open the project from the browser you accepted it in; otherwise ask the host for a new invite."}
}

// unavailable is a store or service the request needs that does not answer.
func unavailable(what string) problem {
	return problem{Status: http.StatusServiceUnavailable, Code: "unavailable", Title: "Something is down",
		What: what + " is unreachable.", Do: "Try again in a minute; if it lasts, tell the operator."}
}

// joinPage shows the invite with a button that accepts it (a POST). It
// consumes nothing: a link preview or a prefetch leaves the invite open.
func (s *Server) joinPage(w http.ResponseWriter, r *http.Request) {
	inv, ok := s.openInvite(w, r)
	if !ok {
		return
	}
	// The funnel's "opened" step; a lost mark costs a count, not the page.
	if !prefetch(r) {
		_ = s.Store.MarkInviteOpened(r.Context(), inv.ID)
	}
	if !wantsHTML(r) {
		httpjson.Write(w, http.StatusOK, InviteOffer{Project: inv.Project, Role: inv.Role, Host: inv.Host, Quota: int64(inv.Quota),
			ExpiresAt: inv.ExpiresAt, Accept: "POST " + r.URL.Path})
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Referrer-Policy", "same-origin") // no-referrer would make the form POST's Origin "null"
	_ = pages.ExecuteTemplate(w, "join", map[string]any{"Title": "Invite to " + inv.Project, "I": inv})
}

// join accepts an invite: the invite's workflow opens a guest session,
// whose secret goes into an HTTP-only cookie. A browser is sent on to the
// project's page; an API client gets JSON. A used, revoked, expired or
// unknown token is refused with the reason.
func (s *Server) join(w http.ResponseWriter, r *http.Request) {
	if !s.sameOrigin(r) {
		crossOrigin(w)
		return
	}
	inv, ok := s.openInvite(w, r)
	if !ok {
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 15*time.Second)
	defer cancel()
	g, secret, err := runner.JoinInvite(ctx, s.Store, s.Temporal, inv.ID)
	var ie *store.InviteError
	if errors.As(err, &ie) {
		s.answer(w, wantsHTML(r), inviteClosed(ie.Reason))
		return
	}
	if err != nil {
		httpjson.Error(w, http.StatusServiceUnavailable, "unavailable", "could not accept the invite: "+runner.Cause(err).Error())
		return
	}
	http.SetCookie(w, &http.Cookie{Name: GuestCookie, Value: secret, Path: "/", HttpOnly: true, Secure: s.secureCookies(r),
		SameSite: http.SameSiteLaxMode, MaxAge: max(int(time.Until(g.ExpiresAt).Seconds()), 1)})
	page := "/p/" + g.Project
	if wantsHTML(r) {
		http.Redirect(w, r, page, http.StatusSeeOther)
		return
	}
	httpjson.Write(w, http.StatusOK, JoinReply{GuestSession: secret, SessionID: g.ID, Project: g.Project, Role: g.Role, Host: g.Host,
		Remaining: int64(g.Remaining), ExpiresAt: g.ExpiresAt, PageURL: page})
}

var pages = template.Must(template.New("").Parse(`
{{define "head"}}<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<title>{{.Title}} · SuperInstance</title><link rel="stylesheet" href="/assets/style.css">
<style>form input{width:auto;min-width:14rem}form button{margin-left:.3rem}</style></head>
<body><header><a class="brand" href="/">SuperInstance</a></header><main>{{end}}
{{define "join"}}{{template "head" .}}
<h1>Join project {{.I.Project}}</h1>
<p><b>{{.I.Host}}</b> invites you to the project <b>{{.I.Project}}</b> as a <b>{{.I.Role}}</b>,
with up to {{.I.Quota}} of usage billed to {{.I.Host}}. The invite can be used once and expires
{{.I.ExpiresAt.Format "2 Jan 2006 15:04 MST"}}.</p>
<form method="post"><button id="join" type="submit">Join {{.I.Project}}</button></form>
</main></body></html>{{end}}
{{define "handover"}}{{template "head" .}}
<h1>Take over project {{.H.Project}}</h1>
{{if .Error}}<p class="error">{{.Error}}</p>{{end}}
{{if .Done}}<p id="result">{{.Done}}</p>
{{with .O}}{{if .Renamed}}<p id="renamed">Your copy is named <b>{{.CopyName}}</b> because {{.RenameReason}}.</p>{{end}}{{end}}
{{if .PayURL}}<p id="payment">Your plan{{with .O}}{{if .Intro}} ({{.Intro}} for the first year, then {{.Standard}} a year){{end}}{{end}} starts once you
give a payment method on Stripe's own page; until then nothing is charged to you and {{.H.Host}} pays as before.</p>
<p><a id="pay" href="{{.PayURL}}">Give a payment method on Stripe</a> <span class="muted">(the link works for 24 hours; it is in your email too)</span></p>
{{else if .PayPending}}<p id="payment" class="muted">Your payment page is being prepared: it will be in your email, and on this page
when you open the link again.</p>{{end}}
{{if .Token}}<p>Your API token, shown this once (you are signed in on this browser already):</p>
<p><code id="api-token">{{.Token}}</code></p><p class="muted">Use it with <code>si login</code> or the API; keep it secret.</p>{{end}}
{{if .SignedIn}}<p><a id="dashboard" href="/">Go to your account</a></p>{{end}}
{{else}}
<p>{{.H.Host}} is handing the project <b>{{.H.Project}}</b> over to {{.H.Recipient}}. The offer expires {{.H.ExpiresAt.Format "2 Jan 2006 15:04 MST"}}.</p>
{{with .O}}<h2>What you get</h2>
<ul id="gets">
<li>Your own copy of the project, named <b id="copy-name">{{.CopyName}}</b>{{if .Renamed}} <span id="renamed">(not {{$.H.Project}}: {{.RenameReason}})</span>{{end}}.</li>
<li id="adapters">{{len .Adapters}} adapter{{if ne (len .Adapters) 1}}s{{end}}{{if .Adapters}}:{{end}}
{{if .Adapters}}<table><tr><th>adapter</th><th>base model</th><th>size</th></tr>
{{range .Adapters}}<tr><td>{{.Name}}</td><td>{{.BaseModel}}</td><td>{{.Size}}</td></tr>{{end}}</table>{{end}}</li>
<li id="stays">The host keeps the original project, its members and guests and its run history; your copy starts with you as its only member.</li>
</ul>
<h2>What you pay</h2>
{{if .Intro}}<p id="price"><b>{{.Intro}}</b> for the first year, then <b>{{.Standard}}</b> a year. The plan starts once you give a payment
method on Stripe's own page, after you accept; nothing is charged before.</p>
{{else}}<p id="price">A subscription at an introductory price, starting once you give a payment method on Stripe's own page.</p>{{end}}
<p class="muted">Your own usage is billed to your account, as for every account.</p>
{{end}}
{{if .SignedIn}}<form method="post"><p>Signed in as <b id="signed-in">{{.SignedIn}}</b>.</p>
<button name="answer" value="accept">Accept as {{.SignedIn}}</button> <button name="answer" value="decline">Decline</button></form>
{{else}}<form method="post"><p>New to SuperInstance? Choose a name for your account (its email will be {{.H.Recipient}}):</p>
<label>New account <input id="account" name="account" required pattern="[a-z0-9][a-z0-9._-]{0,62}"></label>
<button id="accept" name="answer" value="accept">Create it and accept</button> <button name="answer" value="decline" formnovalidate>Decline</button></form>
<form method="post"><p>Already have an account with {{.H.Recipient}}? Accept with one of its API tokens:</p>
<label>API token <input name="token" type="password" required autocomplete="off"></label>
<button name="answer" value="accept">Sign in and accept</button></form>{{end}}
{{end}}
</main></body></html>{{end}}`))

// handoverFor finds the handover a link names, answering the error
// itself: a page to a browser, the JSON error to an API client.
func (s *Server) handoverFor(w http.ResponseWriter, r *http.Request) (store.Handover, bool) {
	h, err := s.Store.HandoverByToken(r.Context(), r.PathValue("token"))
	if errors.Is(err, store.ErrNotFound) {
		s.answer(w, wantsHTML(r), problem{Status: http.StatusNotFound, Code: "invalid_token", Title: "This handover link is not valid",
			What: "This handover link is not valid.", Do: "Use the newest link in your email, copied whole."})
		return h, false
	}
	if err != nil {
		s.answer(w, wantsHTML(r), unavailable("the handover store"))
		return h, false
	}
	if reason := h.ClosedReason(time.Now()); reason != "" {
		s.answer(w, wantsHTML(r), problem{Status: http.StatusGone, Code: "handover_closed", Title: "This handover link cannot be used any more",
			What: reason, Do: "If you accepted it, sign in to your account to find the project; otherwise ask the sender to start a new handover."})
		return h, false
	}
	return h, true
}

// handoverView is what the handover page shows besides the offer.
type handoverView struct {
	Error, Done string
	// SignedIn is the account the request is signed in as, if any.
	SignedIn string
	// Token is a new account's API token, shown once.
	Token string
	// PayURL is the new owner's payment page; PayPending says it is
	// still being made.
	PayURL     string
	PayPending bool
}

// handoverOffer is what the recipient gets and pays, from the snapshot.
type handoverOffer struct {
	CopyName, RenameReason string
	Renamed                bool
	Adapters               []store.SnapshotAdapter
	// Intro and Standard are the plan's prices in dollars and cents
	// (empty for a snapshot taken before offers carried a price).
	Intro, Standard string
}

func (s *Server) offer(ctx context.Context, h store.Handover) *handoverOffer {
	o := &handoverOffer{CopyName: h.NewProject}
	if snap, err := s.Store.HandoverSnapshot(ctx, h.ID); err == nil {
		o.Adapters = snap.Adapters
		if snap.Plan != nil {
			o.Intro, o.Standard = snap.Plan.Intro.Dollars(), snap.Plan.Standard.Dollars()
		}
	}
	heldBy := h.Host
	if o.CopyName == "" {
		name, held, err := s.Store.FreeCloneName(ctx, h.Project)
		if err != nil {
			name = h.Project
		}
		o.CopyName, heldBy = name, held
	}
	if o.CopyName != h.Project {
		o.Renamed, o.RenameReason = true, store.RenameReason(h.Project, heldBy, h.Host, h.NewOwner)
	}
	return o
}

func (s *Server) renderHandover(w http.ResponseWriter, r *http.Request, status int, h store.Handover, v handoverView) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Referrer-Policy", "same-origin") // no-referrer would make the form POST's Origin "null"
	w.WriteHeader(status)
	_ = pages.ExecuteTemplate(w, "handover", map[string]any{"Title": "Handover of " + h.Project, "H": h,
		"O": s.offer(r.Context(), h), "Error": v.Error, "Done": v.Done, "SignedIn": v.SignedIn, "Token": v.Token,
		"PayURL": v.PayURL, "PayPending": v.PayPending})
}

// accepted is the page of an accepted handover for its new owner: the
// project, and the payment page while the plan waits for one. It waits up
// to wait for the workflow to make that page.
func (s *Server) accepted(ctx context.Context, id string, wait time.Duration) (store.Handover, handoverView) {
	deadline := time.Now().Add(wait)
	for {
		h, err := s.Store.HandoverByID(ctx, id)
		if err != nil {
			return h, handoverView{Error: "the handover store is unreachable: open the link again shortly"}
		}
		v := handoverView{SignedIn: h.NewOwner}
		switch h.State {
		case store.HandoverAwaitingPayment:
			v.Done = "The project " + h.NewProject + " is yours, as the account " + h.NewOwner + "."
			if _, open, ok, err := s.Store.PaymentSessions(ctx, id, time.Now()); err == nil && ok {
				v.PayURL = open.URL
				return h, v
			}
		case store.HandoverCompleted:
			v.Done = "The project " + h.NewProject + " is yours, as the account " + h.NewOwner + ", and your plan is in place."
			return h, v
		case store.HandoverFailed:
			v.Done, v.SignedIn = "The handover could not be completed and was undone: "+h.Failure, ""
			return h, v
		default:
			v.Done = "Accepted. The project and its adapters are being copied to the account " + h.NewOwner + "."
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			v.PayPending = true
			return h, v
		}
		select {
		case <-ctx.Done():
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// signedInAccount is the account a request is signed in as (API token or
// browser session), or "" when it is not.
func (s *Server) signedInAccount(r *http.Request) string {
	c, _, err := s.identify(r)
	if err != nil || c.Guest != nil {
		return ""
	}
	return c.Account
}

// handoverPage shows the offer with an accept form: as the signed-in
// account, or as a new account for the recipient.
func (s *Server) handoverPage(w http.ResponseWriter, r *http.Request) {
	// The new owner, signed in, opening their link again: where it stands.
	if h, err := s.Store.HandoverByToken(r.Context(), r.PathValue("token")); err == nil && h.NewOwner != "" &&
		h.NewOwner == s.signedInAccount(r) {
		h, v := s.accepted(r.Context(), h.ID, 0)
		s.renderHandover(w, r, http.StatusOK, h, v)
		return
	}
	if h, ok := s.handoverFor(w, r); ok {
		// The funnel's "opened" step; a lost mark costs a count, not the page.
		if !prefetch(r) {
			_ = s.Store.MarkHandoverOpened(r.Context(), h.ID)
		}
		s.renderHandover(w, r, http.StatusOK, h, handoverView{SignedIn: s.signedInAccount(r)})
	}
}

// handoverAnswer accepts or declines the handover. Accepting takes the
// project as the recipient: the account signed in (an API token in the
// form, the Authorization header or a browser session) if its email is the
// one the handover was sent to; otherwise a new account, created now with
// that email, which is then signed in here and shown an API token once.
// Holding the link alone never gives the project to an existing account.
func (s *Server) handoverAnswer(w http.ResponseWriter, r *http.Request) {
	if !s.sameOrigin(r) {
		crossOrigin(w)
		return
	}
	h, ok := s.handoverFor(w, r)
	if !ok {
		return
	}
	if strings.HasPrefix(r.Header.Get("Content-Type"), "application/json") {
		s.handoverAnswerJSON(w, r, h)
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, 4<<10)
	if err := r.ParseForm(); err != nil {
		httpjson.Error(w, http.StatusBadRequest, "invalid_form", "the form could not be read")
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 15*time.Second)
	defer cancel()
	signedIn := s.signedInAccount(r)
	switch r.PostForm.Get("answer") {
	case "decline":
		if err := s.Temporal.SignalWorkflow(ctx, workflows.HandoverWorkflowID(h.ID), "", workflows.HandoverDeclineSignal, nil); err != nil {
			s.renderHandover(w, r, http.StatusGone, h, handoverView{Error: "this handover is no longer open"})
			return
		}
		s.renderHandover(w, r, http.StatusOK, h, handoverView{Done: "You declined the handover of " + h.Project + "."})
	case "accept":
		req := workflows.HandoverAccept{Account: signedIn}
		if tok := strings.TrimSpace(r.PostForm.Get("token")); tok != "" {
			account, err := s.Store.AccountForToken(r.Context(), tok)
			if err != nil {
				s.renderHandover(w, r, http.StatusUnauthorized, h, handoverView{Error: "That API token is unknown or revoked."})
				return
			}
			req.Account = account
		}
		if req.Account == "" {
			req.Account, req.NewAccount = r.PostForm.Get("account"), true
			if err := store.ValidProjectID(req.Account); err != nil {
				s.renderHandover(w, r, http.StatusBadRequest, h, handoverView{
					Error: "Give a name for your new account: lower-case letters, digits, '.', '_' or '-'."})
				return
			}
		}
		if err := runner.AcceptHandover(ctx, s.Temporal, h.ID, req); err != nil {
			s.renderHandover(w, r, http.StatusConflict, h, handoverView{Error: runner.Cause(err).Error(), SignedIn: signedIn})
			return
		}
		// The new owner's way in: this browser is signed in (a new account
		// is also shown an API token, this once).
		var tok, signInFailed string
		switch {
		case req.NewAccount:
			t, err := s.Store.CreateAPIToken(r.Context(), req.Account, "handover "+h.ID)
			if err == nil {
				tok = t
				_, err = s.startBrowserSession(w, r, t)
			}
			if err != nil {
				signInFailed = " Signing you in failed; ask the operator for an API token for " + req.Account + "."
			}
		case signedIn == "":
			// Accepted with an API token in the form: sign this browser in with it.
			if _, err := s.startBrowserSession(w, r, strings.TrimSpace(r.PostForm.Get("token"))); err != nil {
				signInFailed = " Signing this browser in failed: sign in again with your API token."
			}
		}
		// Wait briefly for the copy and the payment page, so that the
		// page can show it.
		row, v := s.accepted(ctx, h.ID, 10*time.Second)
		if row.ID == "" {
			row = h
		}
		if v.Error != "" {
			v = handoverView{Done: "Accepted. The project and its adapters are being copied to the account " + req.Account +
				"; an email to " + h.Recipient + " will say when it is ready.", SignedIn: req.Account}
		}
		v.Done += signInFailed
		v.Token = tok
		s.renderHandover(w, r, http.StatusOK, row, v)
	default:
		httpjson.Error(w, http.StatusBadRequest, "invalid_form", "answer must be accept or decline")
	}
}
