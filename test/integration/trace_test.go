package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/superinstance/mesh/activities"
	"github.com/superinstance/mesh/internal/config"
	"github.com/superinstance/mesh/internal/devstack"
	"github.com/superinstance/mesh/internal/runner"
	"github.com/superinstance/mesh/internal/simulator"
	"github.com/superinstance/mesh/internal/telemetry"
	"github.com/superinstance/mesh/test/harness"
	"github.com/superinstance/mesh/workers"
	"github.com/superinstance/mesh/workflows"
)

// One trace follows a consensus from the client's span through the
// workflow and each activity to the HTTP call to the inference backend.
func TestTraceFollowsAskToInference(t *testing.T) {
	exp := tracetest.NewInMemoryExporter()
	tp := telemetry.NewProvider("si-test", sdktrace.WithSyncer(exp))
	ic, err := telemetry.TemporalInterceptor(tp)
	if err != nil {
		t.Fatal(err)
	}
	tc := config.Temporal{Address: harness.Temporal(t), Namespace: devstack.Namespace}
	tc.Interceptors = append(tc.Interceptors, ic)
	c, err := tc.Dial(30 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	m := harness.StartMeshOn(t, c, simulator.Options{}, func(_ *harness.Mesh, deps *workers.Cloud) {
		deps.Inference = activities.WrapHTTP(deps.Inference, func(*http.Client) *http.Client {
			return telemetry.HTTPClient(tp, &http.Client{Timeout: time.Minute})
		})
	})
	ctx, root := tp.Tracer("test").Start(context.Background(), "si ask")
	id := runner.NewWorkflowID(time.Now())
	if _, err := runner.Start(ctx, m.Client, id, workflows.ConsensusInput{Prompt: "Why is the sky blue? [sim:agree]",
		Placement: workflows.PlacementCloud}); err != nil {
		t.Fatal(err)
	}
	if err := m.Client.GetWorkflow(ctx, id, "").Get(ctx, nil); err != nil {
		t.Fatal(err)
	}
	root.End()
	// The worker ends its spans as tasks complete; wait for the last ones.
	var spans tracetest.SpanStubs
	deadline := time.Now().Add(10 * time.Second)
	for {
		spans = exp.GetSpans()
		if has(spans, "RunWorkflow:ConsensusWorkflow") || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	// The harness's Temporal and cloud queue are shared with other tests:
	// this worker may also run their workflows' tasks, whose spans name
	// their own workflow or (an HTTP call of theirs) sit in their own trace.
	var mine tracetest.SpanStubs
	for _, s := range spans {
		switch w := workflowOf(s); {
		case w == id && s.SpanContext.TraceID() != root.SpanContext().TraceID():
			t.Errorf("span %q of the run is in another trace", s.Name)
		case w == id, w == "" && s.SpanContext.TraceID() == root.SpanContext().TraceID():
			mine = append(mine, s)
		}
	}
	spans = mine
	byID := map[trace.SpanID]tracetest.SpanStub{}
	for _, s := range spans {
		byID[s.SpanContext.SpanID()] = s
	}
	for _, name := range []string{"StartWorkflow:ConsensusWorkflow", "RunWorkflow:ConsensusWorkflow", "StartActivity:Pathos",
		"RunActivity:Pathos", "RunActivity:Logos", "RunActivity:Ethos"} {
		if !has(spans, name) {
			t.Errorf("no %s span among %v", name, names(spans))
		}
	}
	// Each inference call is a client span under the activity that made it.
	calls := 0
	for _, s := range spans {
		if s.SpanKind != trace.SpanKindClient || !isHTTP(s) {
			continue
		}
		calls++
		parent, ok := byID[s.Parent.SpanID()]
		if !ok || !strings.HasPrefix(parent.Name, "RunActivity:") {
			t.Errorf("HTTP span %q has parent %q", s.Name, parent.Name)
		}
	}
	if calls < 3 {
		t.Fatalf("%d inference calls traced, want one per agent step (3): %v", calls, names(spans))
	}
}

func has(spans tracetest.SpanStubs, name string) bool {
	for _, s := range spans {
		if s.Name == name {
			return true
		}
	}
	return false
}

func names(spans tracetest.SpanStubs) []string {
	var out []string
	for _, s := range spans {
		out = append(out, s.Name)
	}
	return out
}

// workflowOf is the workflow id a Temporal span is tagged with, or "".
func workflowOf(s tracetest.SpanStub) string {
	for _, a := range s.Attributes {
		if a.Key == "temporalWorkflowID" {
			return a.Value.AsString()
		}
	}
	return ""
}

func isHTTP(s tracetest.SpanStub) bool {
	for _, a := range s.Attributes {
		if a.Key == "http.request.method" || a.Key == "http.method" {
			return true
		}
	}
	return false
}

// syncBuffer is a bytes.Buffer safe for the worker's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// The SDK logs through our slog handler, and every line about a workflow or
// an activity carries the workflow id.
func TestLogLinesCarryTheWorkflowID(t *testing.T) {
	var buf syncBuffer
	tc := config.Temporal{Address: harness.Temporal(t), Namespace: devstack.Namespace,
		Logger: slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))}
	c, err := tc.Dial(30 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	m := harness.StartMeshOn(t, c, simulator.Options{})
	id := runner.NewWorkflowID(time.Now())
	// An account that does not exist: the account check fails, and says so.
	if _, err := runner.Start(context.Background(), m.Client, id, workflows.ConsensusInput{Prompt: "q", Account: "nobody-" + id[len(id)-8:],
		Placement: workflows.PlacementCloud}); err != nil {
		t.Fatal(err)
	}
	if err := m.Client.GetWorkflow(context.Background(), id, "").Get(context.Background(), nil); err == nil {
		t.Fatal("a consensus for an unknown account succeeded")
	}
	about := 0
	for _, line := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("not a JSON log line: %q", line)
		}
		_, act := rec["ActivityType"]
		_, wf := rec["WorkflowType"]
		if !act && !wf {
			continue
		}
		about++
		if rec["WorkflowID"] == nil {
			t.Errorf("line without the workflow id: %s", line)
		}
	}
	if about == 0 {
		t.Fatalf("no line about the run was logged:\n%s", buf.String())
	}
}

// A namespace without the mesh's search attributes still runs a consensus
// (the project page just cannot list it while it runs).
func TestConsensusStartsWithoutSearchAttributes(t *testing.T) {
	ts, err := devstack.StartTemporal(devstack.TemporalOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ts.Stop)
	m := harness.StartMeshOn(t, harness.ClientOf(t, ts.Address()), simulator.Options{})
	id := runner.NewWorkflowID(time.Now())
	run, err := runner.Start(context.Background(), m.Client, id, workflows.ConsensusInput{Prompt: "q [sim:agree]", Project: "bare",
		Placement: workflows.PlacementCloud})
	if err != nil {
		t.Fatal(err)
	}
	var st workflows.ConsensusState
	if err := run.Get(context.Background(), &st); err != nil || st.Status != workflows.StatusConsensus {
		t.Fatalf("%+v, %v", st, err)
	}
}
