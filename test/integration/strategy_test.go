package integration

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/superinstance/mesh/internal/money"
	"github.com/superinstance/mesh/internal/simulator"
	"github.com/superinstance/mesh/test/harness"
	"github.com/superinstance/mesh/workflows"
)

// askState is what si ask --json prints.
type askState struct {
	WorkflowID string `json:"workflow_id"`
	workflows.ConsensusState
}

func siAsk(t *testing.T, args ...string) askState {
	t.Helper()
	out, err := si(t, append([]string{"ask", "--json"}, args...)...)
	var st askState
	if err != nil || json.Unmarshal([]byte(out), &st) != nil {
		t.Fatalf("si ask %q: %v\n%s", args, err, out)
	}
	return st
}

// billedAsLogged checks the run's steps against the ledger: one event a
// step, under the step's id, whose charge the step shows; the run's charge
// is their sum; the hold settled that much and was released.
func billedAsLogged(t *testing.T, m *harness.Mesh, account string, st askState, wantSteps []string) {
	t.Helper()
	ctx := context.Background()
	// si ask ends at the final status, with every step billed; the
	// workflow releases the hold on its way out.
	if err := m.Client.GetWorkflow(ctx, st.WorkflowID, "").Get(ctx, nil); err != nil {
		t.Fatal(err)
	}
	rows, err := m.Store.UsageSince(ctx, account, time.Now().Add(-time.Hour), 1000)
	if err != nil {
		t.Fatal(err)
	}
	events := map[string]money.Micros{}
	var charged, gross money.Micros
	for _, r := range rows {
		if step, ok := strings.CutPrefix(r.Usage.EventID, st.WorkflowID+"/"); ok {
			events[step] = r.Charged
			charged += r.Charged
			gross += r.Gross
		}
	}
	if len(events) != len(wantSteps) || len(st.StepLog) != len(wantSteps) {
		t.Fatalf("ledger events %v, step log %+v; want %v", events, st.StepLog, wantSteps)
	}
	// A vote's samples run side by side: the log is in the order they ended.
	var logged []string
	for i, s := range st.StepLog {
		logged = append(logged, s.ID)
		c, ok := events[s.ID]
		if !ok || c != s.Charged || c <= 0 {
			t.Fatalf("step %d %s charged %s, ledger %s (%v)", i, s.ID, s.Charged, c, ok)
		}
	}
	slices.Sort(logged)
	if strings.Join(logged, " ") != strings.Join(wantSteps, " ") {
		t.Fatalf("step log %v, want %v", logged, wantSteps)
	}
	if st.Charged != charged || st.Gross != gross {
		t.Fatalf("the run says it charged %s (gross %s), the ledger %s (gross %s)", st.Charged, st.Gross, charged, gross)
	}
	h, err := m.Store.HoldByID(ctx, st.WorkflowID)
	if err != nil || h.State != "released" || h.Settled != gross {
		t.Fatalf("hold %+v %v: want released, settled %s", h, err, gross)
	}
}

// TestVoteAndSingleEndToEnd: si ask --strategy vote and single through the
// API on the simulator: the answer, the strategy in the state, every sample
// billed as a step of its own, the hold released.
func TestVoteAndSingleEndToEnd(t *testing.T) {
	m := harness.StartMesh(t, simulator.Options{})
	url, tokens := customerAPI(t, m, "voter")
	customerEnv(t)
	if out, err := si(t, "login", "--api-url", url, "--token", tokens["voter"]); err != nil {
		t.Fatalf("si login: %v\n%s", err, out)
	}

	st := siAsk(t, "--strategy", "vote", "--samples", "3", "What is 2+2?")
	if st.Status != workflows.StatusConsensus || st.Strategy != workflows.StrategyVote || st.Samples != 3 || st.Temperature == nil ||
		*st.Temperature != workflows.DefaultTemperature || len(st.Votes) != 3 || st.Winner != 1 || st.WinnerVotes != 3 ||
		st.Answer != st.Votes[0].Answer || st.Rounds[0].Verification == nil || st.Tokens <= 0 {
		t.Fatalf("vote: %+v", st.ConsensusState)
	}
	billedAsLogged(t, m, "voter", st, []string{"r1-ethos", "r1-logos-s1", "r1-logos-s2", "r1-logos-s3"})

	st = siAsk(t, "--strategy", "single", "What is 2+2?")
	if st.Status != workflows.StatusConsensus || st.Strategy != workflows.StrategySingle || st.Samples != 1 || st.Answer == "" || st.Steps != 1 {
		t.Fatalf("single: %+v", st.ConsensusState)
	}
	billedAsLogged(t, m, "voter", st, []string{"r1-logos"})

	out, err := si(t, "ask", "--strategy", "vote", "--samples", "2", "--temperature", "0.3", "Name a prime")
	for _, want := range []string{"sample 1   logos", "sample 2   logos", "strategy  vote (2 samples at temperature 0.30; sample 1 won with 2 of 2)", "tokens    "} {
		if err != nil || !strings.Contains(out, want) {
			t.Fatalf("si ask --strategy vote lacks %q: %v\n%s", want, err, out)
		}
	}
}

// TestContinueFromAFailedRunThroughTheCLI: a run that failed is continued
// with si ask --continue; another account's si gets not found.
func TestContinueFromAFailedRunThroughTheCLI(t *testing.T) {
	m := harness.StartMesh(t, simulator.Options{})
	url, tokens := customerAPI(t, m, "carol", "mallory")
	customerEnv(t)
	if out, err := si(t, "login", "--api-url", url, "--token", tokens["carol"]); err != nil {
		t.Fatalf("si login: %v\n%s", err, out)
	}
	out, err := si(t, "ask", "sort these [sim:malformed]")
	failed, _, _ := strings.Cut(out, " ")
	if err == nil || !strings.HasPrefix(failed, "consensus-") {
		t.Fatalf("the malformed run: %v\n%s", err, out)
	}
	st := siAsk(t, "--continue", failed, "sort these, in JSON this time [sim:agree]")
	if st.Status != workflows.StatusConsensus || st.ContinuedFrom != failed || st.Manifest == nil || !strings.Contains(st.Manifest.Intent, "in JSON this time") {
		t.Fatalf("continued: %+v", st.ConsensusState)
	}
	vote := siAsk(t, "--continue", st.WorkflowID, "--strategy", "vote", "--samples", "2", "and descending? [sim:agree]")
	if vote.ContinuedFrom != st.WorkflowID || vote.Strategy != workflows.StrategyVote || vote.Rounds[0].Round != st.Round+1 {
		t.Fatalf("a vote continuing a debate: %+v", vote.ConsensusState)
	}

	if out, err := si(t, "login", "--api-url", url, "--token", tokens["mallory"]); err != nil {
		t.Fatalf("si login: %v\n%s", err, out)
	}
	out, err = si(t, "ask", "--continue", failed, "mine now [sim:agree]")
	if err == nil || !strings.Contains(err.Error(), "no consensus "+failed) {
		t.Fatalf("mallory continues carol's run: %v\n%s", err, out)
	}
}

// TestLiveVoteHistoryReplays replays a real server's history of a vote
// against the current workflow code; with SI_WRITE_HISTORY set it writes
// the history the workflows package's replay test reads.
func TestLiveVoteHistoryReplays(t *testing.T) {
	m := harness.StartMesh(t, simulator.Options{})
	m.Account(t, "replay-vote")
	id, st, err := ask(t, m, workflows.ConsensusInput{Prompt: "What is 6*7?", Strategy: workflows.StrategyVote, Samples: 3,
		Account: "replay-vote"}, nil)
	if err != nil || st.Status != workflows.StatusConsensus || len(st.Votes) != 3 {
		t.Fatalf("%+v %v", st, err)
	}
	replays(t, m.Client, id, workflows.ConsensusWorkflow, "consensus_history_vote.json")
}
