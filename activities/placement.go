package activities

import (
	"context"
	"time"

	enumspb "go.temporal.io/api/enums/v1"
	taskqueuepb "go.temporal.io/api/taskqueue/v1"
	"go.temporal.io/api/workflowservice/v1"
)

// TaskQueueDescriber is the part of the Temporal client Placement needs.
type TaskQueueDescriber interface {
	DescribeTaskQueue(ctx context.Context, taskqueue string, taskqueueType enumspb.TaskQueueType) (*workflowservice.DescribeTaskQueueResponse, error)
}

// Placement decides where inference may run.
type Placement struct {
	Temporal TaskQueueDescriber
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

// HubAvailable reports whether queue has a live activity poller.
func (p *Placement) HubAvailable(ctx context.Context, queue string) (HubStatus, error) {
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
