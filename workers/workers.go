// Package workers names the task queues and registers workflows and
// activities for the two kinds of worker: the cloud worker and a hub's.
package workers

import (
	"context"
	"io"
	"log/slog"
	"net"

	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/interceptor"
	sdklog "go.temporal.io/sdk/log"
	"go.temporal.io/sdk/worker"
	"google.golang.org/grpc"

	"github.com/superinstance/mesh/activities"
	"github.com/superinstance/mesh/hub"
	"github.com/superinstance/mesh/hub/hubcmd"
	"github.com/superinstance/mesh/internal/billing"
	"github.com/superinstance/mesh/internal/store"
	"github.com/superinstance/mesh/workflows"
)

// CloudQueue is the task queue the cloud worker polls.
const CloudQueue = "cloud"

// HubQueue is the task queue of the hub with the given device id: hub.<id>.
func HubQueue(deviceID string) string { return hub.Queue(deviceID) }

// Cloud holds what the cloud worker's activities need.
type Cloud struct {
	Inference *activities.Inference
	Placement *activities.Placement
	Records   *activities.Records
	Ledger    *activities.Ledger
	// Billing flushes balances to Stripe; nil leaves flushes unregistered.
	Billing *activities.Billing
	Flushes *activities.FlushStarter
	Invites *activities.Invites
	// Adapters registers and loads LoRA adapters; nil (no object store)
	// leaves the adapter workflows unregistered.
	Adapters *activities.Adapters
	// Handovers runs project handovers; nil leaves them unregistered.
	Handovers *activities.Handovers
	// HubCommands keeps the audit of commands asked of hubs; nil leaves
	// HubCommandWorkflow unregistered.
	HubCommands *activities.HubCommands
}

// CloudDeps builds the cloud worker's activities over one Temporal client,
// one store and one inference backend.
func CloudDeps(c client.Client, st *store.Store, inf *activities.Inference) Cloud {
	flushes := Flushes(c, st)
	return Cloud{
		Inference:   inf,
		Placement:   &activities.Placement{Temporal: c, Hubs: st, Accounts: st},
		Records:     &activities.Records{Store: st},
		Ledger:      &activities.Ledger{Store: st, Flushes: flushes},
		Flushes:     flushes,
		Invites:     &activities.Invites{Store: st},
		Handovers:   &activities.Handovers{Store: st, Plan: billing.DefaultPlan},
		HubCommands: &activities.HubCommands{Store: st},
	}
}

// Flushes starts FlushWorkflows on the cloud queue.
func Flushes(c client.Client, st *store.Store) *activities.FlushStarter {
	return &activities.FlushStarter{Store: st, Temporal: c, Queue: CloudQueue, Workflow: workflows.FlushWorkflow,
		NewInput: func(account, id string) any { return workflows.FlushInput{Account: account, FlushID: id} }}
}

// NewCloud builds the cloud worker: every workflow, and every activity.
func NewCloud(c client.Client, deps Cloud, opts worker.Options) worker.Worker {
	w := worker.New(c, CloudQueue, opts)
	RegisterCloud(w, deps)
	return w
}

// RegisterCloud registers the cloud worker's workflows and activities on r.
func RegisterCloud(r worker.Registry, deps Cloud) {
	r.RegisterWorkflow(workflows.ConsensusWorkflow)
	r.RegisterWorkflow(workflows.RecordRunWorkflow)
	r.RegisterWorkflow(workflows.WarmupWorkflow)
	r.RegisterWorkflow(workflows.RenewCertWorkflow)
	r.RegisterWorkflow(workflows.EnrollWorkflow)
	r.RegisterActivity(deps.Inference)
	r.RegisterActivity(deps.Placement)
	r.RegisterActivity(deps.Records)
	r.RegisterActivity(deps.Ledger)
	r.RegisterWorkflow(workflows.FlushWorkflow)
	r.RegisterWorkflow(workflows.SweepWorkflow)
	if deps.Billing != nil {
		r.RegisterActivity(deps.Billing)
	}
	if deps.Flushes != nil {
		r.RegisterActivity(deps.Flushes)
	}
	if deps.Invites != nil {
		r.RegisterActivity(deps.Invites)
		r.RegisterWorkflow(workflows.InviteWorkflow)
	}
	if deps.Handovers != nil {
		r.RegisterActivity(deps.Handovers)
		r.RegisterWorkflow(workflows.HandoverWorkflow)
	}
	if deps.HubCommands != nil {
		r.RegisterActivity(deps.HubCommands)
		r.RegisterWorkflow(workflows.HubCommandWorkflow)
	}
	if deps.Adapters != nil {
		r.RegisterActivity(deps.Adapters)
		r.RegisterWorkflow(workflows.LoRAPushWorkflow)
		r.RegisterWorkflow(workflows.LoRARemoveWorkflow)
	}
}

// NewHub builds a hub's worker: the inference activities, on hub.<device-id>.
// It polls for activities only (the bridge lets a hub do nothing else).
func NewHub(c client.Client, deviceID string, inf *activities.Inference, opts worker.Options) worker.Worker {
	opts.DisableWorkflowWorker = true
	w := worker.New(c, HubQueue(deviceID), opts)
	w.RegisterActivity(inf)
	return w
}

// RegisterHubCommands registers Hub.RunCommand (h's allow-list) on a hub's worker.
func RegisterHubCommands(r worker.ActivityRegistry, h *hubcmd.Hub) {
	// The method alone: no other method of h is reachable from the cloud.
	r.RegisterActivityWithOptions(h.RunCommand, activity.RegisterOptions{Name: hubcmd.ActivityRunCommand})
}

// HubClient is a hub's Temporal client: it reaches the bridge's Temporal
// proxy through dial (agent.DialTemporal, over the hub's own tunnel) and
// holds no Temporal address or credential of its own. It connects lazily,
// when the worker first polls. Interceptors (the tracing one) are the
// client's, so the hub's activities continue the workflow's trace.
func HubClient(dial func(context.Context, string) (net.Conn, error), namespace string, logger *slog.Logger, interceptors ...interceptor.ClientInterceptor) (client.Client, error) {
	if namespace == "" {
		namespace = "default"
	}
	if logger == nil {
		logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return client.NewLazyClient(client.Options{
		// passthrough: the dialer, not DNS, decides where this goes.
		HostPort:  "passthrough:///bridge",
		Namespace: namespace,
		Logger:    sdklog.NewStructuredLogger(logger),
		ConnectionOptions: client.ConnectionOptions{
			DialOptions: []grpc.DialOption{grpc.WithContextDialer(dial)},
		},
		// The bridge answers only what an activity worker needs.
		WorkerHeartbeatInterval: -1,
		Interceptors:            interceptors,
	})
}
