package api

import (
	"context"
	"encoding/json"
	"net/url"
	"strings"
	"time"

	"github.com/superinstance/mesh/workflows"
)

// RunView is a consensus as GET /v1/consensus/{id} and its event stream
// show it: the workflow's state, with what the run and each of its steps
// has cost so far according to the ledger (credits included), the
// server's clock for timing the step in progress, and, when the operator
// configured the Temporal Web UI, a link to the run there.
type RunView struct {
	workflows.ConsensusState
	// CostMicros is the sum of StepCosts.
	CostMicros int64 `json:"cost_micros"`
	// StepCosts is each billed step's charge by step id (the step log's id).
	StepCosts map[string]int64 `json:"step_costs_micros"`
	// Now is the server's time when the view was made.
	Now time.Time `json:"now"`
	// TemporalURL links to the run in the Temporal Web UI, for the run's
	// own account alone; absent unless Server.TemporalUIURL is set.
	TemporalURL string `json:"temporal_url,omitempty"`
}

// viewFor is the RunView of run id as the caller gets it: with the
// Temporal link only when the run is the caller's account's own (a
// member of its project or a guest is no operator of it).
func (s *Server) viewFor(ctx context.Context, c Caller, id string, st workflows.ConsensusState) RunView {
	v := s.view(ctx, id, st)
	if ownRun(c, st) {
		v.TemporalURL = s.temporalURL(id)
	}
	return v
}

// ownRun reports whether st is a run of the caller's own account.
func ownRun(c Caller, st workflows.ConsensusState) bool {
	return c.Guest == nil && c.Account != "" && st.Account == c.Account
}

// withTemporalURL adds the run's Temporal link to a RunView's JSON shared
// by every viewer (which carries none), for a viewer who owns the run.
func (s *Server) withTemporalURL(data []byte, id string) []byte {
	u := s.temporalURL(id)
	if u == "" || len(data) < 2 || data[len(data)-1] != '}' {
		return data
	}
	q, _ := json.Marshal(u)
	out := make([]byte, 0, len(data)+len(q)+20)
	out = append(out, data[:len(data)-1]...)
	return append(append(append(out, `,"temporal_url":`...), q...), '}')
}

// view makes the RunView of run id that any viewer may get (no Temporal
// link). The costs are left out when the ledger cannot be read: the
// progress matters more than its price.
func (s *Server) view(ctx context.Context, id string, st workflows.ConsensusState) RunView {
	v := RunView{ConsensusState: st, StepCosts: map[string]int64{}, Now: time.Now().UTC()}
	if st.Account == "" || s.Store == nil {
		return v
	}
	since := st.UpdatedAt
	if len(st.StepLog) > 0 {
		since = st.StepLog[0].StartedAt
	}
	if since.IsZero() {
		return v
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	costs, err := s.Store.StepCosts(ctx, st.Account, id, since.Add(-time.Minute))
	if err != nil {
		return v
	}
	for step, c := range costs {
		v.StepCosts[step] = int64(c)
		v.CostMicros += int64(c)
	}
	return v
}

func (s *Server) encodeView(ctx context.Context, id string, st workflows.ConsensusState) ([]byte, error) {
	return json.Marshal(s.view(ctx, id, st))
}

// temporalURL is the run's page in the Temporal Web UI, or "".
func (s *Server) temporalURL(id string) string {
	if s.TemporalUIURL == "" {
		return ""
	}
	ns := s.TemporalNamespace
	if ns == "" {
		ns = "default"
	}
	return strings.TrimRight(s.TemporalUIURL, "/") + "/namespaces/" + url.PathEscape(ns) + "/workflows/" + url.PathEscape(id)
}
