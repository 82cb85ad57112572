package bridge_test

import (
	"context"
	"crypto/tls"
	"testing"
	"time"

	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/worker"

	"github.com/superinstance/mesh/activities"
	"github.com/superinstance/mesh/hub/bridge"
	"github.com/superinstance/mesh/hub/wire"
	"github.com/superinstance/mesh/internal/pki"
	"github.com/superinstance/mesh/internal/runner"
	"github.com/superinstance/mesh/internal/simulator"
	meshv1 "github.com/superinstance/mesh/proto/meshv1"
	"github.com/superinstance/mesh/test/harness"
	"github.com/superinstance/mesh/workers"
	"github.com/superinstance/mesh/workflows"
)

// olderHub plays a hub built before steps heartbeated: its hello names the
// given features (none for a real older hub) and it beats every 200 ms, so
// the bridge keeps it healthy.
func olderHub(t *testing.T, addr string, tc *tls.Config, features []string) {
	t.Helper()
	conn := dial(t, addr, tc)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s, err := conn.OpenStreamSync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Write([]byte{bridge.StreamControl}); err != nil {
		t.Fatal(err)
	}
	vitals := harness.FixedVitals(10, 50)()
	if err := wire.Write(s, &meshv1.HubMessage{Body: &meshv1.HubMessage_Hello{Hello: &meshv1.Hello{Version: "v0-older", Features: features, Vitals: vitals}}}); err != nil {
		t.Fatal(err)
	}
	go func() { // acks are read and dropped
		r := wire.NewReader(s)
		for {
			var m meshv1.BridgeMessage
			if r.Read(&m) != nil {
				return
			}
		}
	}()
	go func() {
		for seq := uint64(1); conn.Context().Err() == nil; seq++ {
			if wire.Write(s, &meshv1.HubMessage{Body: &meshv1.HubMessage_Heartbeat{Heartbeat: &meshv1.Heartbeat{Seq: seq, Vitals: vitals}}}) != nil {
				return
			}
			time.Sleep(200 * time.Millisecond)
		}
	}()
}

// stepsWithoutHeartbeats are agent steps as an older hub ran them: the
// model call takes longer than the heartbeat timeout and nothing heartbeats.
type stepsWithoutHeartbeats struct {
	inf  *activities.Inference
	call time.Duration
}

// quiet waits as long as s.call, then runs f outside the activity's
// context, so the mesh's inference code (which heartbeats) does not.
func quiet[I, O any](ctx context.Context, s *stepsWithoutHeartbeats, in I, f func(context.Context, I) (O, error)) (O, error) {
	select {
	case <-time.After(s.call):
	case <-ctx.Done():
		var zero O
		return zero, ctx.Err()
	}
	qctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	return f(qctx, in)
}

func (s *stepsWithoutHeartbeats) Pathos(ctx context.Context, in activities.PathosInput) (activities.PathosOutput, error) {
	out, err := quiet(ctx, s, in, s.inf.Pathos)
	out.Usage.RanOn = activity.GetInfo(ctx).TaskQueue
	return out, err
}

func (s *stepsWithoutHeartbeats) Logos(ctx context.Context, in activities.LogosInput) (activities.LogosOutput, error) {
	out, err := quiet(ctx, s, in, s.inf.Logos)
	out.Usage.RanOn = activity.GetInfo(ctx).TaskQueue
	return out, err
}

func (s *stepsWithoutHeartbeats) Ethos(ctx context.Context, in activities.EthosInput) (activities.EthosOutput, error) {
	out, err := quiet(ctx, s, in, s.inf.Ethos)
	out.Usage.RanOn = activity.GetInfo(ctx).TaskQueue
	return out, err
}

func (s *stepsWithoutHeartbeats) Arbiter(ctx context.Context, in activities.ArbiterInput) (activities.ArbiterOutput, error) {
	out, err := quiet(ctx, s, in, s.inf.Arbiter)
	out.Usage.RanOn = activity.GetInfo(ctx).TaskQueue
	return out, err
}

// TestAnOlderHubThatNeverHeartbeatsLosesNoStep: a hub whose hello names no
// features (built before steps heartbeated) runs steps longer than the
// workflow's heartbeat timeout without heartbeating; placement chooses it
// and its steps complete there, without a heartbeat timeout. The control: a
// hub that claims the step-heartbeat feature with the same code loses its
// first step to the heartbeat timeout, as every older hub did before.
func TestAnOlderHubThatNeverHeartbeatsLosesNoStep(t *testing.T) {
	m := harness.StartMesh(t, simulator.Options{})
	p := harness.NewPKI(t)
	b := harness.StartBridge(t, m, p, "127.0.0.1:0")
	slow := workflows.StepHeartbeatTimeout + 1500*time.Millisecond
	start := func(t *testing.T, device string, features []string) (string, client.WorkflowRun) {
		t.Helper()
		account := "acme-" + device
		c := p.Enroll(t, m.Store, pki.Identity{DeviceID: device, Account: account}, time.Hour)
		olderHub(t, b.Addr().String(), c, features)
		// The older hub's worker (directly on Temporal: only its code matters here).
		w := worker.New(m.Client, workers.HubQueue(device), worker.Options{DisableWorkflowWorker: true})
		w.RegisterActivity(&stepsWithoutHeartbeats{inf: m.Inference, call: slow})
		if err := w.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(w.Stop)
		waitFor(t, 10*time.Second, device+" healthy in the registry", func() bool {
			h, err := m.Store.HubByID(context.Background(), device)
			return err == nil && h.Connected && h.GPUCount == 1
		})
		time.Sleep(300 * time.Millisecond) // the worker's pollers register
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		t.Cleanup(cancel)
		id := harness.UniqueID("skew-" + device)
		run, err := runner.Start(ctx, m.Client, id, workflows.ConsensusInput{Prompt: "which sort? [sim:agree]", Account: account,
			MaxRounds: 1, HubQueue: workers.HubQueue(device), Placement: workflows.PlacementHub})
		if err != nil {
			t.Fatal(err)
		}
		return id, run
	}

	t.Run("older hub", func(t *testing.T) {
		_, run := start(t, "gpu-older", nil)
		var st workflows.ConsensusState
		if err := run.Get(context.Background(), &st); err != nil {
			t.Fatalf("the run on the older hub failed: %v", err)
		}
		if st.Status != workflows.StatusConsensus || len(st.Usage) != 3 {
			t.Fatalf("status %s with %d steps, want consensus in 3", st.Status, len(st.Usage))
		}
		for _, u := range st.Usage {
			if u.RanOn != workers.HubQueue("gpu-older") {
				t.Errorf("step %s ran on %q, want the older hub's queue", u.Role, u.RanOn)
			}
		}
	})

	t.Run("control: a hub claiming heartbeats it does not send", func(t *testing.T) {
		id, _ := start(t, "gpu-claims", wire.HubFeatures())
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		defer func() { _ = m.Client.TerminateWorkflow(context.Background(), id, "", "test over") }()
		waitFor(t, 25*time.Second, "the first step's heartbeat timeout", func() bool {
			d, err := m.Client.DescribeWorkflowExecution(ctx, id, "")
			if err != nil {
				return false
			}
			for _, pa := range d.GetPendingActivities() {
				var te interface{ GetTimeoutType() enumspb.TimeoutType }
				if f := pa.GetLastFailure(); f != nil {
					if ti := f.GetTimeoutFailureInfo(); ti != nil {
						te = ti
					}
				}
				if te != nil && te.GetTimeoutType() == enumspb.TIMEOUT_TYPE_HEARTBEAT {
					return true
				}
			}
			return false
		})
	})
}
