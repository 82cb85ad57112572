package workers

import (
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/worker"

	"github.com/superinstance/mesh/activities"
)

// CAQueue is the task queue of the CA role.
const CAQueue = activities.CAQueue

// NewCA builds the CA role's worker: the signing activity only, on
// CAQueue. It is the one process that holds the CA's private key.
func NewCA(c client.Client, ca *activities.CA, opts worker.Options) worker.Worker {
	opts.DisableWorkflowWorker = true
	w := worker.New(c, CAQueue, opts)
	w.RegisterActivity(ca)
	return w
}
