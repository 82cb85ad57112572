package bench

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/quic-go/quic-go"

	"github.com/superinstance/mesh/hub/bridge"
	"github.com/superinstance/mesh/hub/wire"
	"github.com/superinstance/mesh/internal/pki"
	meshv1 "github.com/superinstance/mesh/proto/meshv1"
)

// The simulated hubs of the held-hubs benchmark run in a child process (this
// test binary started again with swarmEnv set), as real hubs run on other
// machines: their goroutines, timers and sockets do not share the bridge's Go
// scheduler, and the CPU each side spends is measured apart. The parent
// drives the swarm over the child's stdin and stdout, one JSON object a line.
const swarmEnv = "SI_BENCH_SWARM"

// swarmPrefault is the heap the simulated hubs touch before their first
// dial (prefault), at most.
const swarmPrefault = 6 << 30

// prefaultSize is swarmPrefault, or half the memory the machine has
// available if that is less: pages the machine would have to swap back in
// would stall the hubs more than the faults they save.
func prefaultSize() int {
	size := swarmPrefault
	if avail, ok := memAvailable(); ok {
		size = min(size, avail/2)
	}
	return size
}

// memAvailable is the kernel's estimate of the memory available for new
// work (MemAvailable in /proc/meminfo), in bytes.
func memAvailable() (int, bool) {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0, false
	}
	for line := range strings.Lines(string(b)) {
		if rest, ok := strings.CutPrefix(line, "MemAvailable:"); ok {
			kb, err := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(rest), " kB"))
			return kb << 10, err == nil
		}
	}
	return 0, false
}

// swarmMemoryLimit is the simulated hubs' memory at which their collector
// runs: ten thousand hubs' handshakes leave about 2.6 GB in their heap, live
// and garbage, and the limit leaves room for the heartbeats' garbage besides,
// so that the collector runs between the peers and not during a level.
const swarmMemoryLimit = 8 << 30

// swarmHub is one hub's credentials, PEM.
type swarmHub struct {
	Cert string `json:"cert"`
	Key  string `json:"key"`
}

type swarmCmd struct {
	// Op is dial (connect Hubs to Addr and start their heartbeats), reset
	// (start a measuring window), collect (end it) or close (end every hub).
	Op   string     `json:"op"`
	Addr string     `json:"addr,omitempty"`
	Echo bool       `json:"echo,omitempty"` // the peer echoes frames (bare quic-go) rather than speaking the tunnel
	CA   string     `json:"ca,omitempty"`
	Hubs []swarmHub `json:"hubs,omitempty"`
}

type swarmReply struct {
	Error     string  `json:"error,omitempty"`
	Connected int     `json:"connected"`
	Beats     int     `json:"beats"`
	P50us     float64 `json:"p50_us"`
	P99us     float64 `json:"p99_us"`
	Errors    int64   `json:"errors"`
	// FirstErrors are the first few hubs' errors, for the log.
	FirstErrors []string      `json:"first_errors,omitempty"`
	CPUs        float64       `json:"cpu_s"` // the child's CPU time since reset
	Runtime     runtimeWindow `json:"runtime"`
}

// swarm is the parent's handle on the child.
type swarm struct {
	cmd *exec.Cmd
	in  *json.Encoder
	out *bufio.Scanner
}

func startSwarm(b *testing.B) *swarm {
	b.Helper()
	// A hub sends one small datagram at a time, which segmentation offload
	// does not help, and the simulated hubs do not mark their packets ECN
	// capable: their quic-go spends less on each packet of the two cores
	// they share with the server. The server keeps quic-go's defaults.
	cmd, stdin, stdout := startChild(b, 10*time.Second, swarmEnv+"=1", "QUIC_GO_DISABLE_GSO=true", "QUIC_GO_DISABLE_ECN=true")
	sc := bufio.NewScanner(stdout)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	return &swarm{cmd: cmd, in: json.NewEncoder(stdin), out: sc}
}

// startChild starts this test binary again with env added, its stderr
// ours, and returns it with its stdin and stdout. At the end of b the child's
// stdin is closed, and the child killed if it has not ended within grace.
func startChild(b *testing.B, grace time.Duration, env ...string) (*exec.Cmd, io.WriteCloser, io.ReadCloser) {
	b.Helper()
	exe, err := os.Executable()
	if err != nil {
		b.Fatal(err)
	}
	cmd := exec.Command(exe, "-test.run=^$")
	cmd.Env = append(os.Environ(), env...)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		_ = stdin.Close()
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(grace):
			_ = cmd.Process.Kill()
			<-done
		}
	})
	return cmd, stdin, stdout
}

func (s *swarm) do(c swarmCmd) (swarmReply, error) {
	if err := s.in.Encode(c); err != nil {
		return swarmReply{}, fmt.Errorf("swarm %s: %w", c.Op, err)
	}
	if !s.out.Scan() {
		return swarmReply{}, fmt.Errorf("swarm %s: the child ended: %v", c.Op, s.out.Err())
	}
	var r swarmReply
	if err := json.Unmarshal(s.out.Bytes(), &r); err != nil {
		return r, fmt.Errorf("swarm %s: %w", c.Op, err)
	}
	if r.Error != "" {
		return r, errors.New(r.Error)
	}
	return r, nil
}

// runSwarm is the child: it serves the parent's commands until stdin ends.
// It stands for as many hub processes as it holds connections, each with a
// heap of one connection, where it holds them all in one heap: a collection
// of ten thousand connections' state stalls every simulated hub at once for
// hundreds of milliseconds, as no real hub's collection would, and misses
// the level for either peer. So its collector runs when one peer's hubs
// are closed, before the next peer's are dialed, and otherwise only when
// its memory nears swarmMemoryLimit: a collection of thousands of hubs'
// handshake garbage while they beat stalls them all for seconds (its sweep
// waits behind every runnable goroutine).
//
// With no collection, all the hubs' garbage is new memory, and on this
// machine's virtual CPUs the kernel's fault and zeroing of a new page are
// dear: a profile of the hubs at 7,000 on bare quic-go spent 9% of their CPU
// in page faults, CPU the server shares. So the child first touches
// swarmPrefault of heap and frees it: the hubs' garbage then lands in pages
// already mapped (the runtime keeps them, being under 95% of its memory
// limit with the collector off), as a real hub's steady heap reuses its
// own.
func runSwarm() int {
	debug.SetGCPercent(-1)
	debug.SetMemoryLimit(swarmMemoryLimit)
	prefault(prefaultSize())
	var (
		mu      sync.Mutex
		rtts    []time.Duration
		errs    atomic.Int64
		firsts  []string // the first errors, under mu
		conns   []bridge.Conn
		trs     []*quic.Transport
		cpuMark time.Duration
		rtMark  goRuntime
	)
	// Each hub beats at its own phase of the second, drawn at random as
	// independent hubs' would be, from one epoch: not from when it was
	// dialed, which would cluster the phases of hubs dialed at a steady
	// pace. Both peers' hubs take the same phases.
	newPhases := func() *rand.Rand { return rand.New(rand.NewPCG(1, 1)) }
	epoch, phases := time.Now(), newPhases()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	closeAll := func() {
		cancel()
		for _, c := range conns {
			_ = c.CloseWithError(0, "")
		}
		wg.Wait()
		for _, tr := range trs {
			_ = tr.Close()
			_ = tr.Conn.Close()
		}
		conns, trs = nil, nil
		errs.Store(0)
		firsts = nil
		phases = newPhases()
		ctx, cancel = context.WithCancel(context.Background())
		// The next peer's hubs start from a heap without these.
		runtime.GC()
	}
	// A socket per thousand hubs, as that many machines would use many: one
	// client socket must not be what overflows.
	transport := func(i int) (*quic.Transport, error) {
		for len(trs) <= i/1000 {
			udp, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
			if err != nil {
				return nil, err
			}
			trs = append(trs, &quic.Transport{Conn: udp}) // quic-go sizes its buffers
		}
		return trs[i/1000], nil
	}
	enc := json.NewEncoder(os.Stdout)
	in := bufio.NewScanner(os.Stdin)
	in.Buffer(make([]byte, 1<<20), 256<<20)
	for in.Scan() {
		var c swarmCmd
		var r swarmReply
		if err := json.Unmarshal(in.Bytes(), &c); err != nil {
			r.Error = err.Error()
			_ = enc.Encode(r)
			continue
		}
		switch c.Op {
		case "dial":
			for _, h := range c.Hubs {
				n := len(conns)
				tc, err := pki.ClientTLS([]byte(c.CA), []byte(h.Cert), []byte(h.Key), "127.0.0.1")
				if err != nil {
					r.Error = err.Error()
					break
				}
				tr, err := transport(n)
				if err != nil {
					r.Error = err.Error()
					break
				}
				dctx, dcancel := context.WithTimeout(ctx, 10*time.Second)
				var hub swarmPeer
				if c.Echo {
					hub, err = dialEcho(dctx, tr, c.Addr, tc)
				} else {
					var th *tunnelHub
					th, err = dialHub(dctx, tr, c.Addr, tc)
					hub = th
				}
				dcancel()
				if err != nil {
					r.Error = fmt.Sprintf("connecting hub %d: %v", n, err)
					break
				}
				conns = append(conns, hub.link())
				wg.Add(1)
				go func(ctx context.Context, offset time.Duration) {
					defer wg.Done()
					select {
					case <-time.After(offset):
					case <-ctx.Done():
						return
					}
					t := time.NewTicker(time.Second)
					defer t.Stop()
					for {
						d, err := hub.beat(benchVitals)
						if err != nil {
							if ctx.Err() == nil {
								errs.Add(1)
								mu.Lock()
								if len(firsts) < 5 {
									firsts = append(firsts, fmt.Sprintf("hub %d at %s: %v", n, time.Now().Format("15:04:05.000"), err))
								}
								mu.Unlock()
							}
							return
						}
						mu.Lock()
						rtts = append(rtts, d)
						mu.Unlock()
						select {
						case <-t.C:
						case <-ctx.Done():
							return
						}
					}
				}(ctx, untilPhase(epoch, phases.Int64N(int64(time.Second))))
			}
		case "reset":
			mu.Lock()
			rtts = rtts[:0]
			mu.Unlock()
			cpuMark = cpuSelf()
			rtMark = readGoRuntime()
		case "collect":
			mu.Lock()
			window := append([]time.Duration(nil), rtts...)
			mu.Unlock()
			r.Beats = len(window)
			if len(window) > 0 {
				r.P50us, r.P99us = us(pct(window, 0.5)), us(pct(window, 0.99))
			}
			r.CPUs = (cpuSelf() - cpuMark).Seconds()
			r.Runtime = readGoRuntime().since(rtMark)
		case "close":
			closeAll()
		default:
			r.Error = "unknown op " + strconv.Quote(c.Op)
		}
		r.Connected = len(conns)
		r.Errors = errs.Load()
		mu.Lock()
		r.FirstErrors = append([]string(nil), firsts...)
		mu.Unlock()
		if err := enc.Encode(r); err != nil {
			return 1
		}
	}
	closeAll()
	return 0
}

// prefault touches size bytes of new heap, a byte a page, and collects
// them, leaving the pages mapped and free for the allocations after it.
func prefault(size int) {
	page := os.Getpagesize()
	func() {
		b := make([]byte, size)
		for i := 0; i < len(b); i += page {
			b[i] = 1
		}
		runtime.KeepAlive(b)
	}()
	runtime.GC()
}

// untilPhase is the wait from now to the next instant phase nanoseconds
// past a whole second since epoch.
func untilPhase(epoch time.Time, phase int64) time.Duration {
	since := time.Since(epoch).Nanoseconds()
	next := since - since%int64(time.Second) + phase
	if next < since {
		next += int64(time.Second)
	}
	return time.Duration(next - since)
}

// swarmPeer is a simulated hub on either peer.
type swarmPeer interface {
	beat(v *meshv1.HardwareVitals) (time.Duration, error)
	link() bridge.Conn
}

func (h *tunnelHub) link() bridge.Conn { return h.conn }

// echoPeer does a tunnel hub's work (frame a heartbeat, decode the reply)
// against an echo of the bytes, so that every peer is measured with the
// same client.
type echoPeer struct {
	w   io.Writer
	r   *wire.Reader
	seq uint64
}

func (h *echoPeer) beat(v *meshv1.HardwareVitals) (time.Duration, error) {
	h.seq++
	var echo meshv1.HubMessage
	return heartbeatRoundTrip(h.w, h.r, h.seq, v, &echo, func() uint64 { return echo.GetHeartbeat().GetSeq() })
}

// echoHub is an echoPeer on a bare quic-go connection's stream.
type echoHub struct {
	conn bridge.Conn
	echoPeer
}

func (h *echoHub) link() bridge.Conn { return h.conn }

func dialEcho(ctx context.Context, tr *quic.Transport, addr string, c *tls.Config) (*echoHub, error) {
	ua, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return nil, err
	}
	qc, err := tr.Dial(ctx, ua, c, &quic.Config{KeepAlivePeriod: 5 * time.Second, MaxIdleTimeout: 60 * time.Second})
	if err != nil {
		return nil, err
	}
	conn := bridge.QUICConn(qc)
	s, err := conn.OpenStreamSync(ctx)
	if err != nil {
		return nil, err
	}
	return &echoHub{conn: conn, echoPeer: echoPeer{w: s, r: wire.NewReader(s)}}, nil
}

// quicEchoServer is the bare quic-go peer of the held-hubs benchmark: the
// bridge's TLS and QUIC settings, and an echo on each stream.
func quicEchoServer(b *testing.B, tc *tls.Config) string {
	b.Helper()
	udp, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		b.Fatal(err)
	}
	tr := &quic.Transport{Conn: udp}
	ln, err := tr.Listen(tc, &quic.Config{KeepAlivePeriod: 5 * time.Second, MaxIdleTimeout: 30 * time.Second,
		HandshakeIdleTimeout: 5 * time.Second, MaxIncomingStreams: 100, MaxIncomingUniStreams: -1})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = ln.Close(); _ = tr.Close(); _ = udp.Close() })
	go func() {
		for {
			c, err := ln.Accept(context.Background())
			if err != nil {
				return
			}
			go func() {
				for {
					s, err := c.AcceptStream(context.Background())
					if err != nil {
						return
					}
					go func() {
						defer s.Close()
						_, _ = io.Copy(s, s)
					}()
				}
			}()
		}
	}()
	return ln.Addr().String()
}

// cpuSelf is this process's CPU time (user and system).
func cpuSelf() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// clockTick is USER_HZ, the unit of /proc's CPU times (100 on Linux's
// mainstream architectures).
const clockTick = 10 * time.Millisecond

// procCPU reads a /proc/PID/stat: the parent's pid, the process's own CPU
// time and that of its children it has waited for.
func procCPU(pid int) (ppid int, own, reaped time.Duration, ok bool) {
	raw, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, 0, 0, false
	}
	s := string(raw)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, 0, 0, false
	}
	f := strings.Fields(s[i+1:]) // f[0] is the state, field 3 of stat(5)
	if len(f) < 15 {
		return 0, 0, 0, false
	}
	n := func(k int) int64 { v, _ := strconv.ParseInt(f[k-3], 10, 64); return v }
	return int(n(4)), time.Duration(n(14)+n(15)) * clockTick, time.Duration(n(16)+n(17)) * clockTick, true
}

// postgresCPU returns a reader of the CPU time the PostgreSQL server behind
// pool has spent: its postmaster's, its live backends' and its ended ones'.
func postgresCPU(b *testing.B, pool *pgxpool.Pool) func() time.Duration {
	b.Helper()
	var backend int
	if err := pool.QueryRow(context.Background(), `SELECT pg_backend_pid()`).Scan(&backend); err != nil {
		b.Fatal(err)
	}
	postmaster, _, _, ok := procCPU(backend)
	if !ok {
		return func() time.Duration { return 0 }
	}
	return func() time.Duration {
		_, own, reaped, _ := procCPU(postmaster)
		total := own + reaped
		entries, _ := os.ReadDir("/proc")
		for _, e := range entries {
			pid, err := strconv.Atoi(e.Name())
			if err != nil {
				continue
			}
			if ppid, own, _, ok := procCPU(pid); ok && ppid == postmaster {
				total += own
			}
		}
		return total
	}
}

// goRuntime is a snapshot of a Go process's runtime/metrics: goroutine
// scheduling latencies, collections and bytes allocated.
type goRuntime struct {
	sched   []uint64
	buckets []float64
	gcs     uint64
	allocs  uint64
	live    uint64
	roots   uint64 // stacks and globals the collector scans, which its goal counts with the live heap
}

func readGoRuntime() goRuntime {
	ss := []metrics.Sample{{Name: "/sched/latencies:seconds"}, {Name: "/gc/cycles/total:gc-cycles"}, {Name: "/gc/heap/allocs:bytes"}, {Name: "/gc/heap/live:bytes"},
		{Name: "/gc/scan/stack:bytes"}, {Name: "/gc/scan/globals:bytes"}}
	metrics.Read(ss)
	h := ss[0].Value.Float64Histogram()
	return goRuntime{sched: append([]uint64(nil), h.Counts...), buckets: h.Buckets, gcs: ss[1].Value.Uint64(), allocs: ss[2].Value.Uint64(),
		live: ss[3].Value.Uint64(), roots: ss[4].Value.Uint64() + ss[5].Value.Uint64()}
}

// runtimeWindow is what a process's Go runtime did in a window: how long
// runnable goroutines waited for a core (the p99 and the longest, to the
// histogram's bucket), how many collections ran and how much was allocated.
// A stall of the process shows here whoever caused it.
type runtimeWindow struct {
	SchedP99us float64 `json:"sched_p99_us"`
	SchedMaxus float64 `json:"sched_max_us"`
	GCs        uint64  `json:"gcs"`
	Allocs     uint64  `json:"allocs"`
	Live       uint64  `json:"live"`  // the heap the last collection kept
	Roots      uint64  `json:"roots"` // stacks and globals scanned
}

func (s goRuntime) since(old goRuntime) runtimeWindow {
	var total uint64
	d := make([]uint64, len(s.sched))
	for i := range s.sched {
		d[i] = s.sched[i] - old.sched[i]
		total += d[i]
	}
	var w runtimeWindow
	var acc uint64
	for i, c := range d {
		acc += c
		if w.SchedP99us == 0 && total > 0 && acc*100 >= total*99 {
			w.SchedP99us = s.buckets[i+1] * 1e6
		}
		if c > 0 {
			w.SchedMaxus = s.buckets[i+1] * 1e6
		}
	}
	w.GCs, w.Allocs, w.Live, w.Roots = s.gcs-old.gcs, s.allocs-old.allocs, s.live, s.roots
	return w
}

func (w runtimeWindow) String() string {
	return fmt.Sprintf("scheduling p99 %.1f ms, longest %.1f ms, %d collections", w.SchedP99us/1e3, w.SchedMaxus/1e3, w.GCs)
}

// udpDropped is the machine's count of UDP datagrams dropped for a full
// receive buffer (/proc/net/snmp's RcvbufErrors), every socket together.
func udpDropped() int64 {
	raw, err := os.ReadFile("/proc/net/snmp")
	if err != nil {
		return 0
	}
	var names []string
	for _, line := range strings.Split(string(raw), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || f[0] != "Udp:" {
			continue
		}
		if names == nil {
			names = f
			continue
		}
		for i, n := range names {
			if n == "RcvbufErrors" && i < len(f) {
				v, _ := strconv.ParseInt(f[i], 10, 64)
				return v
			}
		}
	}
	return 0
}

// machineCPU is the busy CPU time of every core of the machine, all
// processes together (/proc/stat).
func machineCPU() time.Duration {
	busy, _ := machineTimes()
	return busy
}

// machineSteal is the time the host ran others while this machine's
// virtual CPUs were ready to run (/proc/stat's steal), all CPUs together.
func machineSteal() time.Duration {
	_, steal := machineTimes()
	return steal
}

// machineTimes reads /proc/stat's first line: the CPU time spent busy,
// and the time stolen by the host.
func machineTimes() (busy, steal time.Duration) {
	raw, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0
	}
	line, _, _ := strings.Cut(string(raw), "\n")
	f := strings.Fields(line)
	var b, st int64
	for i, v := range f[1:] {
		n, _ := strconv.ParseInt(v, 10, 64)
		switch {
		case i == 7:
			st = n
		case i == 3 || i == 4 || i > 7: // idle, iowait; guest times are within user
		default:
			b += n
		}
	}
	return time.Duration(b) * clockTick, time.Duration(st) * clockTick
}

// cpuSplit is where the CPU went during a window, in cores.
// stolen is what the host took from this virtual machine's CPUs while
// they were ready to run (steal time), in cores.
type cpuSplit struct{ hubs, server, postgres, probe, others, stolen float64 }

func (c cpuSplit) String() string {
	return fmt.Sprintf("CPU cores: simulated hubs %.2f, server process %.2f, PostgreSQL %.2f, stall probe %.2f, other processes %.2f, taken by the host %.2f",
		c.hubs, c.server, c.postgres, c.probe, c.others, c.stolen)
}

// levelResult is one level of hubs measured for one window.
type levelResult struct {
	hubs, beats int
	p50, p99    time.Duration
	errors      int64
	dropped     int64 // UDP datagrams the machine dropped for full receive buffers in the window
	// stall is the machine's longest stall in the window: how late a
	// real-time thread woke (stall_test.go); -1 where it was not measured.
	stall time.Duration
	cpu   cpuSplit
	// server and child are the Go runtimes of the server process and of
	// the simulated hubs in the window; serverAllocs is the server
	// process's bytes allocated per heartbeat beyond what it allocates with
	// no hub, and serverAllocRate all it allocated a second (what paces
	// its collector).
	server, child   runtimeWindow
	serverAllocs    float64
	serverAllocRate float64
	// serverUs and hubsUs are the CPU microseconds per heartbeat of the
	// server process (beyond what it spends with no hub) and of the
	// simulated hubs.
	serverUs, hubsUs, postgresUs float64
	// dialErr is why the level's hubs could not all connect ("" when they
	// did): the level was then not measured, and is missed.
	dialErr string
	// firstTry is the window this one measured again, and why.
	firstTry *levelResult
	why      string
	// settled is how long after the level's dial its window started, and
	// settledAtCap whether it started after maxSettle rather than after a
	// second that met the target.
	settled      time.Duration
	settledAtCap bool
}

func (l levelResult) held() bool {
	return l.dialErr == "" && l.p99 < 50*time.Millisecond && l.errors == 0 && l.beats >= l.hubs*4
}

// holdLevels raises the hubs of sw on addr through levels, measuring each
// over window once it has settled, and returns every level measured; it
// stops at the first that misses the target. A level has settled after
// settle and then the first one-second probe that meets the target, or
// once no probe can end within maxSettle (settleLevel): the handshakes of
// up to a thousand hubs dialed at once by one process, and the server's
// collection of their garbage, leave a backlog of late heartbeats that
// takes seconds to drain, and the window measures the hubs held, not that.
// The window starts right after a good second, which favours a level whose
// late heartbeats come and go; each level's line, and the figures' notes,
// say whether its probe met the target and when its window started. A
// level missed without a hub failing is measured once more, in a second
// window, and holds if that one meets the target: on this machine's
// virtual CPUs a window can be spoiled by what neither peer does (the host
// taking the CPUs, other processes, a collection of a heap of thousands of
// connections, which comes every few minutes, bridge_gc_every_s, and
// stalls heartbeats past a 5 s window's p99 whichever the peer), while a
// level past what the server holds misses both. The first window is
// reported beside the level with what the probes saw take the machine in
// it (spoiledBy, remeasuredOf), and the number of levels measured twice is
// a figure of its own.
func holdLevels(b *testing.B, sw *swarm, probe *stallProbe, addr string, echo bool, hubs []swarmHub, ca string, levels []int, pgCPU func() time.Duration) []levelResult {
	b.Helper()
	const settle, maxSettle, window = 2 * time.Second, 15 * time.Second, 5 * time.Second
	peer := "bridge"
	if echo {
		peer = "bare quic-go"
	}
	// Each peer starts from a heap that holds none of the other's garbage,
	// nor a collector paced by it, and with the memory that garbage held
	// returned to the system now rather than by the scavenger in the
	// windows below.
	debug.FreeOSMemory()
	// What the server process spends with no hub connected (Temporal's
	// workers polling, the harness) is not the hubs' cost.
	mSelf, mRT := cpuSelf(), readGoRuntime()
	start := time.Now()
	time.Sleep(window)
	idle := (cpuSelf() - mSelf).Seconds() / time.Since(start).Seconds()
	idleAllocs := float64(readGoRuntime().since(mRT).Allocs) / time.Since(start).Seconds()
	b.Logf("%s, no hubs: server process %.3f cores", peer, idle)
	var out []levelResult
	connected := 0
	for _, level := range levels {
		if level > len(hubs) {
			break
		}
		r, err := sw.do(swarmCmd{Op: "dial", Addr: addr, Echo: echo, CA: ca, Hubs: hubs[connected:level]})
		if err != nil {
			// A level whose hubs cannot all connect is missed.
			b.Logf("%s, %d hubs: %v", peer, level, err)
			out = append(out, levelResult{hubs: level, dialErr: err.Error()})
			break
		}
		connected = r.Connected
		dialed := time.Now()
		var res levelResult
		var first *levelResult // a window missed and measured again
		var why string
		for try := 0; try < 2; try++ {
			settledAtCap := !settleLevel(b, sw, level, settle, maxSettle)
			// The marks and the clock span the same interval, however long
			// a loaded machine keeps the child from answering.
			start := time.Now()
			mSelf, mPG, mProbe, mAll, mDrop, mRT := cpuSelf(), pgCPU(), probe.cpu(), machineCPU(), udpDropped(), readGoRuntime()
			mSteal := machineSteal()
			if _, err := probe.do("reset"); err != nil {
				b.Fatal(err)
			}
			if _, err := sw.do(swarmCmd{Op: "reset"}); err != nil {
				b.Fatal(err)
			}
			time.Sleep(window)
			// The probe first: however long the swarm takes to answer, its
			// window is the hubs' own.
			stall := probe.longest(b)
			r, err := sw.do(swarmCmd{Op: "collect"})
			if err != nil {
				b.Fatal(err)
			}
			secs := time.Since(start).Seconds()
			rt := readGoRuntime().since(mRT)
			self, pg, prb, all := (cpuSelf() - mSelf).Seconds(), (pgCPU() - mPG).Seconds(), (probe.cpu() - mProbe).Seconds(), (machineCPU() - mAll).Seconds()
			res = levelResult{hubs: level, beats: r.Beats, p50: time.Duration(r.P50us * 1e3), p99: time.Duration(r.P99us * 1e3), errors: r.Errors,
				dropped: udpDropped() - mDrop, stall: stall, server: rt, child: r.Runtime,
				serverAllocs: max(0, float64(rt.Allocs)-idleAllocs*secs) / float64(max(1, r.Beats)), serverAllocRate: float64(rt.Allocs) / secs,
				cpu: cpuSplit{hubs: r.CPUs / secs, server: self / secs, postgres: pg / secs, probe: prb / secs, others: max(0, all-self-pg-prb-r.CPUs) / secs,
					stolen: (machineSteal() - mSteal).Seconds() / secs},
				serverUs: max(0, self-idle*secs) * 1e6 / float64(max(1, r.Beats)), hubsUs: r.CPUs * 1e6 / float64(max(1, r.Beats)),
				postgresUs: pg * 1e6 / float64(max(1, r.Beats))}
			res.settled, res.settledAtCap = start.Sub(dialed), settledAtCap
			b.Logf("%s, %d hubs: %d heartbeats in %v (%s), p50 %v p99 %v, errors %d, UDP datagrams dropped %d; %v; %s; server process: %v, %.0f B allocated a heartbeat; simulated hubs: %v",
				peer, level, res.beats, window, res.settling(), res.p50.Round(time.Microsecond), res.p99.Round(time.Microsecond), res.errors, res.dropped, res.cpu, res.stalled(),
				res.server, res.serverAllocs, res.child)
			if res.errors > 0 {
				b.Logf("%s, %d hubs: the first hubs' errors: %s", peer, level, strings.Join(r.FirstErrors, "; "))
			}
			if res.held() || res.errors > 0 || try > 0 {
				break
			}
			why = spoiledBy(res)
			if why == "" {
				why = "nothing the probes see took the machine"
			}
			b.Logf("%s, %d hubs: missed while %s; measuring again", peer, level, why)
			missed := res
			first = &missed
		}
		res.firstTry, res.why = first, why
		out = append(out, res)
		if !res.held() {
			break
		}
	}
	if _, err := sw.do(swarmCmd{Op: "close"}); err != nil {
		b.Fatal(err)
	}
	return out
}

// spoiledBy says what, beside the peer and its hubs, took the machine in
// res's window enough to spoil it ("" for nothing): other processes taking
// half a core or more, the host running others for a quarter of a core or
// more of this machine's time (steal: the two cores were then fewer than
// the level needs), a machine stall of stallSpoils or longer, or a
// collection in the server process or the hubs'.
func spoiledBy(res levelResult) string {
	var whys []string
	if res.cpu.others >= 0.5 {
		whys = append(whys, fmt.Sprintf("other processes took %.2f cores", res.cpu.others))
	}
	if res.cpu.stolen >= 0.25 {
		whys = append(whys, fmt.Sprintf("the host took %.2f cores (steal)", res.cpu.stolen))
	}
	if res.stall >= stallSpoils {
		whys = append(whys, fmt.Sprintf("the machine stalled for %v (a real-time thread woke that late)", res.stall.Round(time.Millisecond)))
	}
	if res.server.GCs > 0 {
		whys = append(whys, fmt.Sprintf("the server process ran %d collections", res.server.GCs))
	}
	if res.child.GCs > 0 {
		whys = append(whys, fmt.Sprintf("the simulated hubs ran %d collections", res.child.GCs))
	}
	return strings.Join(whys, " and ")
}

// settleLevel waits for the hubs of sw, level of them, to settle: settle,
// then one-second probes until one meets the target (p99 under 50 ms, as
// many heartbeats as nine in ten of the hubs send in a second, no hub
// failed in it), as long as a probe still ends within maxSettle. It reports
// whether a probe met the target.
func settleLevel(b *testing.B, sw *swarm, level int, settle, maxSettle time.Duration) bool {
	b.Helper()
	start := time.Now()
	time.Sleep(settle)
	for time.Since(start)+time.Second <= maxSettle {
		m, err := sw.do(swarmCmd{Op: "reset"})
		if err != nil {
			b.Fatal(err)
		}
		time.Sleep(time.Second)
		r, err := sw.do(swarmCmd{Op: "collect"})
		if err != nil {
			b.Fatal(err)
		}
		if r.Beats >= level*9/10 && r.P99us < 50e3 && r.Errors == m.Errors {
			return true
		}
	}
	return false
}

// stalled says how long the machine stalled in the window.
func (l levelResult) stalled() string {
	if l.stall < 0 {
		return "machine stalls not measured"
	}
	return fmt.Sprintf("longest machine stall %v", l.stall.Round(100*time.Microsecond))
}

// settling says how long the level settled before its window.
func (l levelResult) settling() string {
	if l.settledAtCap {
		return fmt.Sprintf("started %v after the dial, no second before it met the target", l.settled.Round(time.Second))
	}
	return fmt.Sprintf("started %v after the dial, after a second that met the target", l.settled.Round(time.Second))
}

// remeasuredOf lists the windows of rs missed and measured again, with
// what they measured ("" for none).
func remeasuredOf(rs []levelResult) string {
	var out []string
	for _, r := range rs {
		if f := r.firstTry; f != nil {
			out = append(out, fmt.Sprintf("at %d while %s: p99 %v, %d of %d heartbeats, %d UDP datagrams dropped; %v; %s; server process %.1f µs a heartbeat, %v",
				r.hubs, r.why, f.p99.Round(time.Millisecond), f.beats, 5*f.hubs, f.dropped, f.cpu, f.stalled(), f.serverUs, f.server))
		}
	}
	if len(out) == 0 {
		return ""
	}
	return "; windows missed and measured again: " + strings.Join(out, "; ")
}

// retriedNote says, for figures taken from r, that r's window was the
// second: the first, which missed, is left out of them ("" when r was
// measured once).
func retriedNote(peer string, r levelResult) string {
	if r.firstTry == nil {
		return ""
	}
	return fmt.Sprintf("; %s's figures at %d hubs are from a window measured again after one in which %s (remeasured in the note of the hubs held)", peer, r.hubs, r.why)
}

// heldOf is the last level held in rs (0 for none), and the result at it.
func heldOf(rs []levelResult) (int, levelResult) {
	var at levelResult
	for _, r := range rs {
		if r.held() {
			at = r
		}
	}
	return at.hubs, at
}

// remeasuredCount is how many levels of rs were measured in a second window.
func remeasuredCount(rs []levelResult) int {
	n := 0
	for _, r := range rs {
		if r.firstTry != nil {
			n++
		}
	}
	return n
}

// heldNote says how the level held at was measured ("no level held" for
// none).
func heldNote(at levelResult) string {
	if at.hubs == 0 {
		return "no level held"
	}
	return fmt.Sprintf("at the level held (window %s) %s; %s", at.settling(), at.cpu, at.stalled())
}

// missedOf says why the level after the held one was missed.
func missedOf(rs []levelResult) string {
	if len(rs) == 0 || rs[len(rs)-1].held() {
		return "every level tried held"
	}
	r := rs[len(rs)-1]
	if r.dialErr != "" {
		return fmt.Sprintf("at %d, whose hubs could not all connect: %s", r.hubs, r.dialErr)
	}
	return fmt.Sprintf("at %d (window %s): p99 %v, %d of %d heartbeats, %d errors, %d UDP datagrams dropped; %v; %s; server process %v; simulated hubs %v",
		r.hubs, r.settling(), r.p99.Round(time.Millisecond), r.beats, 5*r.hubs, r.errors, r.dropped, r.cpu, r.stalled(), r.server, r.child)
}

// commonLevel is the largest level both result sets held, with its results.
func commonLevel(a, b []levelResult) (int, levelResult, levelResult) {
	ha, hb := map[int]levelResult{}, map[int]levelResult{}
	for _, r := range a {
		if r.held() {
			ha[r.hubs] = r
		}
	}
	for _, r := range b {
		if r.held() {
			hb[r.hubs] = r
		}
	}
	var common []int
	for n := range ha {
		if _, ok := hb[n]; ok {
			common = append(common, n)
		}
	}
	if len(common) == 0 {
		return 0, levelResult{}, levelResult{}
	}
	sort.Ints(common)
	n := common[len(common)-1]
	return n, ha[n], hb[n]
}
