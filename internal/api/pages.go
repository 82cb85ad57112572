package api

import (
	"bytes"
	"html/template"
	"net/http"
	"strings"

	"github.com/superinstance/mesh/internal/httpjson"
	"github.com/superinstance/mesh/internal/money"
)

// problem is an error as both faces of the mesh tell it: what happened and
// what to do, as an HTML page to a browser and as the JSON error (message
// "what: do") to an API client.
type problem struct {
	Status int
	Code   string
	// Title heads the page ("This invite link is not valid").
	Title string
	// What says what happened; Do what to do about it.
	What, Do string
	// SignIn offers the sign-in form on the page.
	SignIn bool
	// Viewer says who is signed in, for the header; "" shows nobody.
	Viewer string
}

func (p problem) message() string {
	if p.Do == "" {
		return p.What
	}
	return strings.TrimSuffix(p.What, ".") + ": " + lowerFirst(strings.TrimSuffix(p.Do, "."))
}

func lowerFirst(s string) string {
	if s == "" || strings.HasPrefix(s, "API") || strings.HasPrefix(s, "Temporal") {
		return s
	}
	return strings.ToLower(s[:1]) + s[1:]
}

// isAPIPath reports whether a path belongs to the JSON API rather than the
// pages: /v1/..., /openapi.json and the pages' assets.
func isAPIPath(p string) bool {
	return p == "/v1" || strings.HasPrefix(p, "/v1/") || p == "/openapi.json" || strings.HasPrefix(p, "/assets/")
}

// answer writes p as an HTML page when html is true, else as the JSON error.
func (s *Server) answer(w http.ResponseWriter, html bool, p problem) {
	if !html {
		httpjson.Error(w, p.Status, p.Code, p.message())
		return
	}
	s.errorPage(w, p)
}

// errorPage writes p as the shared error page.
func (s *Server) errorPage(w http.ResponseWriter, p problem) { writeErrorPage(w, p) }

func writeErrorPage(w http.ResponseWriter, p problem) {
	if p.Title == "" {
		p.Title = http.StatusText(p.Status)
	}
	var b bytes.Buffer
	if err := pageTemplates.ExecuteTemplate(&b, "error", p); err != nil {
		httpjson.Error(w, p.Status, p.Code, p.message())
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(p.Status)
	_, _ = w.Write(b.Bytes())
}

// renderPage writes one of pageTemplates with status 200.
func (s *Server) renderPage(w http.ResponseWriter, name string, data any) {
	var b bytes.Buffer
	if err := pageTemplates.ExecuteTemplate(&b, name, data); err != nil {
		s.errorPage(w, problem{Status: http.StatusInternalServerError, Code: "internal", Title: "This page could not be shown",
			What: "The page failed to render.", Do: "Reload it; if it keeps failing, tell the operator."})
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	_, _ = w.Write(b.Bytes())
}

// routeError answers a request no route serves: 404, or 405 naming the
// methods the path takes in Allow; JSON for API paths, a page otherwise.
func (s *Server) routeError(w http.ResponseWriter, r *http.Request, status int, allow string) {
	html := !isAPIPath(r.URL.Path)
	if status == http.StatusMethodNotAllowed {
		w.Header().Set("Allow", allow)
		s.answer(w, html, problem{Status: status, Code: "method_not_allowed", Title: "Wrong method",
			What: r.Method + " is not allowed on " + r.URL.Path, Do: "Use " + strings.ReplaceAll(allow, ", ", " or ") + "."})
		return
	}
	if html {
		s.errorPage(w, problem{Status: http.StatusNotFound, Code: "not_found", Title: "There is no such page",
			What: "Nothing lives at " + r.URL.Path + ".", Do: "Check the link; runs are at /c/<run id> and projects at /p/<project>."})
		return
	}
	httpjson.Error(w, http.StatusNotFound, "not_found", "no route "+r.Method+" "+r.URL.Path+": see /openapi.json for the API's routes")
}

// captured is a response a fallback handler of the mux wrote, held back so
// that its 404 or 405 can be answered in the mesh's own form.
type captured struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func (c *captured) Header() http.Header { return c.header }
func (c *captured) WriteHeader(status int) {
	if c.status == 0 {
		c.status = status
	}
}
func (c *captured) Write(b []byte) (int, error) {
	c.WriteHeader(http.StatusOK)
	return c.body.Write(b)
}

var pageFuncs = template.FuncMap{
	"dollars": func(m any) string {
		switch v := m.(type) {
		case money.Micros:
			return v.Dollars()
		case int64:
			return money.Micros(v).Dollars()
		}
		return ""
	},
}

var pageTemplates = template.Must(template.New("").Funcs(pageFuncs).Parse(`
{{define "top"}}<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{.Title}} · SuperInstance</title><link rel="stylesheet" href="/assets/style.css"></head>
<body><header><a class="brand" href="/">SuperInstance</a>{{with .Viewer}}<span class="viewer" id="viewer">{{.}}</span>{{end}}</header><main>{{end}}
{{define "bottom"}}</main></body></html>{{end}}
{{define "error"}}{{template "top" .}}
<section class="card problem" id="problem" data-status="{{.Status}}" data-code="{{.Code}}">
<h1 id="problem-title">{{.Title}}</h1>
<p id="problem-what">{{.What}}</p>
{{if .Do}}<p id="problem-do"><b>What to do:</b> {{.Do}}</p>{{end}}
<p class="muted"><small>HTTP {{.Status}} · {{.Code}}</small></p>
</section>
{{if .SignIn}}<section id="signin" class="card">
<h2>Sign in</h2>
<p>Paste an API token (<code>si account token</code> issues one), or open your invite link again.</p>
<form id="signin-form"><input id="token" type="password" autocomplete="off" placeholder="si_…" required> <button>Sign in</button></form>
<p id="signin-error" class="error"></p>
</section><script src="/assets/signin.js"></script>{{end}}
{{template "bottom"}}{{end}}
{{define "project"}}{{template "top" .}}
<h1 id="project-name">{{.Project}}</h1>
{{with .Guest}}<p id="guest" class="card">You are a <b>{{.Role}}</b> guest of <b>{{.Host}}</b>.
Quota remaining: <b id="remaining">{{dollars .Remaining}}</b> of {{dollars .Quota}}, billed to {{.Host}}.</p>{{end}}
<h2>Runs</h2>
{{if .Runs}}<table id="runs"><thead><tr><th>question</th><th>when</th><th>strategy</th><th>status</th><th class="num">cost</th></tr></thead><tbody>
{{range .Runs}}<tr class="run {{.Status}}" data-id="{{.ID}}"><td><a href="/c/{{.ID}}">{{.Question}}</a>{{if .Answer}}<br><small class="muted">{{.Answer}}</small>{{end}}</td>
<td><time datetime="{{.At.Format "2006-01-02T15:04:05Z07:00"}}">{{.At.Format "2 Jan 15:04 MST"}}</time></td>
<td class="strategy">{{.Strategy}}</td><td><span class="status {{.Status}}">{{.StatusText}}</span></td><td class="num">{{if .Running}}…{{else}}{{dollars .Cost}}{{end}}</td></tr>{{end}}
</tbody></table>
{{else}}<p class="muted" id="no-runs">No runs yet{{if .CanAsk}}: ask a question below{{end}}.</p>{{end}}
{{if .AnyRunning}}<p class="muted"><small>Runs in progress: this page refreshes itself.</small></p><meta http-equiv="refresh" content="5">{{end}}
{{if .CanAsk}}<section id="ask" class="card"><h2>Ask</h2>
<form id="ask-form" data-project="{{.Project}}"><textarea id="prompt" rows="3" required placeholder="A question for the consensus"></textarea>
<label for="strategy">Strategy <select id="strategy" name="strategy"><option value="debate" selected>debate: Pathos, Logos and Ethos in rounds, then the Arbiter</option><option value="vote">vote: the majority of 5 sampled answers, checked by Ethos</option><option value="single">single: one answer</option></select></label>
<button>Start a consensus</button></form><p id="ask-error" class="error"></p></section><script src="/assets/ask.js"></script>{{end}}
{{template "bottom"}}{{end}}
`))
