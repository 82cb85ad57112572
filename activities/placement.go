package activities

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	enumspb "go.temporal.io/api/enums/v1"
	taskqueuepb "go.temporal.io/api/taskqueue/v1"
	"go.temporal.io/api/workflowservice/v1"

	"github.com/superinstance/mesh/hub"
	"github.com/superinstance/mesh/hub/wire"
	"github.com/superinstance/mesh/internal/store"
)

// TaskQueueDescriber is the part of the Temporal client Placement needs.
type TaskQueueDescriber interface {
	DescribeTaskQueue(ctx context.Context, taskqueue string, taskqueueType enumspb.TaskQueueType) (*workflowservice.DescribeTaskQueueResponse, error)
}

// HubLookup is the part of the registry Placement needs.
type HubLookup interface {
	HubByID(ctx context.Context, deviceID string) (store.Hub, error)
}

// AccountHubLister is the part of the registry PickHub needs.
type AccountHubLister interface {
	AccountHubs(ctx context.Context, account string) ([]store.Hub, error)
}

// Placement decides where inference may run.
type Placement struct {
	Temporal TaskQueueDescriber
	// Accounts lists an account's hubs for PickHub; nil leaves every run
	// that asks in the cloud.
	Accounts AccountHubLister
	// Hubs is the bridge's view of hubs. A hub the bridge knows must be
	// healthy by Policy; a hub it has never seen is judged by its pollers
	// alone. Nil skips the registry.
	Hubs   HubLookup
	Policy hub.Policy
	// PollerFreshness is how recently a poller must have polled to count as
	// live. Default 70s: an idle worker's long poll lasts up to a minute and
	// the server records the poll's start. A hub that died within that window
	// still looks live; the workflow's schedule-to-start timeout covers it.
	PollerFreshness time.Duration
}

// HubStatus says whether a hub's queue can take inference now.
type HubStatus struct {
	Healthy bool
	Reason  string
	// Heartbeats: the hub's hello said its steps heartbeat, so they may
	// have a heartbeat timeout. False (no timeout; StartToClose bounds the
	// step) for an older hub, a hub the registry does not know, and every
	// result an older worker returns or a recorded history holds.
	Heartbeats bool
	// Sampling: the hub's hello said it honours temperature and seed, so a
	// vote's samples may run there. False as Heartbeats is.
	Sampling bool
}

// HubAvailable reports whether the hub behind queue is healthy in the
// bridge's view and has a live activity poller.
func (p *Placement) HubAvailable(ctx context.Context, queue string) (HubStatus, error) {
	var beats, sampled bool
	if id := hub.DeviceOf(queue); p.Hubs != nil && id != "" {
		h, err := p.Hubs.HubByID(ctx, id)
		switch {
		case err == nil:
			if ok, why := p.Policy.Check(h, time.Now()); !ok {
				return HubStatus{Reason: why}, nil
			}
			beats, sampled = heartbeats(h), samples(h)
		case !errors.Is(err, store.ErrNotFound):
			return HubStatus{}, err
		}
	}
	resp, err := p.Temporal.DescribeTaskQueue(ctx, queue, enumspb.TASK_QUEUE_TYPE_ACTIVITY)
	if err != nil {
		return HubStatus{}, err
	}
	fresh := p.PollerFreshness
	if fresh == 0 {
		fresh = 70 * time.Second
	}
	if livePoller(resp.GetPollers(), time.Now().Add(-fresh)) {
		return HubStatus{Healthy: true, Heartbeats: beats, Sampling: sampled}, nil
	}
	return HubStatus{Reason: "no live worker polls " + queue}, nil
}

// heartbeats says whether a registered hub's steps heartbeat: its hello
// said so. An older hub's steps get no heartbeat timeout.
func heartbeats(h store.Hub) bool { return wire.HasFeature(h.Features, wire.FeatureStepHeartbeat) }

// samples says whether a registered hub honours a call's temperature and
// seed: its hello said so.
func samples(h store.Hub) bool { return wire.HasFeature(h.Features, wire.FeatureSampling) }

// noHeartbeatNote is added to a choice's note for an older hub.
const noHeartbeatNote = "; its version does not heartbeat its steps, so they run without a heartbeat timeout"

func livePoller(ps []*taskqueuepb.PollerInfo, since time.Time) bool {
	for _, p := range ps {
		if p.GetLastAccessTime().AsTime().After(since) {
			return true
		}
	}
	return false
}

// PickHubInput asks where an account's next step should run.
type PickHubInput struct {
	Account string
	// Prefer is the hub queue the run was started with. It is a candidate
	// only when the bridge has never registered its device (a worker the
	// operator runs, judged by its pollers alone); a registered device is a
	// candidate only through its own account's list.
	Prefer string
	// Sampling: the step is a vote's sample; only a hub whose hello says it
	// honours temperature and seed is a candidate.
	Sampling bool
}

// HubChoice is where a step runs: a hub's queue, or "" for the cloud, and why.
type HubChoice struct {
	Queue string
	// Note says why, e.g. "hub-b: lowest GPU load (12%) of 2 healthy hubs"
	// or "cloud: no healthy hub (hub-a silent for 20s)".
	Note string
	// Heartbeats and Sampling: as HubStatus's, for the chosen hub.
	Heartbeats bool
	Sampling   bool
}

// PickHub chooses the least loaded healthy hub of in.Account: connected,
// within Policy, with a live poller on its queue; the lowest GPU load wins,
// then the lowest CPU load. Only the account's own hubs are candidates.
// With none healthy the step runs in the cloud.
func (p *Placement) PickHub(ctx context.Context, in PickHubInput) (HubChoice, error) {
	if p.Accounts == nil || in.Account == "" {
		return HubChoice{Note: "cloud: no hub registry"}, nil
	}
	hubs, err := p.Accounts.AccountHubs(ctx, in.Account)
	if err != nil {
		return HubChoice{}, err
	}
	fresh := p.PollerFreshness
	if fresh == 0 {
		fresh = 70 * time.Second
	}
	now := time.Now()
	if id := hub.DeviceOf(in.Prefer); id != "" && p.Hubs != nil && !slices.ContainsFunc(hubs, func(h store.Hub) bool { return h.DeviceID == id }) {
		_, err := p.Hubs.HubByID(ctx, id)
		switch {
		case errors.Is(err, store.ErrNotFound):
			resp, err := p.Temporal.DescribeTaskQueue(ctx, in.Prefer, enumspb.TASK_QUEUE_TYPE_ACTIVITY)
			if err != nil {
				return HubChoice{}, err
			}
			if livePoller(resp.GetPollers(), now.Add(-fresh)) && !in.Sampling {
				return HubChoice{Queue: in.Prefer, Note: id + ": the run's hub, not in the registry (judged by its pollers)"}, nil
			}
		case err != nil:
			return HubChoice{}, err
		}
	}
	if len(hubs) == 0 {
		return HubChoice{Note: "cloud: account " + in.Account + " has no connected hub"}, nil
	}
	var best *store.Hub
	healthy := 0
	var why []string
	for i := range hubs {
		h := &hubs[i]
		if ok, reason := p.Policy.Check(*h, now); !ok {
			why = append(why, reason)
			continue
		}
		if in.Sampling && !samples(*h) {
			why = append(why, h.DeviceID+": its version ignores temperature and seed, so a vote's samples there would be copies")
			continue
		}
		q := hub.Queue(h.DeviceID)
		resp, err := p.Temporal.DescribeTaskQueue(ctx, q, enumspb.TASK_QUEUE_TYPE_ACTIVITY)
		if err != nil {
			return HubChoice{}, err
		}
		if !livePoller(resp.GetPollers(), now.Add(-fresh)) {
			why = append(why, "no live worker polls "+q)
			continue
		}
		healthy++
		if best == nil || h.GPULoad < best.GPULoad || (h.GPULoad == best.GPULoad && h.CPULoad < best.CPULoad) {
			best = h
		}
	}
	if best == nil {
		return HubChoice{Note: "cloud: no healthy hub (" + strings.Join(why, "; ") + ")"}, nil
	}
	note := fmt.Sprintf("%s: lowest GPU load (%.0f%%) of %d healthy hubs", best.DeviceID, best.GPULoad*100, healthy)
	if healthy == 1 {
		note = fmt.Sprintf("%s: the only healthy hub of %d (GPU load %.0f%%)", best.DeviceID, len(hubs), best.GPULoad*100)
	}
	ch := HubChoice{Queue: hub.Queue(best.DeviceID), Note: note, Heartbeats: heartbeats(*best), Sampling: samples(*best)}
	if !ch.Heartbeats {
		ch.Note += noHeartbeatNote
	}
	return ch, nil
}
