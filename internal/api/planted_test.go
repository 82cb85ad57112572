package api_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/superinstance/mesh/hub/bridge"
	"github.com/superinstance/mesh/internal/api"
	"github.com/superinstance/mesh/internal/pki"
	"github.com/superinstance/mesh/internal/runner"
	"github.com/superinstance/mesh/internal/simulator"
	meshv1 "github.com/superinstance/mesh/proto/meshv1"
	"github.com/superinstance/mesh/test/harness"
	"github.com/superinstance/mesh/workflows"
)

// An account that is not a member of another's project cannot plant a run
// with text of its choosing on that project's page: not through the API,
// not by starting the workflow itself, not through a hub's escalation.
func TestForbiddenRunNotOnOthersProjectPage(t *testing.T) {
	m := harness.StartMesh(t, simulator.Options{})
	m.Account(t, "bob")
	m.Account(t, "mallory")
	ctx := context.Background()
	if _, err := m.Store.ClaimProject(ctx, "acme", "bob"); err != nil {
		t.Fatal(err)
	}
	bobTok, _ := m.Store.CreateAPIToken(ctx, "bob", "")
	malTok, _ := m.Store.CreateAPIToken(ctx, "mallory", "")
	h := (&api.Server{Store: m.Store, Temporal: m.Client}).Handler()

	// Through the API: the answer of a project that does not exist.
	if code, r := call(t, h, "POST", "/v1/consensus", malTok, `{"prompt":"PLANTED via api [sim:agree]","project":"acme"}`); code != http.StatusNotFound ||
		r.Error.Code != "not_found" {
		t.Fatalf("mallory starts a run in acme: %d %+v", code, r.Error)
	}

	// The workflow started directly (a stale API, an operator's mistake):
	// its project check fails, and the run must not be kept under acme.
	wctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	direct := runner.NewWorkflowID(time.Now())
	run, err := runner.Start(wctx, m.Client, direct, workflows.ConsensusInput{Prompt: "PLANTED via workflow [sim:agree]",
		Project: "acme", Account: "mallory", Placement: workflows.PlacementCloud})
	if err != nil {
		t.Fatal(err)
	}
	if err := run.Get(wctx, nil); err == nil {
		t.Fatal("mallory's run in acme succeeded")
	}

	// Through mallory's hub: refused, whether or not a workflow starts.
	esc := &bridge.Temporal{Client: m.Client, Poll: 20 * time.Millisecond, Projects: m.Store}
	err = esc.Escalate(wctx, pki.Identity{DeviceID: "mallory-gpu", Account: "mallory"},
		&meshv1.EscalationRequest{RequestId: "plant-1", Prompt: "PLANTED via bridge [sim:agree]", Project: "acme"},
		func(*meshv1.EscalationResponse) error { return nil })
	if err == nil {
		t.Fatal("mallory's escalation into acme succeeded")
	}
	if d, err := m.Client.DescribeWorkflowExecution(wctx, bridge.EscalationWorkflowID("mallory-gpu", "plant-1"), ""); err == nil {
		// It started anyway: wait for it, so that what it records is seen.
		_ = m.Client.GetWorkflow(wctx, d.GetWorkflowExecutionInfo().GetExecution().GetWorkflowId(), "").Get(wctx, nil)
	}

	runs, err := m.Store.RecentRuns(ctx, "acme", "", 20)
	if err != nil {
		t.Fatal(err)
	}
	if len(runs) != 0 {
		t.Fatalf("acme holds mallory's runs: %+v", runs)
	}
	for _, who := range []string{bobTok} {
		page := send(h, "GET", "/p/acme", "", nil, map[string]string{"Accept": "text/html", "Authorization": "Bearer " + who})
		if page.Code != 200 || strings.Contains(page.Body.String(), "PLANTED") {
			t.Fatalf("bob's /p/acme shows mallory's text: %d %s", page.Code, page.Body.String())
		}
		if code, _ := call(t, h, "GET", "/v1/consensus/"+direct, who, ""); code != http.StatusNotFound {
			t.Fatalf("bob reads mallory's refused run: %d", code)
		}
		dash := send(h, "GET", "/", "", nil, map[string]string{"Accept": "text/html", "Authorization": "Bearer " + who})
		if strings.Contains(dash.Body.String(), "PLANTED") {
			t.Fatalf("bob's dashboard shows mallory's text: %s", dash.Body.String())
		}
	}
}
