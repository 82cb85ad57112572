package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"

	"go.temporal.io/api/workflowservice/v1"

	"github.com/superinstance/mesh/internal/money"
	"github.com/superinstance/mesh/internal/store"
	"github.com/superinstance/mesh/workflows"
)

// pageCaller is who opens a page: the guest of the page's project when the
// guest cookie is for it (a guest cookie for another project does not hide
// a member's session), else whoever the request's credential names. It
// answers the page's error itself: signed out, a session that ended, or a
// store that is down.
func (s *Server) pageCaller(w http.ResponseWriter, r *http.Request, project string) (Caller, bool) {
	if g, err := s.guest(r); err == nil && project != "" && g.Project == project {
		return Caller{Account: g.Host, Guest: g}, true
	}
	c, cookie, err := s.identify(r)
	switch {
	case errors.Is(err, errNoCredential):
		s.errorPage(w, problem{Status: http.StatusUnauthorized, Code: "unauthenticated", Title: "Sign in to see this page",
			What: "You are not signed in on this browser.", Do: "Sign in with an API token below, or open your invite link again.", SignIn: true})
		return c, false
	case errors.Is(err, store.ErrNotFound) && cookie:
		s.errorPage(w, problem{Status: http.StatusUnauthorized, Code: "unauthenticated", Title: "Your session has ended",
			What: "Your session has ended: you signed out, or it was revoked or expired.", Do: "Sign in again below, or open a new invite link.", SignIn: true})
		return c, false
	case errors.Is(err, store.ErrNotFound):
		s.errorPage(w, problem{Status: http.StatusUnauthorized, Code: "unauthenticated", Title: "Unknown API token",
			What: "The API token this request carries is unknown or revoked.", Do: "Create a new one with si account token.", SignIn: true})
		return c, false
	case err != nil:
		s.errorPage(w, unavailable("The credential store"))
		return c, false
	}
	return c, true
}

// viewerLine says who is looking, for the page's header.
func viewerLine(c Caller) string {
	if g := c.Guest; g != nil {
		return fmt.Sprintf("%s guest of %s · %s left", g.Role, g.Host, g.Remaining.Dollars())
	}
	return "signed in as " + c.Account
}

// noProject is the answer for a project that does not exist or that the
// caller may not see: the same page for both.
func noProject(project string) problem {
	return problem{Status: http.StatusNotFound, Code: "not_found", Title: "No such project",
		What: "There is no project " + project + " that you may see.",
		Do:   "Check the link, or ask the project's owner for an invite; if you were invited, open the invite link again."}
}

// projectRow is one run on the project page.
type projectRow struct {
	ID, Question, Answer, Status, StatusText string
	// Strategy is debate, vote or single.
	Strategy string
	At       time.Time
	Cost     money.Micros
	Running  bool
}

// projectPage lists a project's runs, newest first, with their question,
// time, status and cost, to a guest of it (with their remaining quota) or
// to a member signed in with a token or a browser session. A guest sees
// the host's runs in the project; a member all of the project's; anyone
// the default project's runs that are their own. Editors and owners (and
// editor guests with quota left) get the Ask form.
func (s *Server) projectPage(w http.ResponseWriter, r *http.Request) {
	project := r.PathValue("project")
	c, ok := s.pageCaller(w, r, project)
	if !ok {
		return
	}
	only, canAsk := "", false
	switch {
	case c.Guest != nil && c.Guest.Project != project:
		// A guest of another project sees nothing of this one.
		s.errorPage(w, noProject(project))
		return
	case c.Guest != nil:
		only, canAsk = c.Guest.Host, store.CanWrite(c.Guest.Role) && c.Guest.Remaining > 0
	case project == workflows.DefaultProject:
		only, canAsk = c.Account, true
	default:
		role, err := s.Store.ProjectRole(r.Context(), project, c.Account)
		if errors.Is(err, store.ErrNotFound) {
			s.errorPage(w, noProject(project))
			return
		}
		if err != nil {
			s.errorPage(w, unavailable("The project store"))
			return
		}
		canAsk = store.CanWrite(role)
	}
	runs, err := s.Store.RecentRuns(r.Context(), project, only, 20)
	if err != nil {
		s.errorPage(w, unavailable("The run store"))
		return
	}
	costs, err := s.Store.RunCosts(r.Context(), runs)
	if err != nil {
		costs = nil
	}
	var running []runningRun
	if project == workflows.DefaultProject && c.Guest == nil {
		// Every account's default runs share the project's name: the
		// caller's own runs in progress are those it holds headroom for.
		if running, err = s.ownRunning(r.Context(), c.Account); err != nil {
			s.errorPage(w, unavailable("The ledger"))
			return
		}
	} else if running, err = s.running(r.Context(), project); err != nil {
		s.errorPage(w, unavailable("Temporal"))
		return
	}
	rows := s.visibleRuns(r.Context(), c, project, running)
	for _, run := range runs {
		rows = append(rows, projectRow{ID: run.WorkflowID, Question: run.Prompt, Answer: run.Answer, Status: run.Status,
			StatusText: strings.ReplaceAll(run.Status, "_", " "), Strategy: run.Strategy, At: run.FinishedAt, Cost: costs[run.WorkflowID]})
	}
	sort.SliceStable(rows, func(i, j int) bool { return rows[i].At.After(rows[j].At) })
	s.renderPage(w, "project", map[string]any{"Title": project, "Project": project, "Guest": c.Guest, "Runs": rows,
		"AnyRunning": len(running) > 0, "CanAsk": canAsk, "Viewer": viewerLine(c)})
}

// visibleRuns keeps the runs in progress of project that the caller may
// see, as rows, querying at most runningMax of them, a few at a time.
func (s *Server) visibleRuns(ctx context.Context, c Caller, project string, runs []runningRun) []projectRow {
	runs = runs[:min(len(runs), runningMax)]
	seen := make([]bool, len(runs))
	states := make([]workflows.ConsensusState, len(runs))
	sem := make(chan struct{}, runningQueries)
	var wg sync.WaitGroup
	for i, run := range runs {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			qctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			defer cancel()
			st, err := s.queryState(qctx, run.ID)
			if err == nil && st.Project == project && s.maySee(ctx, c, st) {
				seen[i], states[i] = true, st
			}
		}()
	}
	wg.Wait()
	var out []projectRow
	for i, run := range runs {
		if seen[i] {
			out = append(out, projectRow{ID: run.ID, Question: states[i].Question, Status: workflows.StatusRunning,
				StatusText: "running", Strategy: strategyName(states[i].Strategy), At: run.Started, Running: true})
		}
	}
	return out
}

const (
	// runningMax bounds the runs in progress a project page lists.
	runningMax = 20
	// runningQueries bounds the state queries a page makes at once.
	runningQueries = 4
)

// ownRunning lists an account's runs in progress, from its active holds.
func (s *Server) ownRunning(ctx context.Context, account string) ([]runningRun, error) {
	hs, err := s.Store.ActiveHolds(ctx, account, runningMax)
	if err != nil {
		return nil, err
	}
	var out []runningRun
	for _, h := range hs {
		out = append(out, runningRun{ID: h.ID, Started: h.Created})
	}
	return out, nil
}

// runningRun is a consensus run in progress.
type runningRun struct {
	ID      string
	Started time.Time
}

// strategyName is s's name; a run started before strategies (none in its
// state) is a debate.
func strategyName(s workflows.Strategy) string {
	if s == "" {
		return string(workflows.StrategyDebate)
	}
	return string(s)
}

// running lists a project's consensus runs in progress.
func (s *Server) running(ctx context.Context, project string) ([]runningRun, error) {
	if err := store.ValidProjectID(project); err != nil {
		return nil, nil
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	resp, err := s.Temporal.ListWorkflow(ctx, &workflowservice.ListWorkflowExecutionsRequest{PageSize: runningMax,
		Query: fmt.Sprintf("WorkflowType = 'ConsensusWorkflow' AND ExecutionStatus = 'Running' AND %s = '%s'",
			workflows.ConsensusProjectAttr.GetName(), project)})
	if err != nil {
		return nil, err
	}
	var out []runningRun
	for _, e := range resp.Executions {
		out = append(out, runningRun{ID: e.GetExecution().GetWorkflowId(), Started: e.GetStartTime().AsTime()})
	}
	return out, nil
}

// livePage serves the consensus page to whoever may see the run; the page
// then renders from the state stream. An unknown run, or one the caller
// may not see, is the same error page; a signed-out visitor gets the page,
// which asks them to sign in.
func (s *Server) livePage(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	c, _, err := s.identify(r)
	if err == nil {
		ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
		st, qerr := s.queryState(ctx, id)
		cancel()
		if qerr != nil || !s.maySee(r.Context(), c, st) {
			s.errorPage(w, problem{Status: http.StatusNotFound, Code: "not_found", Title: "No such run",
				What: "There is no run " + id + " that you may see.",
				Do:   "Check the link (run ids look like consensus-…); the project page lists its runs."})
			return
		}
	}
	serveAsset(w, "live.html")
}
