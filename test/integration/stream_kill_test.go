package integration

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/worker"

	"github.com/superinstance/mesh/activities"
	"github.com/superinstance/mesh/hub/wire"
	"github.com/superinstance/mesh/internal/llm"
	"github.com/superinstance/mesh/internal/runner"
	"github.com/superinstance/mesh/internal/simulator"
	"github.com/superinstance/mesh/internal/store"
	"github.com/superinstance/mesh/test/harness"
	"github.com/superinstance/mesh/workers"
	"github.com/superinstance/mesh/workflows"
)

// A hub's worker is killed while Logos's completion streams to it: its
// Temporal connection is gone mid-stream, so neither a heartbeat nor a
// result ever comes from it again. The step's heartbeat timeout (5 s, not
// its 2-minute StartToClose) hands the step to a second worker on the same
// hub queue, which streams it from the simulator and finishes the run.
//
// Billing: the killed attempt never reported, so its tokens are not known
// to the workflow and are not billed; the step is billed once, for the
// attempt that finished.
func TestWorkerKilledMidStreamResumesWithinTheHeartbeatTimeout(t *testing.T) {
	m := harness.StartMesh(t, simulator.Options{TokenLatency: 2 * time.Millisecond})
	hub := harness.UniqueID("stream-kill")

	// Worker A's backend: the simulator, except that Logos's stream sends
	// a few chunks and then hangs, as a model does while it generates.
	streaming := make(chan struct{})
	release := make(chan struct{})
	var once sync.Once
	t.Cleanup(func() { close(release) })
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if !bytes.Contains(body, []byte("You are Logos")) || !bytes.Contains(body, []byte(`"stream":true`)) {
			r.Body = io.NopCloser(bytes.NewReader(body))
			m.Sim.ServeHTTP(w, r)
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		for _, tok := range []string{`{"`, `answer`, `":"`} {
			fmt.Fprintf(w, "data: {\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":%q},\"finish_reason\":null}]}\n\n", tok)
			w.(http.Flusher).Flush()
		}
		once.Do(func() { close(streaming) })
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(backend.Close)
	// The hub is registered as a current one, whose hello says its steps
	// heartbeat: only then do they get a heartbeat timeout.
	harness.EnsureAccount(t, m.Store, "stream-kill")
	if err := m.Store.RegisterCert(context.Background(), hub, "stream-kill", "serial-"+hub, time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if _, _, err := m.Store.HubConnected(context.Background(), store.Hub{DeviceID: hub, Version: "v", Features: wire.HubFeatures()}); err != nil {
		t.Fatal(err)
	}
	if err := m.Store.SaveHeartbeats(context.Background(), []store.HubBeat{{DeviceID: hub, At: time.Now(), GPUCount: 1, GPULoad: 0.1, GPUTempC: 50}}); err != nil {
		t.Fatal(err)
	}
	infA := &activities.Inference{LLM: &llm.Client{BaseURL: backend.URL + "/v1"}, Models: m.Inference.Models}
	clientA := harness.ClientOf(t, harness.Temporal(t))
	workerA := workers.NewHub(clientA, hub, infA, worker.Options{})
	if err := workerA.Start(); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	id := harness.UniqueID("consensus")
	if _, err := runner.Start(ctx, m.Client, id, workflows.ConsensusInput{Prompt: "Is 7 prime? [sim:agree]", MaxRounds: 1,
		HubQueue: workers.HubQueue(hub)}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-streaming:
	case <-ctx.Done():
		t.Fatal("Logos never streamed to worker A")
	}
	// The kill: worker A's connection to Temporal is cut; it can neither
	// heartbeat nor answer. (Stopping it runs in the background: a dead
	// process does not wait for its activities.)
	killed := time.Now()
	clientA.Close()
	go workerA.Stop()
	m.StartHub(t, hub)

	st, err := runner.Watch(ctx, m.Client, id, 20*time.Millisecond, func(workflows.ConsensusState) {})
	if err != nil {
		t.Fatal(err)
	}
	if st.Status != workflows.StatusConsensus {
		t.Fatalf("status %s", st.Status)
	}
	logos := 0
	for _, u := range st.Usage {
		if u.Role == "logos" {
			logos++
			if u.RanOn != workers.HubQueue(hub) || u.PromptTokens == 0 || u.CompletionTokens == 0 || u.UsageEstimated {
				t.Fatalf("logos usage %+v", u)
			}
		}
	}
	if logos != 1 {
		t.Fatalf("logos billed %d times: %+v", logos, st.Usage)
	}

	// The second attempt started within the heartbeat timeout (plus the
	// retry's one-second interval and some slack), not at StartToClose.
	iter := m.Client.GetWorkflowHistory(ctx, id, "", false, enumspb.HISTORY_EVENT_FILTER_TYPE_ALL_EVENT)
	scheduled := map[int64]string{}
	found := false
	for iter.HasNext() {
		e, err := iter.Next()
		if err != nil {
			t.Fatal(err)
		}
		switch e.GetEventType() {
		case enumspb.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
			scheduled[e.GetEventId()] = e.GetActivityTaskScheduledEventAttributes().GetActivityType().GetName()
		case enumspb.EVENT_TYPE_ACTIVITY_TASK_STARTED:
			a := e.GetActivityTaskStartedEventAttributes()
			if scheduled[a.GetScheduledEventId()] != "Logos" {
				continue
			}
			found = true
			resumed := e.GetEventTime().AsTime().Sub(killed)
			t.Logf("Logos attempt %d started %s after the kill (last failure: %s)", a.GetAttempt(), resumed.Round(time.Millisecond), a.GetLastFailure().GetMessage())
			if a.GetAttempt() != 2 || !strings.Contains(strings.ToLower(a.GetLastFailure().GetMessage()), "heartbeat") {
				t.Fatalf("Logos finished on attempt %d after %q, want attempt 2 after a heartbeat timeout", a.GetAttempt(), a.GetLastFailure().GetMessage())
			}
			if limit := workflows.StepHeartbeatTimeout + 4*time.Second; resumed > limit {
				t.Fatalf("the second attempt started %s after the kill, more than %s", resumed, limit)
			}
		}
	}
	if !found {
		t.Fatal("no Logos start in the history")
	}
}
