// Package beat heartbeats a Temporal activity on a timer while its work
// runs, so that a dead worker's activity times out within its heartbeat
// timeout and a cancellation reaches the activity (it arrives in a
// heartbeat's answer).
package beat

import (
	"context"
	"time"

	"go.temporal.io/sdk/activity"
)

// Every records a heartbeat now and every interval until the returned stop
// is called or ctx ends; outside an activity it does nothing. The SDK
// batches heartbeats (to a fraction of the heartbeat timeout, or its
// worker's default throttle), so ticking often costs no extra calls to the
// server.
func Every(ctx context.Context, interval time.Duration) (stop func()) {
	if !activity.IsActivity(ctx) {
		return func() {}
	}
	activity.RecordHeartbeat(ctx)
	done, ended := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(ended)
		t := time.NewTicker(interval)
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
