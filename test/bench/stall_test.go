package bench

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// The stall probe is this test binary started again with stallEnv set: one
// thread per CPU, each pinned to its CPU at real-time priority, sleeping
// 10 ms at a time and noting how late each wakeup came. A real-time
// thread preempts every ordinary one, the server's, the simulated hubs' and
// PostgreSQL's, so however busy they keep the cores it wakes within
// microseconds, save for the kernel's own work that cannot be preempted; a
// wakeup late by tens of milliseconds means the CPU itself did not run: the host took the virtual CPU away (which a virtual machine's
// steal does not always count) or its kernel held it. Every wakeup of a
// real-time thread preempts one of the busy ones, at a cost: at a wakeup a
// millisecond the probe took a tenth of a core at 8,000 hubs, so it wakes
// every 10 ms, a fifth of the stall it is there to see. The parent reads the
// longest lateness of a window over the child's stdin and stdout, as it
// drives the swarm.
const stallEnv = "SI_BENCH_STALL_PROBE"

// stallSpoils is the machine stall a missed window's note blames: the
// heartbeats due in a stall wait for its end, so one of the p99 target
// (50 ms) and a hundredth of the 5 s window more by itself makes more than
// 1% of a window's heartbeats late past the target.
const stallSpoils = 50*time.Millisecond + 5*time.Second/100

// stallReply is the probe's answer to a line on its stdin: "reset" starts a
// window, "collect" ends it.
type stallReply struct {
	// RealTime says every probe thread runs at real-time priority; without
	// it (not root) the probe waits behind the busy processes and its
	// lateness is theirs, not the machine's.
	RealTime bool   `json:"real_time"`
	Error    string `json:"error,omitempty"`
	// LongestUs is the latest wakeup of the window, on any CPU, in
	// microseconds.
	LongestUs int64 `json:"longest_us"`
}

// runStallProbe is the probe child: it answers the parent's lines until its
// stdin ends.
func runStallProbe() int {
	// No collection, forced ones included, stops the probe's threads: a
	// wakeup then waits for nothing of its own process.
	debug.SetGCPercent(-1)
	cpus, err := allowedCPUs()
	if err != nil {
		fmt.Fprintln(os.Stderr, "stall probe:", err)
		return 1
	}
	runtime.GOMAXPROCS(len(cpus) + 1)
	var longest atomic.Int64 // nanoseconds, since the last reset
	var realTime atomic.Int32
	var ready sync.WaitGroup
	for _, cpu := range cpus {
		ready.Add(1)
		go func() {
			runtime.LockOSThread()
			if pinRealTime(cpu) == nil {
				realTime.Add(1)
			}
			ready.Done()
			const period = 10 * time.Millisecond
			for {
				start := time.Now()
				sleepThread(period)
				late := time.Since(start) - period
				for {
					cur := longest.Load()
					if int64(late) <= cur || longest.CompareAndSwap(cur, int64(late)) {
						break
					}
				}
			}
		}()
	}
	ready.Wait()
	enc := json.NewEncoder(os.Stdout)
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		r := stallReply{RealTime: int(realTime.Load()) == len(cpus)}
		switch op := in.Text(); op {
		case "reset":
			longest.Store(0)
		case "collect":
			r.LongestUs = longest.Load() / 1e3
		default:
			r.Error = "unknown op " + strconv.Quote(op)
		}
		if err := enc.Encode(r); err != nil {
			return 1
		}
	}
	return 0
}

// stallProbe is the parent's handle on the probe.
type stallProbe struct {
	pid int
	in  *bufio.Writer
	out *bufio.Scanner
	// realTime is whether the probe's threads got real-time priority: only
	// then is its lateness the machine's.
	realTime bool
}

func startStallProbe(b *testing.B) *stallProbe {
	b.Helper()
	// Its threads never stop sleeping on their own: it is killed at once.
	cmd, stdin, stdout := startChild(b, 0, stallEnv+"=1")
	p := &stallProbe{pid: cmd.Process.Pid, in: bufio.NewWriter(stdin), out: bufio.NewScanner(stdout)}
	r, err := p.do("reset")
	if err != nil {
		b.Fatal(err)
	}
	p.realTime = r.RealTime
	if !p.realTime {
		b.Logf("the stall probe runs without real-time priority (it needs root, or CAP_SYS_NICE): machine stalls are not measured")
	}
	return p
}

func (p *stallProbe) do(op string) (stallReply, error) {
	var r stallReply
	if _, err := p.in.WriteString(op + "\n"); err != nil {
		return r, fmt.Errorf("stall probe %s: %w", op, err)
	}
	if err := p.in.Flush(); err != nil {
		return r, fmt.Errorf("stall probe %s: %w", op, err)
	}
	if !p.out.Scan() {
		return r, fmt.Errorf("stall probe %s: the child ended: %v", op, p.out.Err())
	}
	if err := json.Unmarshal(p.out.Bytes(), &r); err != nil {
		return r, fmt.Errorf("stall probe %s: %w", op, err)
	}
	if r.Error != "" {
		return r, fmt.Errorf("stall probe %s: %s", op, r.Error)
	}
	return r, nil
}

// longest is the machine's longest stall since the last reset: how late a
// real-time thread woke (-1 when the probe has no real-time priority).
func (p *stallProbe) longest(b *testing.B) time.Duration {
	b.Helper()
	r, err := p.do("collect")
	if err != nil {
		b.Fatal(err)
	}
	if !p.realTime {
		return -1
	}
	return time.Duration(r.LongestUs) * time.Microsecond
}

// cpu is the CPU time the probe has spent, which is not the other
// processes' of a window.
func (p *stallProbe) cpu() time.Duration {
	_, own, _, _ := procCPU(p.pid)
	return own
}
