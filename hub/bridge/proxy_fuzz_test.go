package bridge

import (
	"context"
	"strings"
	"testing"
	"time"

	historypb "go.temporal.io/api/history/v1"
	namespacepb "go.temporal.io/api/namespace/v1"
	taskqueuepb "go.temporal.io/api/taskqueue/v1"
	"go.temporal.io/api/workflowservice/v1"
	tokenspb "go.temporal.io/server/api/token/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

	"github.com/superinstance/mesh/hub"
)

// methods is every WorkflowService RPC with its request type.
func methods(t testing.TB) (names []string, inputs []protoreflect.MessageType) {
	t.Helper()
	sd := workflowservice.File_temporal_api_workflowservice_v1_service_proto.Services().ByName("WorkflowService")
	for i := 0; i < sd.Methods().Len(); i++ {
		md := sd.Methods().Get(i)
		mt, err := protoregistry.GlobalTypes.FindMessageByName(md.Input().FullName())
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, rpcPrefix+string(md.Name()))
		inputs = append(inputs, mt)
	}
	return names, inputs
}

func testProxy() *Proxy {
	return &Proxy{opts: ProxyOptions{Namespace: "mesh", Now: time.Now}, tokens: newTokenBook(8), refused: map[string]int{}, inFlight: map[string]int{}}
}

var allowed = map[string]bool{
	rpcGetSystemInfo: true, rpcDescribeNS: true, rpcPollActivity: true, rpcCompleted: true, rpcFailed: true,
	rpcCanceled: true, rpcHeartbeat: true, rpcWorkerHeartbeat: true, rpcShutdownWorker: true,
}

// FuzzProxyCheck decodes arbitrary bytes as the request of any
// WorkflowService RPC, from a device that holds one token of its own, and
// checks that what the filter lets through is only the device's own work.
func FuzzProxyCheck(f *testing.F) {
	names, inputs := methods(f)
	seed := func(method string, m proto.Message) {
		b, _ := proto.Marshal(m)
		for i, n := range names {
			if n == method {
				f.Add(uint16(i), "gpu-a", b)
			}
		}
	}
	own := &taskqueuepb.TaskQueue{Name: hub.Queue("gpu-a")}
	seed(rpcPollActivity, &workflowservice.PollActivityTaskQueueRequest{Namespace: "mesh", TaskQueue: own})
	seed(rpcPollActivity, &workflowservice.PollActivityTaskQueueRequest{Namespace: "mesh", TaskQueue: &taskqueuepb.TaskQueue{Name: "cloud"}})
	seed(rpcPollActivity, &workflowservice.PollActivityTaskQueueRequest{Namespace: "other", TaskQueue: own})
	seed(rpcPollActivity, &workflowservice.PollActivityTaskQueueRequest{Namespace: "mesh", TaskQueue: &taskqueuepb.TaskQueue{Name: hub.Queue("gpu-b")}})
	seed(rpcCompleted, &workflowservice.RespondActivityTaskCompletedRequest{Namespace: "mesh", TaskToken: []byte("token-a")})
	seed(rpcCompleted, &workflowservice.RespondActivityTaskCompletedRequest{Namespace: "mesh", TaskToken: []byte("token-b")})
	seed(rpcHeartbeat, &workflowservice.RecordActivityTaskHeartbeatRequest{Namespace: "mesh", TaskToken: []byte("token-a")})
	seed(rpcDescribeNS, &workflowservice.DescribeNamespaceRequest{Namespace: "mesh"})
	seed(rpcDescribeNS, &workflowservice.DescribeNamespaceRequest{Id: "x"})
	seed(rpcPrefix+"StartWorkflowExecution", &workflowservice.StartWorkflowExecutionRequest{Namespace: "mesh", TaskQueue: own})
	seed(rpcPrefix+"PollWorkflowTaskQueue", &workflowservice.PollWorkflowTaskQueueRequest{Namespace: "mesh", TaskQueue: own})
	f.Add(uint16(0), "", []byte{0xff, 0x01})

	f.Fuzz(func(t *testing.T, mi uint16, device string, payload []byte) {
		if device == "" || strings.ContainsAny(device, "\x00") {
			return
		}
		i := int(mi) % len(names)
		method := names[i]
		req := inputs[i].New().Interface()
		if proto.Unmarshal(payload, req) != nil {
			return
		}
		p := testProxy()
		p.tokens.add(device, []byte("token-a"), time.Now().Add(time.Hour), time.Now())
		p.tokens.add(device+"x", []byte("token-b"), time.Now().Add(time.Hour), time.Now())
		err := p.check(device, method, req)
		scrub(req)
		if len(req.ProtoReflect().GetUnknown()) > 0 {
			t.Fatal("scrub left unknown fields")
		}
		if err != nil {
			if status.Code(err) != codes.PermissionDenied {
				t.Fatalf("%s refused with %v, want PermissionDenied", method, err)
			}
			return
		}
		if !allowed[method] {
			t.Fatalf("%s let through", method)
		}
		switch r := req.(type) {
		case *workflowservice.PollActivityTaskQueueRequest:
			if r.GetNamespace() != "mesh" || r.GetTaskQueue().GetName() != hub.Queue(device) {
				t.Fatalf("poll of %s/%s let through for %s", r.GetNamespace(), r.GetTaskQueue().GetName(), device)
			}
		case *workflowservice.DescribeNamespaceRequest:
			if r.GetNamespace() != "mesh" || r.GetId() != "" {
				t.Fatalf("describe %q/%q let through", r.GetNamespace(), r.GetId())
			}
		case interface {
			GetTaskToken() []byte
			GetNamespace() string
		}:
			if string(r.GetTaskToken()) != "token-a" || r.GetNamespace() != "mesh" {
				t.Fatalf("%s with token %q in %q let through for %s", method, r.GetTaskToken(), r.GetNamespace(), device)
			}
		}
	})
}

func TestTokenBookIsBoundedAndExpires(t *testing.T) {
	now := time.Now()
	b := newTokenBook(3)
	for i := range 5 {
		b.add("a", []byte{byte(i)}, now.Add(time.Hour), now)
	}
	if b.size("a") != 3 {
		t.Fatalf("holds %d tokens, want the bound 3", b.size("a"))
	}
	if b.owns("a", []byte{0}, now) || !b.owns("a", []byte{4}, now) {
		t.Fatal("the oldest token should be the one forgotten")
	}
	if b.owns("b", []byte{4}, now) {
		t.Fatal("another device owns a's token")
	}
	if b.owns("a", []byte{4}, now.Add(2*time.Hour)) {
		t.Fatal("an expired token is still owned")
	}
	b.add("a", []byte{9}, now.Add(time.Minute), now)
	b.add("a", []byte{10}, now.Add(3*time.Hour), now.Add(2*time.Hour)) // the rest expired
	if !b.owns("a", []byte{10}, now.Add(2*time.Hour)) || b.size("a") > 3 {
		t.Fatalf("after expiry: size %d", b.size("a"))
	}
	b.forget("a", []byte{10})
	if b.owns("a", []byte{10}, now) {
		t.Fatal("a forgotten token is still owned")
	}
	if b.owns("a", nil, now) {
		t.Fatal("an empty token is owned")
	}
	// Churn keeps the eviction order bounded.
	for i := range 1000 {
		b.add("c", []byte{byte(i), byte(i >> 8)}, now.Add(time.Hour), now)
		b.forget("c", []byte{byte(i), byte(i >> 8)})
	}
	b.mu.Lock()
	d := b.devs["c"]
	b.mu.Unlock()
	if d != nil && len(d.order) > 6 {
		t.Fatalf("eviction order holds %d keys", len(d.order))
	}
}

// historyStub answers the two reads verify makes: a namespace and one
// workflow whose event 5 schedules activity "1" on hub.gpu-a.
type historyStub struct {
	workflowservice.WorkflowServiceClient
}

func (historyStub) DescribeNamespace(context.Context, *workflowservice.DescribeNamespaceRequest, ...grpc.CallOption) (*workflowservice.DescribeNamespaceResponse, error) {
	return &workflowservice.DescribeNamespaceResponse{NamespaceInfo: &namespacepb.NamespaceInfo{Name: "mesh", Id: "ns-id"}}, nil
}

func (historyStub) GetWorkflowExecutionHistory(_ context.Context, r *workflowservice.GetWorkflowExecutionHistoryRequest, _ ...grpc.CallOption) (*workflowservice.GetWorkflowExecutionHistoryResponse, error) {
	if r.GetExecution().GetWorkflowId() != "wf" || r.GetExecution().GetRunId() != "run" {
		return nil, status.Error(codes.NotFound, "no such workflow")
	}
	var events []*historypb.HistoryEvent
	for id := int64(1); id <= 8; id++ {
		e := &historypb.HistoryEvent{EventId: id}
		if id == 5 {
			e.Attributes = &historypb.HistoryEvent_ActivityTaskScheduledEventAttributes{ActivityTaskScheduledEventAttributes: &historypb.ActivityTaskScheduledEventAttributes{
				ActivityId: "1", TaskQueue: &taskqueuepb.TaskQueue{Name: hub.Queue("gpu-a")}}}
		}
		events = append(events, e)
	}
	return &workflowservice.GetWorkflowExecutionHistoryResponse{History: &historypb.History{Events: events}}, nil
}

// FuzzTokenVerify decodes arbitrary bytes as a task token and checks that
// verify accepts only the one activity scheduled on the device's queue.
func FuzzTokenVerify(f *testing.F) {
	good, _ := proto.Marshal(&tokenspb.Task{NamespaceId: "ns-id", WorkflowId: "wf", RunId: "run", ScheduledEventId: 5, ActivityId: "1"})
	f.Add(good, "gpu-a")
	f.Add(good, "gpu-b")
	wrongEvent, _ := proto.Marshal(&tokenspb.Task{NamespaceId: "ns-id", WorkflowId: "wf", RunId: "run", ScheduledEventId: 6, ActivityId: "1"})
	f.Add(wrongEvent, "gpu-a")
	otherNS, _ := proto.Marshal(&tokenspb.Task{NamespaceId: "other", WorkflowId: "wf", RunId: "run", ScheduledEventId: 5, ActivityId: "1"})
	f.Add(otherNS, "gpu-a")
	f.Add([]byte("forged"), "gpu-a")
	p := testProxy()
	p.opts.Upstream = historyStub{}
	f.Fuzz(func(t *testing.T, tok []byte, device string) {
		ok := p.verify(context.Background(), device, tok)
		if !ok {
			return
		}
		var task tokenspb.Task
		if err := proto.Unmarshal(tok, &task); err != nil {
			t.Fatalf("accepted a token that does not decode: %v", err)
		}
		if device != "gpu-a" || task.GetNamespaceId() != "ns-id" || task.GetScheduledEventId() != 5 || task.GetActivityId() != "1" {
			t.Fatalf("accepted %v for %q", &task, device)
		}
	})
}

func TestVerifyReadsTheHistory(t *testing.T) {
	p := testProxy()
	p.opts.Upstream = historyStub{}
	tok := func(task *tokenspb.Task) []byte {
		b, _ := proto.Marshal(task)
		return b
	}
	good := &tokenspb.Task{NamespaceId: "ns-id", WorkflowId: "wf", RunId: "run", ScheduledEventId: 5, ActivityId: "1"}
	if !p.verify(context.Background(), "gpu-a", tok(good)) {
		t.Fatal("the activity scheduled on hub.gpu-a was not verified for gpu-a")
	}
	for name, c := range map[string]struct {
		device string
		task   *tokenspb.Task
	}{
		"another device":        {"gpu-b", good},
		"another event":         {"gpu-a", &tokenspb.Task{NamespaceId: "ns-id", WorkflowId: "wf", RunId: "run", ScheduledEventId: 6, ActivityId: "1"}},
		"another activity id":   {"gpu-a", &tokenspb.Task{NamespaceId: "ns-id", WorkflowId: "wf", RunId: "run", ScheduledEventId: 5, ActivityId: "2"}},
		"another namespace":     {"gpu-a", &tokenspb.Task{NamespaceId: "x", WorkflowId: "wf", RunId: "run", ScheduledEventId: 5, ActivityId: "1"}},
		"another workflow":      {"gpu-a", &tokenspb.Task{NamespaceId: "ns-id", WorkflowId: "wf2", RunId: "run", ScheduledEventId: 5, ActivityId: "1"}},
		"no run id":             {"gpu-a", &tokenspb.Task{NamespaceId: "ns-id", WorkflowId: "wf", ScheduledEventId: 5, ActivityId: "1"}},
		"a standalone activity": {"gpu-a", &tokenspb.Task{NamespaceId: "ns-id", ComponentRef: []byte("x"), ScheduledEventId: 5, ActivityId: "1"}},
	} {
		if p.verify(context.Background(), c.device, tok(c.task)) {
			t.Errorf("%s: verified", name)
		}
	}
}
