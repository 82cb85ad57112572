// Package node runs everything a hub machine runs: the tunnel agent, its
// local API on loopback, and the hub's Temporal worker on hub.<device-id>,
// which reaches Temporal only through the bridge, over the tunnel.
package node

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"

	"go.opentelemetry.io/otel/trace"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/interceptor"
	"go.temporal.io/sdk/worker"

	"github.com/superinstance/mesh/activities"
	"github.com/superinstance/mesh/hub/agent"
	"github.com/superinstance/mesh/hub/hubcmd"
	"github.com/superinstance/mesh/workers"
)

// Options configures a hub node.
type Options struct {
	Agent agent.Options
	// APIListen serves the local API (for `si escalate`); empty disables it.
	APIListen string
	// APISecretFile holds the local API's secret, created (0600) if missing;
	// required with APIListen. si escalate reads it.
	APISecretFile string
	// OutboxFile keeps escalations and usage records on disk until the
	// bridge answers or acks them (agent.OpenOutbox); what a previous run
	// left there is sent again. Empty keeps them in memory only.
	OutboxFile string
	// Commands, when set, registers Hub.RunCommand on the hub's worker:
	// the cloud may ask for what its allow-list admits, and nothing else.
	Commands *hubcmd.Hub
	// Inference runs the hub's worker on hub.<device-id>; nil runs none.
	// The worker dials Temporal through the bridge's proxy on the tunnel.
	Inference *activities.Inference
	// Namespace is the mesh's Temporal namespace. Default "default".
	Namespace string
	// Worker tunes the hub's worker. Zero: the SDK's defaults, a minute
	// for activities in flight to finish at Stop, and HeartbeatThrottle.
	Worker   worker.Options
	DeviceID string
	// MetricsListen serves /metrics and /ready (agent.OpsHandler), without
	// the API's secret; empty serves neither. Requests with an Origin
	// header are refused, and on a loopback address so is any Host but
	// localhost's (agent.GuardOps).
	MetricsListen string
	// Tracer receives the spans of the local API's requests; nil records none.
	Tracer trace.TracerProvider
	// Interceptors go to the worker's Temporal client (the tracing one
	// continues the cloud's traces in the hub's activities).
	Interceptors []interceptor.ClientInterceptor
}

// Node is a running hub.
type Node struct {
	Agent       *agent.Agent
	apiAddr     string
	metricsAddr string
	polling     chan struct{} // closed once the worker started
	stops       []func()
	once        sync.Once
}

// Start starts the agent (it connects in the background), the local API and the worker.
func Start(o Options) (n *Node, err error) {
	if o.DeviceID == "" {
		return nil, errors.New("hub: device id is required")
	}
	n = &Node{polling: make(chan struct{})}
	defer func() {
		if err != nil {
			n.Stop()
		}
	}()
	if o.OutboxFile != "" {
		ob, err := agent.OpenOutbox(o.OutboxFile)
		if err != nil {
			return nil, err
		}
		o.Agent.Outbox = ob
		// Closed last, after the agent and the API stopped using it.
		n.stops = append(n.stops, func() { _ = ob.Close() })
	}
	n.Agent = agent.New(o.Agent)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = n.Agent.Run(ctx)
	}()
	n.stops = append(n.stops, func() { cancel(); <-done })
	if o.APIListen != "" {
		secret, err := agent.LoadOrCreateSecret(o.APISecretFile)
		if err != nil {
			return nil, err
		}
		l, err := net.Listen("tcp", o.APIListen)
		if err != nil {
			return nil, fmt.Errorf("hub API on %s: %w", o.APIListen, err)
		}
		srv := &http.Server{Handler: agent.HandlerWith(n.Agent, secret, o.Tracer), ReadHeaderTimeout: 10 * time.Second}
		go func() { _ = srv.Serve(l) }()
		n.apiAddr = l.Addr().String()
		n.stops = append(n.stops, func() { _ = srv.Close() })
	}
	if o.MetricsListen != "" {
		l, err := net.Listen("tcp", o.MetricsListen)
		if err != nil {
			return nil, fmt.Errorf("hub metrics on %s: %w", o.MetricsListen, err)
		}
		ta, _ := l.Addr().(*net.TCPAddr)
		ops := agent.GuardOps(agent.OpsHandler(n.Agent, nil), ta != nil && ta.IP.IsLoopback())
		srv := &http.Server{Handler: ops, ReadHeaderTimeout: 10 * time.Second}
		go func() { _ = srv.Serve(l) }()
		n.metricsAddr = l.Addr().String()
		n.stops = append(n.stops, func() { _ = srv.Close() })
	}
	if o.Inference != nil {
		c, err := workers.HubClient(n.Agent.DialTemporal, o.Namespace, o.Agent.Logger, o.Interceptors...)
		if err != nil {
			return nil, fmt.Errorf("hub worker: %w", err)
		}
		wo := o.Worker
		if wo.WorkerStopTimeout == 0 {
			wo.WorkerStopTimeout = time.Minute
		}
		if wo.DefaultHeartbeatThrottleInterval == 0 {
			wo.DefaultHeartbeatThrottleInterval = HeartbeatThrottle
		}
		stop := n.runWorker(ctx, c, o, wo)
		n.stops = append(n.stops, func() { stop(); c.Close() })
	}
	return n, nil
}

// HeartbeatThrottle is how often the hub's worker sends the heartbeats of
// an activity with no heartbeat timeout (a cloud-to-local command): a
// cancelled request's command is killed within about this long.
const HeartbeatThrottle = time.Second

// runWorker starts the hub's worker once the tunnel is up, trying again
// while the bridge cannot take it; the returned func stops it.
func (n *Node) runWorker(ctx context.Context, c client.Client, o Options, wo worker.Options) (stop func()) {
	var (
		mu      sync.Mutex
		w       worker.Worker
		stopped bool
	)
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		log := o.Agent.Logger
		for wait := time.Second; ; wait = min(2*wait, 30*time.Second) {
			if n.Agent.WaitConnected(ctx) != nil {
				return
			}
			hw := workers.NewHub(c, o.DeviceID, o.Inference, wo)
			if o.Commands != nil {
				workers.RegisterHubCommands(hw, o.Commands)
			}
			mu.Lock()
			if stopped {
				mu.Unlock()
				return
			}
			err := hw.Start()
			if err == nil {
				w = hw
				close(n.polling)
				mu.Unlock()
				return
			}
			mu.Unlock()
			if log != nil {
				log.Warn("hub worker could not start through the bridge; retrying", "error", err, "in", wait)
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(wait):
			}
		}
	}()
	return func() {
		mu.Lock()
		stopped = true
		mu.Unlock()
		cancel()
		<-done
		if w != nil {
			w.Stop()
		}
	}
}

// WaitWorker blocks until the hub's worker polls its queue or ctx ends.
func (n *Node) WaitWorker(ctx context.Context) error {
	select {
	case <-n.polling:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// APIAddr is where the local API listens, or "".
func (n *Node) APIAddr() string { return n.apiAddr }

// MetricsAddr is where /metrics and /ready are served, or "".
func (n *Node) MetricsAddr() string { return n.metricsAddr }

// Stop stops the worker, the API and the agent.
func (n *Node) Stop() {
	n.once.Do(func() {
		for i := len(n.stops) - 1; i >= 0; i-- {
			n.stops[i]()
		}
	})
}
