//go:build !linux

package bench

import (
	"errors"
	"runtime"
	"time"
)

// Elsewhere than on Linux the probe runs its threads at their ordinary
// priority, on whatever CPU: it says so (real_time false), and machine
// stalls are not measured.

func allowedCPUs() ([]int, error) {
	cpus := make([]int, runtime.NumCPU())
	for i := range cpus {
		cpus[i] = i
	}
	return cpus, nil
}

func pinRealTime(int) error { return errors.ErrUnsupported }

func sleepThread(d time.Duration) { time.Sleep(d) }
