package api

import (
	"context"
	"errors"
	"fmt"
	"html/template"
	"net/http"
	"slices"
	"strings"
	"time"

	"go.temporal.io/api/workflowservice/v1"

	"github.com/superinstance/mesh/internal/httpjson"
	"github.com/superinstance/mesh/internal/money"
	"github.com/superinstance/mesh/internal/store"
	"github.com/superinstance/mesh/workflows"
)

// Dashboard is GET /v1/dashboard: everything about the signed-in account
// that its page at / shows. Money is in micro-dollars.
type Dashboard struct {
	Account string  `json:"account"`
	Balance Balance `json:"balance"`
	// Usage sums the last UsageDays days by day, model and project.
	Usage     []store.UsageBucket `json:"usage"`
	UsageDays int                 `json:"usage_days"`
	Flushes   []FlushInfo         `json:"flushes"`
	Adapters  []store.LoRA        `json:"adapters"`
	Hubs      []HubInfo           `json:"hubs"`
	Projects  []ProjectInfo       `json:"projects"`
	Invites   []InviteInfo        `json:"invites"`
	Guests    []*GuestInfo        `json:"guests"`
	// Handovers are those in flight (pending, accepted or awaiting the new
	// owner's payment method) that the account hosts or is offered; the
	// payment link is the new owner's alone.
	Handovers []HandoverInfo `json:"handovers"`
	// Funnel is the account's own invites and handovers over all time;
	// FunnelWeeks by week of start, the latest first.
	Funnel      store.Funnel       `json:"funnel"`
	FunnelWeeks []store.FunnelWeek `json:"funnel_weeks"`
	// Evals are the account's latest si eval reports, newest first.
	Evals []EvalInfo `json:"evals"`
}

// FlushInfo is one flush of unbilled balance to Stripe: what was sent (a
// meter event of AmountCents under StripeIdentifier, timestamped MeterAt)
// and its state (pending, in_doubt, sent or failed).
type FlushInfo struct {
	ID               string    `json:"id"`
	AmountCents      int64     `json:"amount_cents"`
	State            string    `json:"state"`
	StripeIdentifier string    `json:"stripe_identifier"`
	Attempts         int       `json:"attempts"`
	Error            string    `json:"error,omitempty"`
	MeterAt          time.Time `json:"meter_at"`
	CreatedAt        time.Time `json:"created_at"`
	OverbilledCents  int64     `json:"overbilled_cents,omitempty"`
}

// HubInfo is one of the account's hubs with its vitals over the last hour.
type HubInfo struct {
	DeviceID   string              `json:"device_id"`
	Hostname   string              `json:"hostname"`
	Version    string              `json:"version"`
	Connected  bool                `json:"connected"`
	LastSeen   time.Time           `json:"last_seen"`
	GPUCount   int                 `json:"gpu_count"`
	GPULoad    float64             `json:"gpu_load"`
	GPUTempC   float64             `json:"gpu_temp_c"`
	CPULoad    float64             `json:"cpu_load"`
	RTTMicros  int                 `json:"rtt_micros"`
	NVML       bool                `json:"nvml"`
	Reconnects int                 `json:"reconnects"`
	Vitals     []store.VitalsPoint `json:"vitals_last_hour"`
}

// ProjectInfo is a project the account belongs to and its runs in progress.
type ProjectInfo struct {
	Project string    `json:"project"`
	Role    string    `json:"role"`
	Running []RunInfo `json:"running"`
}

// RunInfo is a consensus run in progress.
type RunInfo struct {
	ID        string `json:"id"`
	Question  string `json:"question"`
	Round     int    `json:"round"`
	LastRound int    `json:"last_round"`
	// Strategy is how the run answers: debate, vote or single.
	Strategy string `json:"strategy"`
	PageURL  string `json:"page_url"`
}

// dashUnavailable is a part of the dashboard that could not be read, said the
// way the page and the JSON error say it (without the driver's words).
type dashUnavailable string

func (u dashUnavailable) Error() string { return string(u) }

// Bounds on what the dashboard lists.
const (
	dashUsageDays = 14
	dashListMax   = 50
	dashRunsMax   = 20
	dashEvalsMax  = 5
)

// dashboard gathers the account's dashboard.
func (s *Server) dashboard(ctx context.Context, account string) (Dashboard, error) {
	// Lists are [] rather than null when empty.
	d := Dashboard{Account: account, UsageDays: dashUsageDays, Flushes: []FlushInfo{}, Hubs: []HubInfo{}, Invites: []InviteInfo{},
		Guests: []*GuestInfo{}, Handovers: []HandoverInfo{}}
	a, err := s.Store.AccountByID(ctx, account)
	if err != nil {
		return d, dashUnavailable("the ledger is unreachable")
	}
	d.Balance = Balance{Account: a.ID, Status: a.Status, SuspendedReason: a.SuspendedReason, Credits: int64(a.Credits),
		Unbilled: int64(a.Unbilled), CreditCeiling: int64(a.CreditCeiling), Tier: a.Tier}
	day := time.Now().UTC().Truncate(24 * time.Hour)
	if d.Usage, err = s.Store.UsageSeries(ctx, account, day.AddDate(0, 0, 1-dashUsageDays), "day"); err != nil {
		return d, dashUnavailable("the ledger is unreachable")
	}
	if d.Usage == nil {
		d.Usage = []store.UsageBucket{}
	}
	fl, err := s.Store.RecentFlushes(ctx, account, dashListMax)
	if err != nil {
		return d, dashUnavailable("the flush store is unreachable")
	}
	for _, f := range fl {
		d.Flushes = append(d.Flushes, FlushInfo{ID: f.ID, AmountCents: f.AmountCents, State: f.State, StripeIdentifier: f.StripeIdentifier,
			Attempts: f.Attempts, Error: f.Error, MeterAt: f.MeterAt, CreatedAt: f.CreatedAt, OverbilledCents: f.OverbilledCents})
	}
	ls, err := s.Store.LoRAs(ctx, account)
	if err != nil {
		return d, dashUnavailable("the adapter registry is unreachable")
	}
	d.Adapters = append([]store.LoRA{}, ls[:min(len(ls), dashListMax)]...)
	hubs, err := s.Store.HubsOf(ctx, account)
	if err != nil {
		return d, dashUnavailable("the hub registry is unreachable")
	}
	hist, err := s.Store.VitalsHistory(ctx, account, time.Now().Add(-time.Hour))
	if err != nil {
		return d, dashUnavailable("the hub registry is unreachable")
	}
	for _, h := range hubs {
		d.Hubs = append(d.Hubs, HubInfo{DeviceID: h.DeviceID, Hostname: h.Hostname, Version: h.Version, Connected: h.Connected,
			LastSeen: h.LastSeen, GPUCount: h.GPUCount, GPULoad: h.GPULoad, GPUTempC: h.GPUTempC, CPULoad: h.CPULoad,
			RTTMicros: h.RTTMicros, NVML: h.NVML, Reconnects: h.Reconnects, Vitals: hist[h.DeviceID]})
	}
	if d.Projects, err = s.dashboardProjects(ctx, account); err != nil {
		return d, err
	}
	invs, err := s.Store.RecentInvites(ctx, account, dashListMax)
	if err != nil {
		return d, dashUnavailable("the invite store is unreachable")
	}
	for _, i := range invs {
		d.Invites = append(d.Invites, inviteInfo(i))
	}
	gs, err := s.Store.RecentGuestSessions(ctx, account, dashListMax)
	if err != nil {
		return d, dashUnavailable("the guest store is unreachable")
	}
	for _, g := range gs {
		d.Guests = append(d.Guests, guestInfo(g))
	}
	hs, err := s.Store.HandoversInFlight(ctx, account, dashListMax)
	if err != nil {
		return d, dashUnavailable("the handover store is unreachable")
	}
	for _, h := range hs {
		d.Handovers = append(d.Handovers, s.handoverAs(ctx, h, account))
	}
	if d.Funnel, d.FunnelWeeks, err = s.Store.Funnels(ctx, account, 12); err != nil {
		return d, dashUnavailable("the conversion figures are unreachable")
	}
	if d.Evals, err = s.evals(ctx, account, dashEvalsMax); err != nil {
		return d, err
	}
	return d, nil
}

// dashboardProjects lists the account's projects (its own default one
// too) with the runs in progress it may see: those it pays for (its active
// holds) and those in the named projects it belongs to.
func (s *Server) dashboardProjects(ctx context.Context, account string) ([]ProjectInfo, error) {
	ms, err := s.Store.Memberships(ctx, account)
	if err != nil {
		return nil, dashUnavailable("the project store is unreachable")
	}
	ids, err := s.Store.ActiveHoldIDs(ctx, account, dashRunsMax)
	if err != nil {
		return nil, dashUnavailable("the ledger is unreachable")
	}
	var named []string
	for _, m := range ms {
		if m.Project != workflows.DefaultProject && store.ValidProjectID(m.Project) == nil {
			named = append(named, "'"+m.Project+"'")
		}
	}
	if len(named) > 0 && s.Temporal != nil {
		lctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		resp, err := s.Temporal.ListWorkflow(lctx, &workflowservice.ListWorkflowExecutionsRequest{PageSize: dashRunsMax,
			Query: fmt.Sprintf("WorkflowType = 'ConsensusWorkflow' AND ExecutionStatus = 'Running' AND %s IN (%s)",
				workflows.ConsensusProjectAttr.GetName(), strings.Join(named, ", "))})
		cancel()
		if err != nil {
			return nil, dashUnavailable("the run list (Temporal) is unreachable")
		}
		for _, e := range resp.Executions {
			if id := e.GetExecution().GetWorkflowId(); !slices.Contains(ids, id) {
				ids = append(ids, id)
			}
		}
	}
	byProject := map[string][]RunInfo{}
	c := Caller{Account: account}
	for _, id := range ids[:min(len(ids), dashRunsMax)] {
		if !strings.HasPrefix(id, "consensus-") && !strings.HasPrefix(id, "escalation-") || s.Temporal == nil {
			continue
		}
		qctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		v, err := s.Temporal.QueryWorkflow(qctx, id, "", workflows.QueryState)
		var st workflows.ConsensusState
		if err == nil {
			err = v.Get(&st)
		}
		cancel()
		if err != nil || st.Status != workflows.StatusRunning || !s.maySee(ctx, c, st) {
			continue
		}
		p := st.Project
		if p == "" {
			p = workflows.DefaultProject
		}
		byProject[p] = append(byProject[p], RunInfo{ID: id, Question: st.Question, Round: st.Round, LastRound: st.LastRound, Strategy: strategyName(st.Strategy), PageURL: "/c/" + id})
	}
	out := []ProjectInfo{}
	seen := map[string]bool{}
	for _, m := range ms {
		seen[m.Project] = true
		out = append(out, ProjectInfo{Project: m.Project, Role: m.Role, Running: append([]RunInfo{}, byProject[m.Project]...)})
	}
	if !seen[workflows.DefaultProject] {
		out = append([]ProjectInfo{{Project: workflows.DefaultProject, Role: store.RoleOwner,
			Running: append([]RunInfo{}, byProject[workflows.DefaultProject]...)}}, out...)
	}
	return out, nil
}

// getDashboard is GET /v1/dashboard.
func (s *Server) getDashboard(w http.ResponseWriter, r *http.Request, c Caller) {
	if !accountOnly(w, c) {
		return
	}
	d, err := s.dashboard(r.Context(), c.Account)
	if err != nil {
		httpjson.Error(w, http.StatusServiceUnavailable, "unavailable", err.Error())
		return
	}
	httpjson.Write(w, http.StatusOK, d)
}

// home is the page at /: the signed-in account's dashboard, else a page
// to sign in (a guest is pointed to their project's page).
func (s *Server) home(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Referrer-Policy", "same-origin")
	// Its own script and styles only, and never inside another site's frame.
	w.Header().Set("Content-Security-Policy", "default-src 'self'; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'")
	c, _, err := s.identify(r)
	switch {
	case err == nil && c.Guest == nil:
	case err == nil || errors.Is(err, errNoCredential) || errors.Is(err, store.ErrNotFound):
		v := signInView{Title: "Sign in", Ended: errors.Is(err, store.ErrNotFound)}
		if c.Guest != nil {
			v.GuestProject = c.Guest.Project
		}
		_ = dashPages.ExecuteTemplate(w, "signin", v)
		return
	default:
		w.WriteHeader(http.StatusServiceUnavailable)
		_ = dashPages.ExecuteTemplate(w, "signin", signInView{Title: "Unavailable", Error: "The mesh cannot check your session right now; try again in a moment."})
		return
	}
	d, err := s.dashboard(r.Context(), c.Account)
	if err != nil {
		w.WriteHeader(http.StatusServiceUnavailable)
		_ = dashPages.ExecuteTemplate(w, "signin", signInView{Title: "Unavailable", Error: "The dashboard cannot be shown right now (" +
			err.Error() + "); try again in a moment, or ask the operator if it lasts."})
		return
	}
	_ = dashPages.ExecuteTemplate(w, "dashboard", newDashView(d, time.Now()))
}

// signInView is the sign-in page's data.
type signInView struct {
	Title, Error string
	// Ended: the request carried a session that is no longer valid.
	Ended bool
	// GuestProject: the request is a guest's, of this project.
	GuestProject string
}

var dashPages = template.Must(template.New("").Funcs(template.FuncMap{
	"dollars": func(v any) string {
		switch m := v.(type) {
		case money.Micros:
			return m.Dollars()
		case int64:
			return money.Micros(m).Dollars()
		}
		return fmt.Sprint(v)
	},
	"cents": func(c int64) string { return money.Micros(c * 10_000).Dollars() },
	"pct":   func(f float64) string { return fmt.Sprintf("%.0f%%", 100*f) },
	"ago":   ago,
	"size":  byteSize,
	"when":  func(t time.Time) string { return t.UTC().Format("2 Jan 15:04 UTC") },
}).ParseFS(assets, "web/dashboard.html"))
