package api

import (
	"context"
	"errors"
	"fmt"
	"html/template"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"go.temporal.io/api/workflowservice/v1"
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
			httpjson.Error(w, http.StatusTooManyRequests, "rate_limited", "too many link requests from this address; try again shortly")
			return
		}
		h(w, r)
	}
}

// wantsHTML reports whether the client is a browser rather than an API client.
func wantsHTML(r *http.Request) bool { return strings.Contains(r.Header.Get("Accept"), "text/html") }

// JoinReply is GET /join/{token}'s JSON answer.
type JoinReply struct {
	GuestSession string `json:"guest_session"`
	Project      string `json:"project"`
	Role         string `json:"role"`
	Host         string `json:"host"`
	Remaining    int64  `json:"remaining_micros"`
	PageURL      string `json:"page_url"`
}

// join accepts an invite: the invite's workflow opens a guest session, whose
// id goes into an HTTP-only cookie. A browser is sent on to the project's
// page; an API client gets JSON. A used, revoked, expired or unknown token
// is refused with the reason.
func (s *Server) join(w http.ResponseWriter, r *http.Request) {
	inv, err := s.Store.InviteByToken(r.Context(), r.PathValue("token"))
	if errors.Is(err, store.ErrNotFound) {
		httpjson.Error(w, http.StatusNotFound, "invalid_token", "this invite link is not valid: ask the host for a new one")
		return
	}
	if err != nil {
		httpjson.Error(w, http.StatusServiceUnavailable, "unavailable", "the invite store is unreachable")
		return
	}
	if reason := inv.ClosedReason(time.Now()); reason != "" {
		httpjson.Error(w, http.StatusGone, "invite_closed", reason)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 15*time.Second)
	defer cancel()
	g, err := runner.JoinInvite(ctx, s.Store, s.Temporal, inv.ID)
	var ie *store.InviteError
	if errors.As(err, &ie) {
		httpjson.Error(w, http.StatusGone, "invite_closed", ie.Reason)
		return
	}
	if err != nil {
		httpjson.Error(w, http.StatusServiceUnavailable, "unavailable", "could not accept the invite: "+err.Error())
		return
	}
	http.SetCookie(w, &http.Cookie{Name: GuestCookie, Value: g.ID, Path: "/", HttpOnly: true, Secure: r.TLS != nil,
		SameSite: http.SameSiteLaxMode, MaxAge: 30 * 24 * 3600})
	page := "/p/" + g.Project
	if wantsHTML(r) {
		http.Redirect(w, r, page, http.StatusSeeOther)
		return
	}
	httpjson.Write(w, http.StatusOK, JoinReply{GuestSession: g.ID, Project: g.Project, Role: g.Role, Host: g.Host,
		Remaining: int64(g.Remaining), PageURL: page})
}

var pages = template.Must(template.New("").Parse(`
{{define "head"}}<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<title>{{.Title}} · SuperInstance</title>
<style>body{font:16px/1.5 system-ui,sans-serif;max-width:42rem;margin:3rem auto;padding:0 1rem;color:#1b1b1f}
.muted{color:#666}table{border-collapse:collapse;width:100%}td,th{text-align:left;padding:.3rem .5rem;border-bottom:1px solid #ddd}
input,button{font:inherit;padding:.4rem .7rem}.error{color:#a40000}</style></head><body>{{end}}
{{define "project"}}{{template "head" .}}
<meta http-equiv="refresh" content="5">
<h1>Project {{.Project}}</h1>
{{with .Guest}}<p id="guest">You are a <b>{{.Role}}</b> guest of <b>{{.Host}}</b>.
Quota remaining: <b id="remaining">{{.Remaining}}</b> of {{.Quota}}, billed to {{.Host}}.</p>{{end}}
<h2>Running now</h2>
{{if .Running}}<ul id="running">{{range .Running}}<li><a href="/c/{{.}}">{{.}}</a> (live)</li>{{end}}</ul>
{{else}}<p class="muted">Nothing is running; this page refreshes itself.</p>{{end}}
<h2>Recent runs</h2>
{{if .Runs}}<table><tr><th>run</th><th>status</th><th>score</th><th>answer</th></tr>
{{range .Runs}}<tr><td><a href="/c/{{.WorkflowID}}">{{.WorkflowID}}</a></td><td>{{.Status}}</td><td>{{printf "%.2f" .Score}}</td><td>{{.Answer}}</td></tr>{{end}}
</table>{{else}}<p class="muted">No runs yet.</p>{{end}}
</body></html>{{end}}
{{define "handover"}}{{template "head" .}}
<h1>Take over project {{.H.Project}}</h1>
{{if .Error}}<p class="error">{{.Error}}</p>{{end}}
{{if .Done}}<p id="result">{{.Done}}</p>{{else}}
<p>{{.H.Host}} is handing the project <b>{{.H.Project}}</b> over to {{.H.Recipient}}: a copy of it with
{{.Adapters}} adapter{{if ne .Adapters 1}}s{{end}}, owned by you, with a subscription at an introductory price.
The offer expires {{.H.ExpiresAt.Format "2 Jan 2006 15:04 MST"}}.</p>
<form method="post"><label>Your account <input name="account" required pattern="[a-z0-9][a-z0-9._-]{0,62}"></label>
<button name="answer" value="accept">Accept</button> <button name="answer" value="decline" formnovalidate>Decline</button></form>
{{end}}
</body></html>{{end}}`))

// projectPage shows a project to a guest of it (with their remaining quota)
// or to a member who sends a token: its recent runs.
func (s *Server) projectPage(w http.ResponseWriter, r *http.Request) {
	project := r.PathValue("project")
	var guest *store.GuestSession
	if g, err := s.guest(r); err == nil && g.Project == project {
		guest = g
	} else if tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok {
		account, err := s.Store.AccountForToken(r.Context(), strings.TrimSpace(tok))
		if err == nil {
			_, err = s.Store.ProjectRole(r.Context(), project, account)
		}
		if err != nil {
			httpjson.Error(w, http.StatusNotFound, "not_found", "no project "+project)
			return
		}
	} else {
		httpjson.Error(w, http.StatusNotFound, "not_found", "no project "+project+": open the invite link again")
		return
	}
	runs, err := s.Store.RecentRuns(r.Context(), project, 20)
	if err != nil {
		httpjson.Error(w, http.StatusServiceUnavailable, "unavailable", "the run store is unreachable")
		return
	}
	running, err := s.running(r.Context(), project)
	if err != nil {
		httpjson.Error(w, http.StatusServiceUnavailable, "unavailable", "Temporal is unreachable")
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	_ = pages.ExecuteTemplate(w, "project", map[string]any{"Title": project, "Project": project, "Guest": guest, "Runs": runs,
		"Running": running})
}

// running lists the ids of a project's consensus runs in progress.
func (s *Server) running(ctx context.Context, project string) ([]string, error) {
	if err := store.ValidProjectID(project); err != nil {
		return nil, nil
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	resp, err := s.Temporal.ListWorkflow(ctx, &workflowservice.ListWorkflowExecutionsRequest{PageSize: 20,
		Query: fmt.Sprintf("WorkflowType = 'ConsensusWorkflow' AND ExecutionStatus = 'Running' AND %s = '%s'",
			workflows.ConsensusProjectAttr.GetName(), project)})
	if err != nil {
		return nil, err
	}
	var ids []string
	for _, e := range resp.Executions {
		ids = append(ids, e.GetExecution().GetWorkflowId())
	}
	return ids, nil
}

// handoverFor finds the handover a link names, answering the error itself.
func (s *Server) handoverFor(w http.ResponseWriter, r *http.Request) (store.Handover, bool) {
	h, err := s.Store.HandoverByToken(r.Context(), r.PathValue("token"))
	if errors.Is(err, store.ErrNotFound) {
		httpjson.Error(w, http.StatusNotFound, "invalid_token", "this handover link is not valid: use the newest link in your email")
		return h, false
	}
	if err != nil {
		httpjson.Error(w, http.StatusServiceUnavailable, "unavailable", "the handover store is unreachable")
		return h, false
	}
	if reason := h.ClosedReason(time.Now()); reason != "" {
		httpjson.Error(w, http.StatusGone, "handover_closed", reason)
		return h, false
	}
	return h, true
}

func (s *Server) renderHandover(w http.ResponseWriter, r *http.Request, status int, h store.Handover, errMsg, done string) {
	adapters := 0
	if snap, err := s.Store.HandoverSnapshot(r.Context(), h.ID); err == nil {
		adapters = len(snap.Adapters)
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	_ = pages.ExecuteTemplate(w, "handover", map[string]any{"Title": "Handover of " + h.Project, "H": h,
		"Adapters": adapters, "Error": errMsg, "Done": done})
}

// handoverPage shows the offer with an accept form.
func (s *Server) handoverPage(w http.ResponseWriter, r *http.Request) {
	if h, ok := s.handoverFor(w, r); ok {
		s.renderHandover(w, r, http.StatusOK, h, "", "")
	}
}

// handoverAnswer accepts (with the account that takes the project) or
// declines the handover.
func (s *Server) handoverAnswer(w http.ResponseWriter, r *http.Request) {
	h, ok := s.handoverFor(w, r)
	if !ok {
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, 4<<10)
	if err := r.ParseForm(); err != nil {
		httpjson.Error(w, http.StatusBadRequest, "invalid_form", "the form could not be read")
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 15*time.Second)
	defer cancel()
	switch r.PostForm.Get("answer") {
	case "decline":
		if err := s.Temporal.SignalWorkflow(ctx, workflows.HandoverWorkflowID(h.ID), "", workflows.HandoverDeclineSignal, nil); err != nil {
			s.renderHandover(w, r, http.StatusGone, h, "this handover is no longer open", "")
			return
		}
		s.renderHandover(w, r, http.StatusOK, h, "", "You declined the handover of "+h.Project+".")
	case "accept":
		account := r.PostForm.Get("account")
		if err := store.ValidProjectID(account); err != nil {
			s.renderHandover(w, r, http.StatusBadRequest, h, "Give an account name: lower-case letters, digits, '.', '_' or '-'.", "")
			return
		}
		if err := runner.AcceptHandover(ctx, s.Temporal, h.ID, account); err != nil {
			s.renderHandover(w, r, http.StatusConflict, h, err.Error(), "")
			return
		}
		s.renderHandover(w, r, http.StatusOK, h, "", "Accepted. The project and its adapters are being copied to the account "+account+
			"; you will get an email when it is ready.")
	default:
		httpjson.Error(w, http.StatusBadRequest, "invalid_form", "answer must be accept or decline")
	}
}
