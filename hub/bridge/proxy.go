package bridge

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"

	commonpb "go.temporal.io/api/common/v1"
	enumspb "go.temporal.io/api/enums/v1"
	namespacepb "go.temporal.io/api/namespace/v1"
	taskqueuepb "go.temporal.io/api/taskqueue/v1"
	"go.temporal.io/api/workflowservice/v1"
	tokenspb "go.temporal.io/server/api/token/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"
	grpcpeer "google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/superinstance/mesh/hub"
	"github.com/superinstance/mesh/internal/pki"
)

// StreamTemporal opens a stream that carries the hub worker's gRPC
// connection to the bridge's Temporal proxy.
const StreamTemporal byte = 'T'

// The RPCs a hub's activity worker may make through the proxy. Everything
// else is PermissionDenied.
const (
	rpcPrefix           = "/temporal.api.workflowservice.v1.WorkflowService/"
	rpcGetSystemInfo    = rpcPrefix + "GetSystemInfo"
	rpcDescribeNS       = rpcPrefix + "DescribeNamespace"
	rpcPollActivity     = rpcPrefix + "PollActivityTaskQueue"
	rpcCompleted        = rpcPrefix + "RespondActivityTaskCompleted"
	rpcFailed           = rpcPrefix + "RespondActivityTaskFailed"
	rpcCanceled         = rpcPrefix + "RespondActivityTaskCanceled"
	rpcHeartbeat        = rpcPrefix + "RecordActivityTaskHeartbeat"
	rpcWorkerHeartbeat  = rpcPrefix + "RecordWorkerHeartbeat"
	rpcShutdownWorker   = rpcPrefix + "ShutdownWorker"
	maxProxyMessage     = 4 << 20
	maxIdentity         = 200
	defaultTokenTTL     = time.Hour
	defaultTokensPerHub = 4096
)

// ProxyOptions configures a Proxy.
type ProxyOptions struct {
	// Upstream is the operator's Temporal frontend (client.Client.WorkflowService()).
	Upstream workflowservice.WorkflowServiceClient
	// Namespace is the mesh's Temporal namespace, the only one a hub may
	// name. Default "default".
	Namespace string
	// TokensPerHub bounds the task tokens remembered for one device; past
	// it the oldest is forgotten (its answer is then refused and the
	// activity retries on its timeout). Default 4096.
	TokensPerHub int
	// TokenTTL is how long a task token is remembered when its task names
	// no start-to-close timeout; otherwise that timeout plus a minute.
	// Default 1h.
	TokenTTL time.Duration
	// CallsPerHub bounds one device's calls in flight (long polls
	// included), over all its connections; past it a call is answered
	// ResourceExhausted, which the SDK retries. Default 256.
	CallsPerHub int
	// ConnsPerHub bounds one device's gRPC connections (Temporal streams)
	// open at once, over all its QUIC connections: each is a transport of
	// its own on the bridge. Past it a new one is closed at once. Default 8.
	ConnsPerHub int
	// Now is the clock; nil is time.Now.
	Now    func() time.Time
	Logger *slog.Logger
}

// Proxy is the Temporal frontend a hub's worker sees: a gRPC server, reached
// over the hub's own QUIC connection, that forwards to the operator's
// Temporal only what an activity worker polling hub.<device> needs. The
// device is the certificate's (pki.Identity), never the request's.
type Proxy struct {
	opts   ProxyOptions
	srv    *grpc.Server
	lis    *connListener
	tokens *tokenBook
	done   chan struct{}
	// refused counts calls the gate refused, by method.
	mu       sync.Mutex
	refused  map[string]int
	inFlight map[string]int // by device
	conns    map[string]int // open gRPC connections, by device
}

// NewProxy starts a proxy; ServeConn hands it hub connections.
func NewProxy(o ProxyOptions) (*Proxy, error) {
	if o.Upstream == nil {
		return nil, errors.New("bridge proxy: an upstream Temporal client is required")
	}
	if o.Namespace == "" {
		o.Namespace = "default"
	}
	if o.TokensPerHub <= 0 {
		o.TokensPerHub = defaultTokensPerHub
	}
	if o.TokenTTL <= 0 {
		o.TokenTTL = defaultTokenTTL
	}
	if o.CallsPerHub <= 0 {
		o.CallsPerHub = 256
	}
	if o.ConnsPerHub <= 0 {
		o.ConnsPerHub = 8
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	p := &Proxy{opts: o, lis: newConnListener(), tokens: newTokenBook(o.TokensPerHub), done: make(chan struct{}),
		refused: map[string]int{}, inFlight: map[string]int{}, conns: map[string]int{}}
	p.srv = grpc.NewServer(
		grpc.Creds(deviceCreds{}),
		grpc.MaxRecvMsgSize(maxProxyMessage),
		grpc.MaxConcurrentStreams(256),
		// The SDK pings every 30s, also without calls in flight.
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
		grpc.ChainUnaryInterceptor(p.gate),
		grpc.UnknownServiceHandler(func(any, grpc.ServerStream) error {
			return status.Error(codes.PermissionDenied, "a hub may reach only its own task queue through the bridge")
		}),
	)
	workflowservice.RegisterWorkflowServiceServer(p.srv, &proxyService{p: p})
	go func() {
		defer close(p.done)
		_ = p.srv.Serve(p.lis)
	}()
	return p, nil
}

// ServeConn serves one hub connection (a QUIC stream of StreamTemporal)
// for the device id names, until it or the proxy closes.
// A device past ConnsPerHub has the connection closed at once.
func (p *Proxy) ServeConn(id pki.Identity, c net.Conn) {
	p.mu.Lock()
	if p.conns[id.DeviceID] >= p.opts.ConnsPerHub {
		p.mu.Unlock()
		p.opts.Logger.Warn("hub Temporal connection refused", "device", id.DeviceID, "open", p.opts.ConnsPerHub)
		_ = c.Close()
		return
	}
	p.conns[id.DeviceID]++
	p.mu.Unlock()
	cc := &countedConn{Conn: c, release: func() {
		p.mu.Lock()
		if p.conns[id.DeviceID]--; p.conns[id.DeviceID] <= 0 {
			delete(p.conns, id.DeviceID)
		}
		p.mu.Unlock()
	}}
	if !p.lis.push(&deviceConn{Conn: cc, id: id}) {
		_ = cc.Close()
	}
}

// countedConn frees its device's connection slot when it closes.
type countedConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *countedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}

// Close stops the proxy and every connection it serves.
func (p *Proxy) Close() {
	p.srv.Stop()
	p.lis.Close()
	<-p.done
}

// Refused reports how many calls the proxy refused, by method.
func (p *Proxy) Refused() map[string]int {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make(map[string]int, len(p.refused))
	for k, v := range p.refused {
		out[k] = v
	}
	return out
}

// gate bounds a device's calls in flight and refuses every RPC outside
// the allow-list before a handler sees it.
func (p *Proxy) gate(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	id, ok := deviceOf(ctx)
	if !ok {
		return nil, status.Error(codes.Unauthenticated, "no device certificate")
	}
	// The bound comes first: checking a token may read a history.
	p.mu.Lock()
	if p.inFlight[id.DeviceID] >= p.opts.CallsPerHub {
		p.mu.Unlock()
		return nil, status.Errorf(codes.ResourceExhausted, "device %s has %d Temporal calls in flight through the bridge; try again", id.DeviceID, p.opts.CallsPerHub)
	}
	p.inFlight[id.DeviceID]++
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		if p.inFlight[id.DeviceID]--; p.inFlight[id.DeviceID] <= 0 {
			delete(p.inFlight, id.DeviceID)
		}
		p.mu.Unlock()
	}()
	err := p.check(id.DeviceID, info.FullMethod, req)
	var ut *unknownTokenError
	if errors.As(err, &ut) && p.verify(ctx, id.DeviceID, ut.token) {
		// Handed out by another bridge, or by this one before a restart.
		p.tokens.add(id.DeviceID, ut.token, p.opts.Now().Add(p.opts.TokenTTL), p.opts.Now())
		err = nil
	}
	if err != nil {
		p.mu.Lock()
		if len(p.refused) < 256 {
			p.refused[strings.TrimPrefix(info.FullMethod, rpcPrefix)]++
		}
		p.mu.Unlock()
		p.opts.Logger.Warn("hub Temporal call refused", "device", id.DeviceID, "method", strings.TrimPrefix(info.FullMethod, rpcPrefix), "error", err)
		return nil, err
	}
	return handler(ctx, req)
}

// check decides whether device may make the call method(req). It changes
// nothing; the handlers rewrite what they forward.
func (p *Proxy) check(device, method string, req any) error {
	deny := func(format string, args ...any) error {
		return status.Errorf(codes.PermissionDenied, format, args...)
	}
	ns := func(got string) error {
		if got != p.opts.Namespace {
			return deny("namespace %q: hubs of this mesh work in namespace %q only (si hub --namespace)", got, p.opts.Namespace)
		}
		return nil
	}
	token := func(tok []byte) error {
		if !p.tokens.owns(device, tok, p.opts.Now()) {
			return &unknownTokenError{status.Newf(codes.PermissionDenied, "this task token was not handed to device %s", device), tok}
		}
		return nil
	}
	switch method {
	case rpcGetSystemInfo:
		if _, ok := req.(*workflowservice.GetSystemInfoRequest); ok {
			return nil
		}
	case rpcDescribeNS:
		if r, ok := req.(*workflowservice.DescribeNamespaceRequest); ok {
			if r.GetId() != "" {
				return deny("describe the namespace by name, not by id")
			}
			return ns(r.GetNamespace())
		}
	case rpcPollActivity:
		if r, ok := req.(*workflowservice.PollActivityTaskQueueRequest); ok {
			if err := ns(r.GetNamespace()); err != nil {
				return err
			}
			tq := r.GetTaskQueue()
			if want := hub.Queue(device); tq.GetName() != want || tq.GetNormalName() != "" ||
				(tq.GetKind() != enumspb.TASK_QUEUE_KIND_NORMAL && tq.GetKind() != enumspb.TASK_QUEUE_KIND_UNSPECIFIED) {
				return deny("task queue %q: device %s may poll only %s", tq.GetName(), device, want)
			}
			return nil
		}
	case rpcCompleted:
		if r, ok := req.(*workflowservice.RespondActivityTaskCompletedRequest); ok {
			if err := ns(r.GetNamespace()); err != nil {
				return err
			}
			return token(r.GetTaskToken())
		}
	case rpcFailed:
		if r, ok := req.(*workflowservice.RespondActivityTaskFailedRequest); ok {
			if err := ns(r.GetNamespace()); err != nil {
				return err
			}
			return token(r.GetTaskToken())
		}
	case rpcCanceled:
		if r, ok := req.(*workflowservice.RespondActivityTaskCanceledRequest); ok {
			if err := ns(r.GetNamespace()); err != nil {
				return err
			}
			return token(r.GetTaskToken())
		}
	case rpcHeartbeat:
		if r, ok := req.(*workflowservice.RecordActivityTaskHeartbeatRequest); ok {
			if err := ns(r.GetNamespace()); err != nil {
				return err
			}
			return token(r.GetTaskToken())
		}
	case rpcWorkerHeartbeat, rpcShutdownWorker:
		// Answered by the proxy itself (Unimplemented, which the SDK takes
		// as "not supported"), never forwarded.
		return nil
	}
	return deny("%s is not open to hubs: a hub may only poll and answer its own task queue", strings.TrimPrefix(method, rpcPrefix))
}

// unknownTokenError refuses a task token this proxy did not hand the
// device; gate may still find it was scheduled on the device's queue.
type unknownTokenError struct {
	st    *status.Status
	token []byte
}

func (e *unknownTokenError) Error() string              { return e.st.Err().Error() }
func (e *unknownTokenError) GRPCStatus() *status.Status { return e.st }

// verify reports whether tok names an activity that Temporal scheduled on
// hub.<device> in the mesh's namespace, read from the workflow's history.
// Task tokens are not signed, so only the history, not the token, decides.
func (p *Proxy) verify(ctx context.Context, device string, tok []byte) bool {
	var t tokenspb.Task
	if len(tok) > 4096 || proto.Unmarshal(tok, &t) != nil || t.GetWorkflowId() == "" || t.GetRunId() == "" ||
		t.GetScheduledEventId() <= 0 || t.GetComponentRef() != nil {
		return false
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	ns, err := p.opts.Upstream.DescribeNamespace(ctx, &workflowservice.DescribeNamespaceRequest{Namespace: p.opts.Namespace})
	if err != nil || ns.GetNamespaceInfo().GetId() != t.GetNamespaceId() {
		return false
	}
	req := &workflowservice.GetWorkflowExecutionHistoryRequest{
		Namespace: p.opts.Namespace, MaximumPageSize: 256,
		Execution: &commonpb.WorkflowExecution{WorkflowId: t.GetWorkflowId(), RunId: t.GetRunId()},
	}
	for range 32 {
		resp, err := p.opts.Upstream.GetWorkflowExecutionHistory(ctx, req)
		if err != nil {
			return false
		}
		for _, e := range resp.GetHistory().GetEvents() {
			if e.GetEventId() < t.GetScheduledEventId() {
				continue
			}
			a := e.GetActivityTaskScheduledEventAttributes()
			return e.GetEventId() == t.GetScheduledEventId() && a != nil &&
				a.GetActivityId() == t.GetActivityId() && a.GetTaskQueue().GetName() == hub.Queue(device)
		}
		if len(resp.GetNextPageToken()) == 0 {
			return false
		}
		req.NextPageToken = resp.GetNextPageToken()
	}
	return false
}

// identity is what the history records as the worker: the certificate's
// device, then what the worker called itself.
func identity(device, claimed string) string {
	s := "hub:" + device + " " + claimed
	if len(s) > maxIdentity {
		s = s[:maxIdentity]
	}
	return strings.ToValidUTF8(s, "?")
}

// scrub drops fields a newer server might understand and this proxy
// cannot check, so that what is forwarded is exactly what was checked.
func scrub(m proto.Message) {
	dropUnknown(m.ProtoReflect())
}

// proxyService forwards the allowed calls; the gate has checked them.
type proxyService struct {
	workflowservice.UnimplementedWorkflowServiceServer
	p *Proxy
}

func (s *proxyService) up() workflowservice.WorkflowServiceClient { return s.p.opts.Upstream }

func device(ctx context.Context) string {
	id, _ := deviceOf(ctx)
	return id.DeviceID
}

func (s *proxyService) GetSystemInfo(ctx context.Context, _ *workflowservice.GetSystemInfoRequest) (*workflowservice.GetSystemInfoResponse, error) {
	return s.up().GetSystemInfo(ctx, &workflowservice.GetSystemInfoRequest{})
}

func (s *proxyService) DescribeNamespace(ctx context.Context, r *workflowservice.DescribeNamespaceRequest) (*workflowservice.DescribeNamespaceResponse, error) {
	resp, err := s.up().DescribeNamespace(ctx, &workflowservice.DescribeNamespaceRequest{Namespace: r.GetNamespace()})
	if err != nil {
		return nil, err
	}
	// A worker needs the namespace's capabilities; its configuration
	// (archival, replication, custom data) is the operator's.
	info := resp.GetNamespaceInfo()
	return &workflowservice.DescribeNamespaceResponse{NamespaceInfo: &namespacepb.NamespaceInfo{
		Name: info.GetName(), State: info.GetState(), Capabilities: info.GetCapabilities(),
	}}, nil
}

func (s *proxyService) PollActivityTaskQueue(ctx context.Context, r *workflowservice.PollActivityTaskQueueRequest) (*workflowservice.PollActivityTaskQueueResponse, error) {
	dev := device(ctx)
	fwd := &workflowservice.PollActivityTaskQueueRequest{
		Namespace:         s.p.opts.Namespace,
		TaskQueue:         &taskqueuepb.TaskQueue{Name: hub.Queue(dev), Kind: enumspb.TASK_QUEUE_KIND_NORMAL},
		Identity:          identity(dev, r.GetIdentity()),
		WorkerInstanceKey: r.GetWorkerInstanceKey(),
		TaskQueueMetadata: r.GetTaskQueueMetadata(),
		// No versioning, deployments or control queues: those reach
		// beyond the hub's own queue.
	}
	scrub(fwd)
	resp, err := s.up().PollActivityTaskQueue(ctx, fwd)
	if err != nil {
		return nil, err
	}
	if tok := resp.GetTaskToken(); len(tok) > 0 {
		ttl := s.p.opts.TokenTTL
		if d := resp.GetStartToCloseTimeout(); d != nil && d.AsDuration() > 0 {
			ttl = d.AsDuration() + time.Minute
		}
		s.p.tokens.add(dev, tok, s.p.opts.Now().Add(ttl), s.p.opts.Now())
	}
	return resp, nil
}

func (s *proxyService) RespondActivityTaskCompleted(ctx context.Context, r *workflowservice.RespondActivityTaskCompletedRequest) (*workflowservice.RespondActivityTaskCompletedResponse, error) {
	dev := device(ctx)
	fwd := &workflowservice.RespondActivityTaskCompletedRequest{
		Namespace: s.p.opts.Namespace, TaskToken: r.GetTaskToken(), Result: r.GetResult(), Identity: identity(dev, r.GetIdentity()),
	}
	scrub(fwd)
	resp, err := s.up().RespondActivityTaskCompleted(ctx, fwd)
	s.settled(dev, r.GetTaskToken(), err)
	return resp, err
}

func (s *proxyService) RespondActivityTaskFailed(ctx context.Context, r *workflowservice.RespondActivityTaskFailedRequest) (*workflowservice.RespondActivityTaskFailedResponse, error) {
	dev := device(ctx)
	fwd := &workflowservice.RespondActivityTaskFailedRequest{
		Namespace: s.p.opts.Namespace, TaskToken: r.GetTaskToken(), Failure: r.GetFailure(),
		LastHeartbeatDetails: r.GetLastHeartbeatDetails(), Identity: identity(dev, r.GetIdentity()),
	}
	scrub(fwd)
	resp, err := s.up().RespondActivityTaskFailed(ctx, fwd)
	s.settled(dev, r.GetTaskToken(), err)
	return resp, err
}

func (s *proxyService) RespondActivityTaskCanceled(ctx context.Context, r *workflowservice.RespondActivityTaskCanceledRequest) (*workflowservice.RespondActivityTaskCanceledResponse, error) {
	dev := device(ctx)
	fwd := &workflowservice.RespondActivityTaskCanceledRequest{
		Namespace: s.p.opts.Namespace, TaskToken: r.GetTaskToken(), Details: r.GetDetails(), Identity: identity(dev, r.GetIdentity()),
	}
	scrub(fwd)
	resp, err := s.up().RespondActivityTaskCanceled(ctx, fwd)
	s.settled(dev, r.GetTaskToken(), err)
	return resp, err
}

func (s *proxyService) RecordActivityTaskHeartbeat(ctx context.Context, r *workflowservice.RecordActivityTaskHeartbeatRequest) (*workflowservice.RecordActivityTaskHeartbeatResponse, error) {
	dev := device(ctx)
	fwd := &workflowservice.RecordActivityTaskHeartbeatRequest{
		Namespace: s.p.opts.Namespace, TaskToken: r.GetTaskToken(), Details: r.GetDetails(), Identity: identity(dev, r.GetIdentity()),
	}
	scrub(fwd)
	return s.up().RecordActivityTaskHeartbeat(ctx, fwd)
}

func (s *proxyService) RecordWorkerHeartbeat(context.Context, *workflowservice.RecordWorkerHeartbeatRequest) (*workflowservice.RecordWorkerHeartbeatResponse, error) {
	return nil, status.Error(codes.Unimplemented, "the bridge does not relay worker heartbeats")
}

func (s *proxyService) ShutdownWorker(context.Context, *workflowservice.ShutdownWorkerRequest) (*workflowservice.ShutdownWorkerResponse, error) {
	return nil, status.Error(codes.Unimplemented, "the bridge does not relay worker shutdowns")
}

// settled forgets a token once Temporal has taken the task's answer, or
// says the task is gone (NotFound: completed, timed out or retried).
func (s *proxyService) settled(device string, tok []byte, err error) {
	if err == nil || status.Code(err) == codes.NotFound {
		s.p.tokens.forget(device, tok)
	}
}

// deviceConn is a hub connection and the device its certificate names.
type deviceConn struct {
	net.Conn
	id pki.Identity
}

// deviceAuth carries the device into each call's peer information.
type deviceAuth struct {
	credentials.CommonAuthInfo
	id pki.Identity
}

func (deviceAuth) AuthType() string { return "si-device" }

func deviceOf(ctx context.Context) (pki.Identity, bool) {
	p, ok := grpcpeer.FromContext(ctx)
	if !ok {
		return pki.Identity{}, false
	}
	a, ok := p.AuthInfo.(deviceAuth)
	if !ok || a.id.DeviceID == "" {
		return pki.Identity{}, false
	}
	return a.id, true
}

// deviceCreds are the proxy's transport credentials: the QUIC connection
// under each stream already did mutual TLS, so the handshake only reads
// the device the bridge attached to the connection.
type deviceCreds struct{}

func (deviceCreds) ClientHandshake(context.Context, string, net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return nil, nil, errors.New("bridge proxy: server credentials only")
}

func (deviceCreds) ServerHandshake(c net.Conn) (net.Conn, credentials.AuthInfo, error) {
	dc, ok := c.(*deviceConn)
	if !ok || dc.id.DeviceID == "" {
		return nil, nil, errors.New("bridge proxy: a connection without a device")
	}
	return c, deviceAuth{CommonAuthInfo: credentials.CommonAuthInfo{SecurityLevel: credentials.PrivacyAndIntegrity}, id: dc.id}, nil
}

func (deviceCreds) Info() credentials.ProtocolInfo {
	return credentials.ProtocolInfo{SecurityProtocol: "si-device"}
}
func (c deviceCreds) Clone() credentials.TransportCredentials { return c }
func (deviceCreds) OverrideServerName(string) error           { return nil }

// connListener is a net.Listener whose connections the bridge pushes in.
type connListener struct {
	ch     chan net.Conn
	closed chan struct{}
	once   sync.Once
}

func newConnListener() *connListener {
	return &connListener{ch: make(chan net.Conn), closed: make(chan struct{})}
}

func (l *connListener) push(c net.Conn) bool {
	select {
	case l.ch <- c:
		return true
	case <-l.closed:
		return false
	}
}

func (l *connListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

func (l *connListener) Close() error {
	l.once.Do(func() { close(l.closed) })
	return nil
}

func (l *connListener) Addr() net.Addr { return proxyAddr{} }

type proxyAddr struct{}

func (proxyAddr) Network() string { return "quic-stream" }
func (proxyAddr) String() string  { return "bridge-temporal-proxy" }
