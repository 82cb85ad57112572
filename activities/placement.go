package activities

import (
	"context"
	"errors"
	"time"

	enumspb "go.temporal.io/api/enums/v1"
	taskqueuepb "go.temporal.io/api/taskqueue/v1"
	"go.temporal.io/api/workflowservice/v1"

	"github.com/superinstance/mesh/hub"
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

// Placement decides where inference may run.
type Placement struct {
	Temporal TaskQueueDescriber
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
}

// HubAvailable reports whether the hub behind queue is healthy in the
// bridge's view and has a live activity poller.
func (p *Placement) HubAvailable(ctx context.Context, queue string) (HubStatus, error) {
	if id := hub.DeviceOf(queue); p.Hubs != nil && id != "" {
		h, err := p.Hubs.HubByID(ctx, id)
		switch {
		case err == nil:
			if ok, why := p.Policy.Check(h, time.Now()); !ok {
				return HubStatus{Reason: why}, nil
			}
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
		return HubStatus{Healthy: true}, nil
	}
	return HubStatus{Reason: "no live worker polls " + queue}, nil
}

func livePoller(ps []*taskqueuepb.PollerInfo, since time.Time) bool {
	for _, p := range ps {
		if p.GetLastAccessTime().AsTime().After(since) {
			return true
		}
	}
	return false
}
