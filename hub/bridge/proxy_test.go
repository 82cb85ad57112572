package bridge_test

import (
	"context"
	"crypto/tls"
	"testing"
	"time"

	commonpb "go.temporal.io/api/common/v1"
	enumspb "go.temporal.io/api/enums/v1"
	querypb "go.temporal.io/api/query/v1"
	taskqueuepb "go.temporal.io/api/taskqueue/v1"
	updatepb "go.temporal.io/api/update/v1"
	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/converter"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/worker"
	"go.temporal.io/sdk/workflow"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/superinstance/mesh/activities"
	"github.com/superinstance/mesh/hub/agent"
	"github.com/superinstance/mesh/hub/bridge"
	"github.com/superinstance/mesh/internal/devstack"
	"github.com/superinstance/mesh/internal/pki"
	"github.com/superinstance/mesh/internal/simulator"
	"github.com/superinstance/mesh/test/harness"
	"github.com/superinstance/mesh/workers"
	"github.com/superinstance/mesh/workflows"
)

// viaBridge is what a hub operator holding only its device certificate can
// reach: a raw WorkflowService client over the hub's tunnel to the bridge.
func viaBridge(t *testing.T, addr string, tc *tls.Config) workflowservice.WorkflowServiceClient {
	t.Helper()
	return grpcVia(t, harness.StartAgent(t, agent.Options{Bridge: addr, TLS: tc}))
}

// grpcVia is one more gRPC connection over a's tunnel.
func grpcVia(t *testing.T, a *agent.Agent) workflowservice.WorkflowServiceClient {
	t.Helper()
	conn, err := grpc.NewClient("passthrough:///bridge", grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(a.DialTemporal))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return workflowservice.NewWorkflowServiceClient(conn)
}

func wantDenied(t *testing.T, what string, err error) {
	t.Helper()
	if status.Code(err) != codes.PermissionDenied {
		t.Errorf("%s: %v, want PermissionDenied", what, err)
	}
}

// hubTaskWorkflow schedules one activity on the queue it is given and
// returns the activity's result.
func hubTaskWorkflow(ctx workflow.Context, queue string) (string, error) {
	ctx = workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
		TaskQueue: queue, StartToCloseTimeout: 30 * time.Second,
		RetryPolicy: &temporal.RetryPolicy{MaximumAttempts: 1},
	})
	var out string
	err := workflow.ExecuteActivity(ctx, "HubTask", "prompt of the victim").Get(ctx, &out)
	return out, err
}

// TestProxyRefusesAHubEverythingButItsOwnQueue is the hub operator's side
// of issue 12: with gpu-evil's certificate, through the bridge, nothing of
// another account or device and nothing but activity work is reachable.
func TestProxyRefusesAHubEverythingButItsOwnQueue(t *testing.T) {
	m := harness.StartMesh(t, simulator.Options{})
	p := harness.NewPKI(t)
	b := harness.StartBridge(t, m, p, "127.0.0.1:0")
	addr := b.Addr().String()
	evil := viaBridge(t, addr, p.Enroll(t, m.Store, pki.Identity{DeviceID: "gpu-evil", Account: "mallory"}, time.Hour))
	victim := viaBridge(t, addr, p.Enroll(t, m.Store, pki.Identity{DeviceID: "gpu-victim", Account: "acme"}, time.Hour))
	ns := devstack.Namespace
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	// The operator's workflow that the attacker goes after: it waits for
	// its activity on the victim's hub queue.
	q := harness.UniqueID("proxy-test")
	w := worker.New(m.Client, q, worker.Options{})
	w.RegisterWorkflowWithOptions(hubTaskWorkflow, workflow.RegisterOptions{Name: "HubTask"})
	if err := w.Start(); err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	wid := harness.UniqueID("hub-task")
	run, err := m.Client.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: wid, TaskQueue: q}, "HubTask", workers.HubQueue("gpu-victim"))
	if err != nil {
		t.Fatal(err)
	}
	exec := &commonpb.WorkflowExecution{WorkflowId: wid}
	input, _ := converter.GetDefaultDataConverter().ToPayloads(workflows.ConsensusInput{Prompt: "free inference", Account: "acme"})

	short := func() (context.Context, context.CancelFunc) { return context.WithTimeout(ctx, 10*time.Second) }
	calls := map[string]func(context.Context) error{
		"StartWorkflowExecution billed to another account": func(c context.Context) error {
			_, err := evil.StartWorkflowExecution(c, &workflowservice.StartWorkflowExecutionRequest{
				Namespace: ns, WorkflowId: "stolen", WorkflowType: &commonpb.WorkflowType{Name: "ConsensusWorkflow"},
				TaskQueue: &taskqueuepb.TaskQueue{Name: workers.CloudQueue}, Input: input, RequestId: "r1",
			})
			return err
		},
		"PollActivityTaskQueue on cloud": func(c context.Context) error {
			_, err := evil.PollActivityTaskQueue(c, &workflowservice.PollActivityTaskQueueRequest{Namespace: ns, TaskQueue: &taskqueuepb.TaskQueue{Name: workers.CloudQueue}})
			return err
		},
		"PollActivityTaskQueue on another hub's queue": func(c context.Context) error {
			_, err := evil.PollActivityTaskQueue(c, &workflowservice.PollActivityTaskQueueRequest{Namespace: ns, TaskQueue: &taskqueuepb.TaskQueue{Name: workers.HubQueue("gpu-victim")}})
			return err
		},
		"PollActivityTaskQueue on a partition of another hub's queue": func(c context.Context) error {
			_, err := evil.PollActivityTaskQueue(c, &workflowservice.PollActivityTaskQueueRequest{Namespace: ns, TaskQueue: &taskqueuepb.TaskQueue{Name: "/_sys/" + workers.HubQueue("gpu-victim") + "/1"}})
			return err
		},
		"PollActivityTaskQueue on its own queue in another namespace": func(c context.Context) error {
			_, err := evil.PollActivityTaskQueue(c, &workflowservice.PollActivityTaskQueueRequest{Namespace: "temporal-system", TaskQueue: &taskqueuepb.TaskQueue{Name: workers.HubQueue("gpu-evil")}})
			return err
		},
		"PollWorkflowTaskQueue on its own queue": func(c context.Context) error {
			_, err := evil.PollWorkflowTaskQueue(c, &workflowservice.PollWorkflowTaskQueueRequest{Namespace: ns, TaskQueue: &taskqueuepb.TaskQueue{Name: workers.HubQueue("gpu-evil")}})
			return err
		},
		"UpdateWorkflowExecution": func(c context.Context) error {
			_, err := evil.UpdateWorkflowExecution(c, &workflowservice.UpdateWorkflowExecutionRequest{Namespace: ns, WorkflowExecution: exec,
				Request:    &updatepb.Request{Meta: &updatepb.Meta{UpdateId: "u1"}, Input: &updatepb.Input{Name: "accept"}},
				WaitPolicy: &updatepb.WaitPolicy{LifecycleStage: enumspb.UPDATE_WORKFLOW_EXECUTION_LIFECYCLE_STAGE_COMPLETED}})
			return err
		},
		"SignalWorkflowExecution": func(c context.Context) error {
			_, err := evil.SignalWorkflowExecution(c, &workflowservice.SignalWorkflowExecutionRequest{Namespace: ns, WorkflowExecution: exec, SignalName: "cancel"})
			return err
		},
		"QueryWorkflow": func(c context.Context) error {
			_, err := evil.QueryWorkflow(c, &workflowservice.QueryWorkflowRequest{Namespace: ns, Execution: exec, Query: &querypb.WorkflowQuery{QueryType: "__stack_trace"}})
			return err
		},
		"GetWorkflowExecutionHistory": func(c context.Context) error {
			_, err := evil.GetWorkflowExecutionHistory(c, &workflowservice.GetWorkflowExecutionHistoryRequest{Namespace: ns, Execution: exec})
			return err
		},
		"ListWorkflowExecutions": func(c context.Context) error {
			_, err := evil.ListWorkflowExecutions(c, &workflowservice.ListWorkflowExecutionsRequest{Namespace: ns})
			return err
		},
		"TerminateWorkflowExecution": func(c context.Context) error {
			_, err := evil.TerminateWorkflowExecution(c, &workflowservice.TerminateWorkflowExecutionRequest{Namespace: ns, WorkflowExecution: exec})
			return err
		},
		"RespondActivityTaskCompletedById": func(c context.Context) error {
			_, err := evil.RespondActivityTaskCompletedById(c, &workflowservice.RespondActivityTaskCompletedByIdRequest{Namespace: ns, WorkflowId: wid, ActivityId: "1"})
			return err
		},
		"RespondActivityTaskCompleted with a forged token": func(c context.Context) error {
			_, err := evil.RespondActivityTaskCompleted(c, &workflowservice.RespondActivityTaskCompletedRequest{Namespace: ns, TaskToken: []byte("forged")})
			return err
		},
	}
	for name, call := range calls {
		c, cancel := short()
		wantDenied(t, name, call(c))
		cancel()
	}

	// The victim's own hub polls its queue and is handed the task...
	pc, pcancel := short()
	task, err := victim.PollActivityTaskQueue(pc, &workflowservice.PollActivityTaskQueueRequest{
		Namespace: ns, TaskQueue: &taskqueuepb.TaskQueue{Name: workers.HubQueue("gpu-victim")}, Identity: "victim worker"})
	pcancel()
	if err != nil || len(task.GetTaskToken()) == 0 {
		t.Fatalf("the victim polling its own queue: %v (token %d bytes)", err, len(task.GetTaskToken()))
	}
	// ...whose token the attacker, having seen it, cannot use.
	forged, _ := converter.GetDefaultDataConverter().ToPayloads("answer of the attacker")
	c, cancel2 := short()
	_, err = evil.RespondActivityTaskCompleted(c, &workflowservice.RespondActivityTaskCompletedRequest{Namespace: ns, TaskToken: task.GetTaskToken(), Result: forged})
	wantDenied(t, "RespondActivityTaskCompleted with another device's token", err)
	_, err = evil.RecordActivityTaskHeartbeat(c, &workflowservice.RecordActivityTaskHeartbeatRequest{Namespace: ns, TaskToken: task.GetTaskToken()})
	wantDenied(t, "RecordActivityTaskHeartbeat with another device's token", err)
	_, err = evil.RespondActivityTaskFailed(c, &workflowservice.RespondActivityTaskFailedRequest{Namespace: ns, TaskToken: task.GetTaskToken()})
	wantDenied(t, "RespondActivityTaskFailed with another device's token", err)
	cancel2()

	// The victim answers its own task; the workflow gets the victim's answer.
	ok, _ := converter.GetDefaultDataConverter().ToPayloads("answer of the victim")
	c, cancel3 := short()
	defer cancel3()
	if _, err := victim.RecordActivityTaskHeartbeat(c, &workflowservice.RecordActivityTaskHeartbeatRequest{Namespace: ns, TaskToken: task.GetTaskToken()}); err != nil {
		t.Fatalf("the victim's heartbeat: %v", err)
	}
	if _, err := victim.RespondActivityTaskCompleted(c, &workflowservice.RespondActivityTaskCompletedRequest{Namespace: ns, TaskToken: task.GetTaskToken(), Result: ok}); err != nil {
		t.Fatalf("the victim answering its own task: %v", err)
	}
	var got string
	if err := run.Get(c, &got); err != nil || got != "answer of the victim" {
		t.Fatalf("workflow result %q, %v; want the victim's answer", got, err)
	}
	// The token is spent: Temporal refuses it.
	if _, err = victim.RespondActivityTaskCompleted(c, &workflowservice.RespondActivityTaskCompletedRequest{Namespace: ns, TaskToken: task.GetTaskToken(), Result: ok}); err == nil {
		t.Fatal("a spent token was taken again")
	}
}

// TestProxyTakesTokensFromAnotherBridge: a hub that polled through one
// bridge replica may answer through another (it reconnected), because
// the task was scheduled on its queue; another device still may not.
func TestProxyTakesTokensFromAnotherBridge(t *testing.T) {
	m := harness.StartMesh(t, simulator.Options{})
	p := harness.NewPKI(t)
	one := harness.StartBridge(t, m, p, "127.0.0.1:0")
	two := harness.StartBridge(t, m, p, "127.0.0.1:0")
	victimTLS := p.Enroll(t, m.Store, pki.Identity{DeviceID: "gpu-moving", Account: "acme"}, time.Hour)
	evilTLS := p.Enroll(t, m.Store, pki.Identity{DeviceID: "gpu-thief", Account: "mallory"}, time.Hour)
	ns := devstack.Namespace
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	q := harness.UniqueID("proxy-replicas")
	w := worker.New(m.Client, q, worker.Options{})
	w.RegisterWorkflowWithOptions(hubTaskWorkflow, workflow.RegisterOptions{Name: "HubTask"})
	if err := w.Start(); err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	run, err := m.Client.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: harness.UniqueID("hub-task"), TaskQueue: q}, "HubTask", workers.HubQueue("gpu-moving"))
	if err != nil {
		t.Fatal(err)
	}
	task, err := viaBridge(t, one.Addr().String(), victimTLS).PollActivityTaskQueue(ctx, &workflowservice.PollActivityTaskQueueRequest{
		Namespace: ns, TaskQueue: &taskqueuepb.TaskQueue{Name: workers.HubQueue("gpu-moving")}})
	if err != nil || len(task.GetTaskToken()) == 0 {
		t.Fatalf("poll: %v", err)
	}
	one.Stop()
	answer, _ := converter.GetDefaultDataConverter().ToPayloads("answered through the second bridge")
	_, err = viaBridge(t, two.Addr().String(), evilTLS).RespondActivityTaskCompleted(ctx, &workflowservice.RespondActivityTaskCompletedRequest{
		Namespace: ns, TaskToken: task.GetTaskToken(), Result: answer})
	wantDenied(t, "another device answering through the second bridge", err)
	if _, err := viaBridge(t, two.Addr().String(), victimTLS).RespondActivityTaskCompleted(ctx, &workflowservice.RespondActivityTaskCompletedRequest{
		Namespace: ns, TaskToken: task.GetTaskToken(), Result: answer}); err != nil {
		t.Fatalf("the hub answering its own task through the second bridge: %v", err)
	}
	var got string
	if err := run.Get(ctx, &got); err != nil || got != "answered through the second bridge" {
		t.Fatalf("workflow result %q, %v", got, err)
	}
}

// TestProxyBoundsADevicesCallsInFlight: one device cannot pile up long
// polls on Temporal through the bridge, whatever number of connections it opens.
func TestProxyBoundsADevicesCallsInFlight(t *testing.T) {
	m := harness.StartMesh(t, simulator.Options{})
	p := harness.NewPKI(t)
	px, err := bridge.NewProxy(bridge.ProxyOptions{Upstream: m.Client.WorkflowService(), Namespace: devstack.Namespace, CallsPerHub: 2})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(px.Close)
	b := harness.StartBridge(t, m, p, "127.0.0.1:0", func(o *bridge.Options) { o.Proxy = px })
	tc := p.Enroll(t, m.Store, pki.Identity{DeviceID: "gpu-greedy", Account: "acme"}, time.Hour)
	a := harness.StartAgent(t, agent.Options{Bridge: b.Addr().String(), TLS: tc})
	conns := []workflowservice.WorkflowServiceClient{grpcVia(t, a), grpcVia(t, a)}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	poll := &workflowservice.PollActivityTaskQueueRequest{Namespace: devstack.Namespace, TaskQueue: &taskqueuepb.TaskQueue{Name: workers.HubQueue("gpu-greedy")}}
	errs := make(chan error, 2)
	for _, c := range conns {
		go func() {
			_, err := c.PollActivityTaskQueue(ctx, poll)
			errs <- err
		}()
	}
	waitFor(t, 10*time.Second, "two polls in flight", func() bool {
		_, err := m.Client.DescribeTaskQueue(ctx, workers.HubQueue("gpu-greedy"), enumspb.TASK_QUEUE_TYPE_ACTIVITY)
		return err == nil
	})
	time.Sleep(300 * time.Millisecond)
	c, ccancel := context.WithTimeout(ctx, 5*time.Second)
	defer ccancel()
	if _, err := conns[0].PollActivityTaskQueue(c, poll); status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("a third poll in flight: %v, want ResourceExhausted", err)
	}
	cancel()
	<-errs
	<-errs
}

// TestProxiedWorkerSurvivesABridgeRestart: the hub's worker reaches
// Temporal again through the next bridge on its own.
func TestProxiedWorkerSurvivesABridgeRestart(t *testing.T) {
	m := harness.StartMesh(t, simulator.Options{})
	p := harness.NewPKI(t)
	b := harness.StartBridge(t, m, p, "127.0.0.1:0")
	addr := b.Addr().String()
	tc := p.Enroll(t, m.Store, pki.Identity{DeviceID: "gpu-restart", Account: "acme"}, time.Hour)
	harness.StartHubNode(t, m, addr, tc, "gpu-restart", harness.FixedVitals(10, 40))

	q := harness.UniqueID("proxy-restart")
	w := worker.New(m.Client, q, worker.Options{})
	w.RegisterWorkflowWithOptions(pathosOn, workflow.RegisterOptions{Name: "PathosOn"})
	if err := w.Start(); err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	run := func() {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
		defer cancel()
		r, err := m.Client.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: harness.UniqueID("pathos"), TaskQueue: q}, "PathosOn", workers.HubQueue("gpu-restart"))
		if err != nil {
			t.Fatal(err)
		}
		if err := r.Get(ctx, nil); err != nil {
			t.Fatal(err)
		}
	}
	run()
	b.Stop()
	harness.StartBridge(t, m, p, addr)
	run()
}

func pathosOn(ctx workflow.Context, queue string) error {
	ctx = workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
		TaskQueue: queue, StartToCloseTimeout: 10 * time.Second, RetryPolicy: &temporal.RetryPolicy{MaximumAttempts: 5},
	})
	var a *activities.Inference
	return workflow.ExecuteActivity(ctx, a.Pathos, activities.PathosInput{Question: "Q [sim:agree]"}).Get(ctx, nil)
}

// TestProxyBoundsADevicesConnections: every Temporal stream is a gRPC
// connection of its own on the bridge (its transport, buffers and
// goroutines), so a device may hold only ConnsPerHub of them, however many
// QUIC connections and streams it opens; one that ends frees its slot.
func TestProxyBoundsADevicesConnections(t *testing.T) {
	m := harness.StartMesh(t, simulator.Options{})
	p := harness.NewPKI(t)
	px, err := bridge.NewProxy(bridge.ProxyOptions{Upstream: m.Client.WorkflowService(), Namespace: devstack.Namespace, ConnsPerHub: 2})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(px.Close)
	b := harness.StartBridge(t, m, p, "127.0.0.1:0", func(o *bridge.Options) { o.Proxy = px })
	tc := p.Enroll(t, m.Store, pki.Identity{DeviceID: "gpu-greedy", Account: "acme"}, time.Hour)
	other := p.Enroll(t, m.Store, pki.Identity{DeviceID: "gpu-neighbour", Account: "acme"}, time.Hour)
	a := harness.StartAgent(t, agent.Options{Bridge: b.Addr().String(), TLS: tc})
	call := func(c workflowservice.WorkflowServiceClient) error {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		_, err := c.GetSystemInfo(ctx, &workflowservice.GetSystemInfoRequest{})
		return err
	}
	dialed := func() (workflowservice.WorkflowServiceClient, func()) {
		conn, err := grpc.NewClient("passthrough:///bridge", grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithContextDialer(a.DialTemporal))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = conn.Close() })
		return workflowservice.NewWorkflowServiceClient(conn), func() { _ = conn.Close() }
	}
	first, closeFirst := dialed()
	second, _ := dialed()
	for i, c := range []workflowservice.WorkflowServiceClient{first, second} {
		if err := call(c); err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
	}
	third, _ := dialed()
	if err := call(third); err == nil {
		t.Fatal("a third gRPC connection of the same device was served")
	}
	if err := call(viaBridge(t, b.Addr().String(), other)); err != nil {
		t.Fatalf("another device: %v", err)
	}
	closeFirst()
	waitFor(t, 10*time.Second, "a freed slot", func() bool {
		c, _ := dialed()
		return call(c) == nil
	})
}
