package bridge

import (
	"os"
	"runtime/debug"
	"runtime/metrics"
)

// GCPercent is the Go collector's target for a process that runs a bridge:
// GOGC=400 where Go's default is 100. A bridge's heap is mostly its hubs'
// long-lived connection state, and at the default a collection of that heap
// comes every few seconds under thousands of hubs; while it marks, the
// goroutines that allocate (every packet's) are drafted to help, and
// heartbeats stall for tens to hundreds of milliseconds. Four times the
// headroom makes collections four times rarer and their assists lighter,
// for up to five times the live heap in memory: where memory is limited
// (a container), set GOMEMLIMIT to about nine tenths of the limit, and the
// collector runs sooner as the heap nears it.
const GCPercent = 400

// TuneGC sets the collector to GCPercent unless the process's GOGC
// environment variable chose already, and returns the percent in force
// and a function that restores the previous setting.
func TuneGC() (percent int, restore func()) {
	if v := os.Getenv("GOGC"); v != "" {
		cur := []metrics.Sample{{Name: "/gc/gogc:percent"}}
		metrics.Read(cur)
		if cur[0].Value.Kind() != metrics.KindUint64 {
			return -1, func() {}
		}
		return int(cur[0].Value.Uint64()), func() {}
	}
	prev := debug.SetGCPercent(GCPercent)
	return GCPercent, func() { debug.SetGCPercent(prev) }
}
