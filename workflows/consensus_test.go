package workflows

import (
	"context"
	"errors"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/stretchr/testify/mock"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/testsuite"

	"github.com/superinstance/mesh/activities"
	"github.com/superinstance/mesh/internal/llm"
	"github.com/superinstance/mesh/internal/simulator"
	"github.com/superinstance/mesh/internal/store"
	"github.com/superinstance/mesh/internal/synapse"
)

var (
	inf *activities.Inference
	pl  *activities.Placement
	rec *activities.Records
	led *activities.Ledger
)

// newEnv returns a test environment whose inference activities call the
// simulator and whose placement and record activities are mocked.
func newEnv(t *testing.T) *testsuite.TestWorkflowEnvironment {
	t.Helper()
	return newEnvRecording(t, nil)
}

// newEnvRecording is newEnv, with record called for each run recorded.
func newEnvRecording(t *testing.T, record func(store.ConsensusRun)) *testsuite.TestWorkflowEnvironment {
	t.Helper()
	var s testsuite.WorkflowTestSuite
	env := s.NewTestWorkflowEnvironment()
	sim := httptest.NewServer(simulator.New(simulator.Options{}))
	t.Cleanup(sim.Close)
	env.RegisterWorkflow(ConsensusWorkflow)
	env.RegisterActivity(&activities.Inference{
		LLM:    &llm.Client{BaseURL: sim.URL + "/v1"},
		Models: activities.Models{Pathos: simulator.ModelSmall, Logos: simulator.ModelSmall, Ethos: simulator.ModelSmall, Arbiter: simulator.ModelLarge},
	})
	env.RegisterActivity(&activities.Placement{})
	env.RegisterActivity(&activities.Records{})
	env.RegisterActivity(&activities.Ledger{})
	env.OnActivity(rec.RecordConsensus, mock.Anything, mock.Anything).Return(func(_ context.Context, r store.ConsensusRun) error {
		if record != nil {
			record(r)
		}
		return nil
	})
	return env
}

func run(t *testing.T, env *testsuite.TestWorkflowEnvironment, in ConsensusInput) (*ConsensusState, error) {
	t.Helper()
	env.ExecuteWorkflow(ConsensusWorkflow, in)
	if !env.IsWorkflowCompleted() {
		t.Fatal("workflow did not complete")
	}
	if err := env.GetWorkflowError(); err != nil {
		return nil, err
	}
	var st ConsensusState
	if err := env.GetWorkflowResult(&st); err != nil {
		t.Fatal(err)
	}
	return &st, nil
}

func TestConsensusInOneRound(t *testing.T) {
	env := newEnv(t)
	st, err := run(t, env, ConsensusInput{Prompt: "What is 2+2? [sim:agree]"})
	if err != nil {
		t.Fatal(err)
	}
	if st.Status != StatusConsensus || len(st.Rounds) != 1 || st.Round != 1 {
		t.Fatalf("status %s after %d rounds, want consensus after 1", st.Status, len(st.Rounds))
	}
	if st.Score < DefaultThreshold || st.Answer == "" || st.Arbiter != nil {
		t.Fatalf("score %v answer %q arbiter %v", st.Score, st.Answer, st.Arbiter)
	}
	if st.Steps != 3 || len(st.Usage) != 3 {
		t.Fatalf("steps %d usage %d, want 3 each (pathos, logos, ethos)", st.Steps, len(st.Usage))
	}
	want := synapse.Score(*st.Manifest, *st.Rounds[0].Solution, *st.Rounds[0].Verification)
	if st.Score != want {
		t.Fatalf("score %v, want Score() = %v", st.Score, want)
	}
	for _, u := range st.Usage {
		if u.PromptTokens == 0 || u.CompletionTokens == 0 {
			t.Fatalf("usage without tokens: %+v", u)
		}
	}
}

func TestFeedbackLoopCarriesEthosFeedback(t *testing.T) {
	env := newEnv(t)
	var logosFeedback []string
	env.OnActivity(inf.Logos, mock.Anything, mock.Anything).Return(
		func(_ context.Context, in activities.LogosInput) (activities.LogosOutput, error) {
			logosFeedback = append(logosFeedback, in.Feedback)
			return activities.LogosOutput{Solution: synapse.Solution{Answer: "v" + string(rune('0'+in.Round)), Confidence: 0.9}}, nil
		})
	env.OnActivity(inf.Ethos, mock.Anything, mock.Anything).Return(
		func(_ context.Context, in activities.EthosInput) (activities.EthosOutput, error) {
			v := synapse.Verification{Scores: synapse.Scores{Accuracy: 0.4, Relevance: 0.4, Safety: 0.4}, Feedback: "add a source"}
			if in.Round == 2 {
				v = synapse.Verification{Scores: synapse.Scores{Accuracy: 0.95, Relevance: 0.95, Safety: 0.95}, Feedback: "good"}
			}
			return activities.EthosOutput{Verification: v}, nil
		})
	st, err := run(t, env, ConsensusInput{Prompt: "Explain TCP slow start"})
	if err != nil {
		t.Fatal(err)
	}
	if st.Status != StatusConsensus || len(st.Rounds) != 2 {
		t.Fatalf("status %s after %d rounds, want consensus in round 2", st.Status, len(st.Rounds))
	}
	if len(logosFeedback) != 2 || logosFeedback[0] != "" || logosFeedback[1] != "add a source" {
		t.Fatalf("logos saw feedback %q, want [\"\" \"add a source\"]", logosFeedback)
	}
	if st.Rounds[0].Score >= DefaultThreshold || st.Answer != "v2" {
		t.Fatalf("round scores %v %v, answer %q", st.Rounds[0].Score, st.Rounds[1].Score, st.Answer)
	}
}

func TestArbiterAfterMaxRounds(t *testing.T) {
	env := newEnv(t)
	st, err := run(t, env, ConsensusInput{Prompt: "Is P equal to NP? [sim:disagree]", MaxRounds: 2})
	if err != nil {
		t.Fatal(err)
	}
	if st.Status != StatusArbiter || len(st.Rounds) != 2 || st.Arbiter == nil {
		t.Fatalf("status %s after %d rounds, arbiter %v", st.Status, len(st.Rounds), st.Arbiter)
	}
	if st.Answer != st.Arbiter.Answer || st.Arbiter.Note == "" || st.Arbiter.Confidence <= 0 {
		t.Fatalf("arbiter %+v, answer %q", st.Arbiter, st.Answer)
	}
	if last := st.Usage[len(st.Usage)-1]; last.Role != synapse.Arbiter || last.Model != simulator.ModelLarge {
		t.Fatalf("last step %+v, want the arbiter on the large model", last)
	}
}

func TestViolationCapsScore(t *testing.T) {
	env := newEnv(t)
	st, err := run(t, env, ConsensusInput{Prompt: "Summarise [sim:agree] [sim:violate]", MaxRounds: 1})
	if err != nil {
		t.Fatal(err)
	}
	if st.Status != StatusArbiter || st.Rounds[0].Score != synapse.ViolationCap {
		t.Fatalf("status %s score %v, want the arbiter after a score capped at %v", st.Status, st.Rounds[0].Score, synapse.ViolationCap)
	}
}

func TestPlacement(t *testing.T) {
	cases := []struct {
		name      string
		placement Placement
		healthy   bool
		want      string
		wantErr   string
	}{
		{"auto on a healthy hub", PlacementAuto, true, "hub.gpu1", ""},
		{"auto falls back to cloud", PlacementAuto, false, "cloud", ""},
		{"cloud never asks the hub", PlacementCloud, true, "cloud", ""},
		{"hub only fails when unavailable", PlacementHub, false, "", ErrHubUnavailable},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			env := newEnv(t)
			asked := 0
			env.OnActivity(pl.HubAvailable, mock.Anything, "hub.gpu1").Return(
				func(context.Context, string) (activities.HubStatus, error) {
					asked++
					return activities.HubStatus{Healthy: tc.healthy, Reason: "no live worker polls hub.gpu1"}, nil
				})
			st, err := run(t, env, ConsensusInput{Prompt: "hello [sim:agree]", Placement: tc.placement,
				HubQueue: "hub.gpu1", CloudQueue: "cloud"})
			if tc.wantErr != "" {
				var ae *temporal.ApplicationError
				if !errors.As(err, &ae) || ae.Type() != tc.wantErr {
					t.Fatalf("error %v, want type %s", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if st.Placement != tc.want {
				t.Fatalf("placement %s (%s), want %s", st.Placement, st.PlacementNote, tc.want)
			}
			if tc.placement == PlacementCloud && asked != 0 {
				t.Fatalf("placement cloud asked the hub %d times", asked)
			}
		})
	}
}

func TestMalformedOutput(t *testing.T) {
	t.Run("repaired once", func(t *testing.T) {
		env := newEnv(t)
		st, err := run(t, env, ConsensusInput{Prompt: "hi [sim:agree] [sim:malformed-once]"})
		if err != nil {
			t.Fatal(err)
		}
		if st.Status != StatusConsensus || !st.Usage[0].Repaired {
			t.Fatalf("status %s, first step repaired=%v", st.Status, st.Usage[0].Repaired)
		}
	})
	t.Run("round fails with a reason", func(t *testing.T) {
		env := newEnv(t)
		_, err := run(t, env, ConsensusInput{Prompt: "hi [sim:malformed]"})
		var ae *temporal.ApplicationError
		if !errors.As(err, &ae) || ae.Type() != ErrRoundFailed {
			t.Fatalf("error %v, want %s", err, ErrRoundFailed)
		}
		if !strings.Contains(ae.Error(), "pathos's output is unusable after one repair attempt") {
			t.Fatalf("error %q does not say what went wrong", ae.Error())
		}
	})
}

func TestContinueFromState(t *testing.T) {
	env := newEnv(t)
	pathosCalls := 0
	env.OnActivity(inf.Pathos, mock.Anything, mock.Anything).Return(
		func(context.Context, activities.PathosInput) (activities.PathosOutput, error) {
			pathosCalls++
			return activities.PathosOutput{}, errors.New("pathos must not run when resuming with a manifest")
		})
	var got activities.LogosInput
	env.OnActivity(inf.Logos, mock.Anything, mock.Anything).Return(
		func(_ context.Context, in activities.LogosInput) (activities.LogosOutput, error) {
			got = in
			return activities.LogosOutput{Solution: synapse.Solution{Answer: "resumed", Confidence: 0.9}}, nil
		})
	m := synapse.Manifest{Intent: "compare sorts", Confidence: 0.9}
	st, err := run(t, env, ConsensusInput{Prompt: "And for nearly sorted input? [sim:agree]", MaxRounds: 2,
		Resume: &Resume{From: "consensus-earlier", Round: 2, Feedback: "mention insertion sort", Manifest: &m}})
	if err != nil {
		t.Fatal(err)
	}
	if pathosCalls != 0 || got.Round != 3 || got.Feedback != "mention insertion sort" || got.Manifest.Intent != "compare sorts" {
		t.Fatalf("pathos calls %d, logos input %+v", pathosCalls, got)
	}
	if st.Rounds[0].Round != 3 || st.LastRound != 4 || st.Status != StatusConsensus {
		t.Fatalf("rounds %+v last %d status %s", st.Rounds, st.LastRound, st.Status)
	}
}

func TestQueryShowsProgress(t *testing.T) {
	env := newEnv(t)
	var seen ConsensusState
	env.OnActivity(inf.Ethos, mock.Anything, mock.Anything).Return(
		func(_ context.Context, in activities.EthosInput) (activities.EthosOutput, error) {
			v, err := env.QueryWorkflow(QueryState)
			if err != nil {
				return activities.EthosOutput{}, err
			}
			if err := v.Get(&seen); err != nil {
				return activities.EthosOutput{}, err
			}
			return activities.EthosOutput{Verification: synapse.Verification{Scores: synapse.Scores{Accuracy: 1, Relevance: 1, Safety: 1}}}, nil
		})
	if _, err := run(t, env, ConsensusInput{Prompt: "q"}); err != nil {
		t.Fatal(err)
	}
	if seen.Status != StatusRunning || seen.Round != 1 || seen.Manifest == nil || len(seen.Rounds) != 1 ||
		seen.Rounds[0].Solution == nil || seen.Rounds[0].Verification != nil || seen.Steps != 2 {
		t.Fatalf("state during Ethos: %+v", seen)
	}
}

func TestInvalidInput(t *testing.T) {
	for _, in := range []ConsensusInput{
		{Prompt: " "},
		{Prompt: "q", Threshold: 1.5},
		{Prompt: "q", MaxRounds: 11},
		{Prompt: "q", Placement: "moon"},
		{Prompt: "q", Project: "Bad Project!"},
		{Prompt: "q", Placement: PlacementHub},
	} {
		env := newEnv(t)
		_, err := run(t, env, in)
		var ae *temporal.ApplicationError
		if !errors.As(err, &ae) || ae.Type() != ErrInvalidInput {
			t.Errorf("%+v: error %v, want %s", in, err, ErrInvalidInput)
		}
	}
}

func TestRecordsOutcome(t *testing.T) {
	var s testsuite.WorkflowTestSuite
	env := s.NewTestWorkflowEnvironment()
	env.RegisterWorkflow(ConsensusWorkflow)
	env.RegisterActivity(&activities.Inference{})
	env.RegisterActivity(&activities.Records{})
	env.OnActivity(inf.Pathos, mock.Anything, mock.Anything).Return(activities.PathosOutput{Manifest: synapse.Manifest{Intent: "x", Confidence: 1}}, nil)
	env.OnActivity(inf.Logos, mock.Anything, mock.Anything).Return(activities.LogosOutput{Solution: synapse.Solution{Answer: "a", Confidence: 1}}, nil)
	env.OnActivity(inf.Ethos, mock.Anything, mock.Anything).Return(activities.EthosOutput{Verification: synapse.Verification{Scores: synapse.Scores{Accuracy: 1, Relevance: 1, Safety: 1}}}, nil)
	var got store.ConsensusRun
	env.OnActivity(rec.RecordConsensus, mock.Anything, mock.Anything).Return(func(_ context.Context, r store.ConsensusRun) error {
		got = r
		return errors.New("database down")
	})
	env.ExecuteWorkflow(ConsensusWorkflow, ConsensusInput{Prompt: "q", Project: "acme"})
	if err := env.GetWorkflowError(); err != nil {
		t.Fatalf("a failing record must not fail the consensus: %v", err)
	}
	if got.Project != "acme" || got.Status != StatusConsensus || got.Answer != "a" || got.Rounds != 1 || got.Score != 1 {
		t.Fatalf("recorded %+v", got)
	}
}

func TestSuspendedAccountIsRefused(t *testing.T) {
	env := newEnv(t)
	env.OnActivity(rec.CheckAccount, mock.Anything, "broke").Return(
		temporal.NewNonRetryableApplicationError("credit ceiling reached: account broke owes $100.000000", activities.ErrCreditCeiling, nil))
	pathos := 0
	env.OnActivity(inf.Pathos, mock.Anything, mock.Anything).Return(func(context.Context, activities.PathosInput) (activities.PathosOutput, error) {
		pathos++
		return activities.PathosOutput{}, nil
	})
	_, err := run(t, env, ConsensusInput{Prompt: "q", Account: "broke"})
	var ae *temporal.ApplicationError
	if !errors.As(err, &ae) || ae.Type() != activities.ErrCreditCeiling || !strings.HasPrefix(ae.Message(), "credit ceiling reached") {
		t.Fatalf("error %v, want a CreditCeiling failure", err)
	}
	if pathos != 0 {
		t.Fatal("inference ran for a suspended account")
	}
}

func TestBillsEveryStepOnceWithStableIDs(t *testing.T) {
	env := newEnv(t)
	env.OnActivity(rec.CheckAccount, mock.Anything, "acme").Return(nil)
	env.OnActivity(rec.CheckProject, mock.Anything, "acme", mock.Anything).Return(nil)
	var billed []store.Usage
	env.OnActivity(led.LogUsage, mock.Anything, mock.Anything).Return(func(_ context.Context, evs []store.Usage) ([]store.Charge, error) {
		billed = append(billed, evs...)
		return nil, nil
	})
	newLedger(env) // admission's hold; LogUsage is the mock above
	st, err := run(t, env, ConsensusInput{Prompt: "q [sim:disagree]", MaxRounds: 2, Account: "acme", Project: "p"})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"r1-pathos", "r1-logos", "r1-ethos", "r2-logos", "r2-ethos", "r2-arbiter"}
	if len(billed) != len(want) || st.Steps != len(want) {
		t.Fatalf("billed %d events for %d steps", len(billed), st.Steps)
	}
	for i, u := range billed {
		if !strings.HasSuffix(u.EventID, "/"+want[i]) || u.Account != "acme" || u.Project != "p" || u.PromptTokens == 0 ||
			u.Model != st.Usage[i].Model {
			t.Fatalf("event %d: %+v, want id ending /%s", i, u, want[i])
		}
	}
}

func TestCeilingReachedMidRunStopsTheRun(t *testing.T) {
	env := newEnv(t)
	env.OnActivity(rec.CheckAccount, mock.Anything, "acme").Return(nil)
	env.OnActivity(rec.CheckProject, mock.Anything, "acme", mock.Anything).Return(nil)
	env.OnActivity(led.LogUsage, mock.Anything, mock.Anything).Return(nil,
		temporal.NewNonRetryableApplicationError("credit ceiling reached: account acme owes $1.000000", activities.ErrCreditCeiling, nil))
	newLedger(env)
	_, err := run(t, env, ConsensusInput{Prompt: "q [sim:disagree]", MaxRounds: 3, Account: "acme"})
	var ae *temporal.ApplicationError
	if !errors.As(err, &ae) || ae.Type() != activities.ErrCreditCeiling {
		t.Fatalf("error %v", err)
	}
}

func TestStateLogsEachStepAndTheStepInProgress(t *testing.T) {
	env := newEnv(t)
	var seen ConsensusState
	env.OnActivity(inf.Ethos, mock.Anything, mock.Anything).Return(
		func(_ context.Context, in activities.EthosInput) (activities.EthosOutput, error) {
			v, err := env.QueryWorkflow(QueryState)
			if err != nil {
				return activities.EthosOutput{}, err
			}
			if err := v.Get(&seen); err != nil {
				return activities.EthosOutput{}, err
			}
			return activities.EthosOutput{Verification: synapse.Verification{Scores: synapse.Scores{Accuracy: 1, Relevance: 1, Safety: 1}}}, nil
		})
	st, err := run(t, env, ConsensusInput{Prompt: "q", CloudQueue: "cloud"})
	if err != nil {
		t.Fatal(err)
	}
	if cur := seen.Current; cur == nil || cur.ID != "r1-ethos" || cur.Agent != "ethos" || cur.Round != 1 || cur.Queue != "cloud" || cur.StartedAt.IsZero() {
		t.Fatalf("step in progress during Ethos: %+v", seen.Current)
	}
	if len(seen.StepLog) != 2 || seen.StepLog[0].ID != "r1-pathos" || seen.StepLog[1].ID != "r1-logos" {
		t.Fatalf("step log during Ethos: %+v", seen.StepLog)
	}
	if st.Current != nil || len(st.StepLog) != 3 {
		t.Fatalf("final state: current %+v, %d steps logged", st.Current, len(st.StepLog))
	}
	for _, s := range st.StepLog {
		if s.Queue != "cloud" || s.Hub != "" || s.StartedAt.IsZero() || s.DurationMS < 0 {
			t.Fatalf("step %+v", s)
		}
	}
	if l := st.StepLog[1]; l.Model != simulator.ModelSmall || l.PromptTokens == 0 || l.CompletionTokens == 0 {
		t.Fatalf("logos step %+v", l)
	}
}

func TestStepLogNamesTheHubAndTheAdapter(t *testing.T) {
	env := newEnv(t)
	env.OnActivity(pl.HubAvailable, mock.Anything, "hub.gpu1").Return(activities.HubStatus{Healthy: true}, nil)
	env.OnActivity(inf.Logos, mock.Anything, mock.Anything).Return(
		func(_ context.Context, in activities.LogosInput) (activities.LogosOutput, error) {
			return activities.LogosOutput{Solution: synapse.Solution{Answer: "a", Confidence: 1},
				Usage: activities.AgentUsage{Role: synapse.Logos, Model: in.LoRA, PromptTokens: 3, CompletionTokens: 4, RanOn: "cloud"}}, nil
		})
	st, err := run(t, env, ConsensusInput{Prompt: "q [sim:agree]", HubQueue: "hub.gpu1", CloudQueue: "cloud", LoRA: "lora-x"})
	if err != nil {
		t.Fatal(err)
	}
	if p := st.StepLog[0]; p.Queue != "hub.gpu1" || p.Hub != "gpu1" {
		t.Fatalf("pathos step %+v", p)
	}
	if l := st.StepLog[1]; l.Agent != "logos" || l.Adapter != "lora-x" || l.Queue != "cloud" || l.Hub != "" {
		t.Fatalf("logos step %+v", l)
	}
}

// A failed run's state says what failed once, in the application's words,
// without the SDK's activity-error chain (event ids, worker identity).
func TestFailedStateSaysWhatFailedOnce(t *testing.T) {
	env := newEnv(t)
	env.ExecuteWorkflow(ConsensusWorkflow, ConsensusInput{Prompt: "hi [sim:malformed]"})
	if env.GetWorkflowError() == nil {
		t.Fatal("the run should fail")
	}
	v, err := env.QueryWorkflow(QueryState)
	if err != nil {
		t.Fatal(err)
	}
	var st ConsensusState
	if err := v.Get(&st); err != nil {
		t.Fatal(err)
	}
	const what = "output is unusable after one repair attempt"
	if st.Status != StatusFailed || st.ErrorType != ErrRoundFailed || strings.Count(st.Error, what) != 1 {
		t.Fatalf("failed state: %s %s %q", st.Status, st.ErrorType, st.Error)
	}
	for _, internal := range []string{"scheduledEventID", "identity", "activity error", "ActivityTaskFailed"} {
		if strings.Contains(st.Error, internal) {
			t.Fatalf("the failure names SDK internals (%s): %q", internal, st.Error)
		}
	}
}

// A run whose project check fails was never the project's: it is kept, if
// at all, under the caller's own default project, and its state names no
// project whose members could read it.
func TestRefusedProjectRunIsNotTheProjects(t *testing.T) {
	var got []store.ConsensusRun
	env := newEnvRecording(t, func(r store.ConsensusRun) { got = append(got, r) })
	env.OnActivity(rec.CheckAccount, mock.Anything, "mallory").Return(nil)
	env.OnActivity(rec.CheckProject, mock.Anything, "mallory", "acme").Return(
		temporal.NewNonRetryableApplicationError("project acme: no such project of yours", activities.ErrProjectForbidden, nil))
	if _, err := run(t, env, ConsensusInput{Prompt: "planted text", Project: "acme", Account: "mallory"}); err == nil {
		t.Fatal("the run succeeded")
	}
	for _, r := range got {
		if r.Project != DefaultProject || r.Account != "mallory" {
			t.Fatalf("the refused run is recorded as %+v", r)
		}
	}
	v, err := env.QueryWorkflow(QueryState)
	var st ConsensusState
	if err == nil {
		err = v.Get(&st)
	}
	if err != nil || st.Project != DefaultProject {
		t.Fatalf("state of the refused run names project %q (%v)", st.Project, err)
	}
}

// A run whose guest check fails is not recorded at all: not on the host's
// pages, which would show the guest's text.
func TestRefusedGuestRunIsNotRecorded(t *testing.T) {
	recorded := 0
	env := newEnvRecording(t, func(store.ConsensusRun) { recorded++ })
	env.OnActivity(rec.CheckGuest, mock.Anything, "gs-1", "host").Return(store.GuestSession{},
		temporal.NewNonRetryableApplicationError("guest session revoked", "GuestRevoked", nil))
	if _, err := run(t, env, ConsensusInput{Prompt: "planted text", Account: "host", GuestSession: "gs-1"}); err == nil {
		t.Fatal("the run succeeded")
	}
	if recorded != 0 {
		t.Fatalf("the refused guest's run was recorded %d times", recorded)
	}
}
