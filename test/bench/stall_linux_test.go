//go:build linux

package bench

import (
	"fmt"
	"syscall"
	"time"
	"unsafe"
)

// cpuMask is a CPU set for sched_setaffinity: up to 1024 CPUs.
type cpuMask [16]uint64

// allowedCPUs are the CPUs this process may run on.
func allowedCPUs() ([]int, error) {
	var set cpuMask
	if _, _, e := syscall.RawSyscall(syscall.SYS_SCHED_GETAFFINITY, 0, unsafe.Sizeof(set), uintptr(unsafe.Pointer(&set))); e != 0 {
		return nil, fmt.Errorf("sched_getaffinity: %w", e)
	}
	var cpus []int
	for i := range len(set) * 64 {
		if set[i/64]&(1<<(i%64)) != 0 {
			cpus = append(cpus, i)
		}
	}
	return cpus, nil
}

// pinRealTime keeps the calling thread on cpu and runs it at the lowest
// real-time (SCHED_FIFO) priority.
func pinRealTime(cpu int) error {
	var set cpuMask
	set[cpu/64] |= 1 << (cpu % 64)
	if _, _, e := syscall.RawSyscall(syscall.SYS_SCHED_SETAFFINITY, 0, unsafe.Sizeof(set), uintptr(unsafe.Pointer(&set))); e != 0 {
		return e
	}
	const schedFIFO = 1
	prio := int32(1)
	if _, _, e := syscall.RawSyscall(syscall.SYS_SCHED_SETSCHEDULER, 0, schedFIFO, uintptr(unsafe.Pointer(&prio))); e != 0 {
		return e
	}
	return nil
}

// sleepThread sleeps the calling thread itself for d, not its goroutine:
// the wakeup is the kernel's, with no Go timer between.
func sleepThread(d time.Duration) {
	ts := syscall.NsecToTimespec(int64(d))
	_ = syscall.Nanosleep(&ts, nil)
}
