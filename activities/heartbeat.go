package activities

import (
	"context"
	"time"

	"github.com/superinstance/mesh/internal/beat"
)

// HeartbeatEvery is how often an agent step heartbeats while its model call
// runs. The workflow's heartbeat timeout is a few of these, so a worker
// killed mid-call loses its step within seconds instead of at its
// StartToClose timeout.
const HeartbeatEvery = time.Second

// heartbeat records a heartbeat now and every HeartbeatEvery until the
// returned stop is called; outside an activity it does nothing.
func heartbeat(ctx context.Context) (stop func()) { return beat.Every(ctx, HeartbeatEvery) }
