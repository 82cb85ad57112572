// Package node runs everything a hub machine runs: the tunnel agent, its
// local API on loopback, and the hub's Temporal worker on hub.<device-id>.
package node

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"

	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/worker"

	"github.com/superinstance/mesh/activities"
	"github.com/superinstance/mesh/hub/agent"
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
	// Temporal and Inference run the hub's worker; a nil Temporal runs none.
	Temporal  client.Client
	Inference *activities.Inference
	DeviceID  string
}

// Node is a running hub.
type Node struct {
	Agent   *agent.Agent
	apiAddr string
	stops   []func()
	once    sync.Once
}

// Start starts the agent (it connects in the background), the local API and the worker.
func Start(o Options) (n *Node, err error) {
	if o.DeviceID == "" {
		return nil, errors.New("hub: device id is required")
	}
	n = &Node{Agent: agent.New(o.Agent)}
	defer func() {
		if err != nil {
			n.Stop()
		}
	}()
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
		srv := &http.Server{Handler: agent.Handler(n.Agent, secret), ReadHeaderTimeout: 10 * time.Second}
		go func() { _ = srv.Serve(l) }()
		n.apiAddr = l.Addr().String()
		n.stops = append(n.stops, func() { _ = srv.Close() })
	}
	if o.Temporal != nil {
		w := workers.NewHub(o.Temporal, o.DeviceID, o.Inference, worker.Options{WorkerStopTimeout: time.Minute})
		if err := w.Start(); err != nil {
			return nil, fmt.Errorf("hub worker: %w", err)
		}
		n.stops = append(n.stops, w.Stop)
	}
	return n, nil
}

// APIAddr is where the local API listens, or "".
func (n *Node) APIAddr() string { return n.apiAddr }

// Stop stops the worker, the API and the agent.
func (n *Node) Stop() {
	n.once.Do(func() {
		for i := len(n.stops) - 1; i >= 0; i-- {
			n.stops[i]()
		}
	})
}
