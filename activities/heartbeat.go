package activities

import (
	"context"
	"time"

	"go.temporal.io/sdk/activity"
)

// HeartbeatEvery is how often an agent step heartbeats while its model call
// runs. The workflow's heartbeat timeout is a few of these, so a worker
// killed mid-call loses its step within seconds instead of at its
// StartToClose timeout.
const HeartbeatEvery = time.Second

// heartbeat records a heartbeat now and every HeartbeatEvery until the
// returned stop is called; outside an activity it does nothing. The SDK
// batches heartbeats to a fraction of the heartbeat timeout, so ticking
// often costs no extra calls to the server.
func heartbeat(ctx context.Context) (stop func()) {
	if !activity.IsActivity(ctx) {
		return func() {}
	}
	activity.RecordHeartbeat(ctx)
	done := make(chan struct{})
	ended := make(chan struct{})
	go func() {
		defer close(ended)
		t := time.NewTicker(HeartbeatEvery)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				activity.RecordHeartbeat(ctx)
			case <-done:
				return
			case <-ctx.Done():
				return
			}
		}
	}()
	return func() { close(done); <-ended }
}
