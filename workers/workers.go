// Package workers names the task queues and registers workflows and
// activities for the two kinds of worker: the cloud worker and a hub's.
package workers

import (
	"strings"

	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/worker"

	"github.com/superinstance/mesh/activities"
	"github.com/superinstance/mesh/workflows"
)

// CloudQueue is the task queue the cloud worker polls.
const CloudQueue = "cloud"

// HubQueuePrefix starts every hub's task queue.
const HubQueuePrefix = "hub."

// HubQueue is the task queue of the hub with the given device id.
func HubQueue(deviceID string) string { return HubQueuePrefix + deviceID }

// DeviceOf returns the device id of a hub queue, or "" for any other queue.
func DeviceOf(queue string) string {
	id, ok := strings.CutPrefix(queue, HubQueuePrefix)
	if !ok {
		return ""
	}
	return id
}

// Cloud holds what the cloud worker's activities need.
type Cloud struct {
	Inference *activities.Inference
	Placement *activities.Placement
	Records   *activities.Records
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
	r.RegisterActivity(deps.Inference)
	r.RegisterActivity(deps.Placement)
	r.RegisterActivity(deps.Records)
}

// NewHub builds a hub's worker: the inference activities, on hub.<device-id>.
func NewHub(c client.Client, deviceID string, inf *activities.Inference, opts worker.Options) worker.Worker {
	w := worker.New(c, HubQueue(deviceID), opts)
	w.RegisterActivity(inf)
	return w
}
