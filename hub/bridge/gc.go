package bridge

import (
	"os"
	"runtime/debug"
)

// GCPercent is the Go collector's target for a process that runs a bridge:
// GOGC=400 where Go's default is 100. A bridge's heap is mostly its hubs'
// long-lived connection state, and at the default a collection of that heap
// comes every few seconds under thousands of hubs; while it marks, the
// goroutines that allocate (every packet's) are drafted to help, and
// heartbeats stall for tens to hundreds of milliseconds. Four times the
// headroom makes collections four times rarer and their assists lighter,
// for up to five times the live heap in memory (GOMEMLIMIT caps it).
const GCPercent = 400

// TuneGC sets the collector to GCPercent unless the process's GOGC
// environment variable chose already, and returns the percent in force
// (-1 for off) and a function that restores the previous setting.
func TuneGC() (percent int, restore func()) {
	if v := os.Getenv("GOGC"); v != "" {
		prev := debug.SetGCPercent(-1)
		debug.SetGCPercent(prev)
		return prev, func() {}
	}
	prev := debug.SetGCPercent(GCPercent)
	return GCPercent, func() { debug.SetGCPercent(prev) }
}
