// Package vitals reads a hub's hardware: every NVIDIA GPU through NVML
// (go-nvml), and CPU load and memory from /proc. Where NVML is absent the
// reading says so plainly ("no GPU") and still carries CPU and memory.
package vitals

import (
	"bufio"
	"fmt"
	"os"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"

	meshv1 "github.com/superinstance/mesh/proto/meshv1"
)

// Reader reads vitals. It initialises NVML on first use and keeps it open
// until Close. Safe for concurrent use.
type Reader struct {
	lib  nvml.Interface
	proc string // root of the proc file system, "/proc" unless testing

	mu       sync.Mutex
	inited   bool
	initErr  string
	shutdown bool
}

// NewReader reads GPUs through lib; nil uses the machine's NVML library.
func NewReader(lib nvml.Interface) *Reader {
	if lib == nil {
		lib = nvml.New()
	}
	return &Reader{lib: lib, proc: "/proc"}
}

// Close releases NVML.
func (r *Reader) Close() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.inited && r.initErr == "" && !r.shutdown {
		r.lib.Shutdown()
		r.shutdown = true
	}
}

// Read takes one reading.
func (r *Reader) Read() *meshv1.HardwareVitals {
	v := &meshv1.HardwareVitals{ReadUnixNano: time.Now().UnixNano()}
	r.host(v)
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.inited {
		r.inited = true
		if ret := r.lib.Init(); ret != nvml.SUCCESS {
			r.initErr = noGPUReason(ret)
		}
	}
	if r.initErr != "" {
		v.NoGpuReason = r.initErr
		return v
	}
	if r.shutdown {
		v.NoGpuReason = "NVML closed"
		return v
	}
	n, ret := r.lib.DeviceGetCount()
	if ret != nvml.SUCCESS {
		v.NoGpuReason = "NVML device count: " + ret.Error()
		return v
	}
	v.NvmlAvailable = true
	if drv, ret := r.lib.SystemGetDriverVersion(); ret == nvml.SUCCESS {
		v.DriverVersion = drv
	}
	if n == 0 {
		v.NoGpuReason = "NVML reports no GPU"
	}
	for i := range n {
		v.Gpus = append(v.Gpus, r.gpu(i))
	}
	return v
}

func noGPUReason(ret nvml.Return) string {
	switch ret {
	case nvml.ERROR_LIBRARY_NOT_FOUND:
		return "no GPU: NVML library (libnvidia-ml.so) not found; no NVIDIA driver on this machine"
	case nvml.ERROR_DRIVER_NOT_LOADED:
		return "no GPU: the NVIDIA driver is not loaded"
	case nvml.ERROR_NO_PERMISSION:
		return "no GPU: no permission to use NVML"
	}
	return "no GPU: NVML init failed: " + ret.Error()
}

// gpu reads one device. A field the device does not support is listed in
// Unsupported; a field whose read fails is listed in Errors; neither stops
// the other fields.
func (r *Reader) gpu(i int) *meshv1.GPUVitals {
	g := &meshv1.GPUVitals{Index: uint32(i)}
	dev, ret := r.lib.DeviceGetHandleByIndex(i)
	if ret != nvml.SUCCESS {
		g.Errors = append(g.Errors, "handle: "+ret.Error())
		return g
	}
	check := func(field string, ret nvml.Return) bool {
		switch ret {
		case nvml.SUCCESS:
			return true
		case nvml.ERROR_NOT_SUPPORTED:
			g.Unsupported = append(g.Unsupported, field)
		default:
			g.Errors = append(g.Errors, field+": "+ret.Error())
		}
		return false
	}
	if s, ret := dev.GetUUID(); check("uuid", ret) {
		g.Uuid = s
	}
	if s, ret := dev.GetName(); check("name", ret) {
		g.Name = s
	}
	if u, ret := dev.GetUtilizationRates(); check("utilization", ret) {
		g.UtilizationPercent, g.MemoryUtilizationPercent = min(u.Gpu, 100), min(u.Memory, 100)
	}
	// The v2 call excludes memory the driver reserves, as nvidia-smi does;
	// older drivers only have v1.
	if m, ret := dev.GetMemoryInfo_v2(); ret == nvml.SUCCESS {
		g.MemoryUsedBytes, g.MemoryTotalBytes = m.Used, m.Total
	} else if m, ret := dev.GetMemoryInfo(); check("memory", ret) {
		g.MemoryUsedBytes, g.MemoryTotalBytes = m.Used, m.Total
	}
	if t, ret := dev.GetTemperature(nvml.TEMPERATURE_GPU); check("temperature", ret) {
		g.TemperatureC = t
	}
	if p, ret := dev.GetPowerUsage(); check("power_draw", ret) {
		g.PowerDrawMw = p
	}
	if p, ret := dev.GetEnforcedPowerLimit(); check("power_limit", ret) {
		g.PowerLimitMw = p
	}
	if c, ret := dev.GetClockInfo(nvml.CLOCK_SM); check("sm_clock", ret) {
		g.SmClockMhz = c
	}
	if c, ret := dev.GetClockInfo(nvml.CLOCK_MEM); check("memory_clock", ret) {
		g.MemoryClockMhz = c
	}
	if t, ret := dev.GetCurrentClocksEventReasons(); check("throttle_reasons", ret) {
		g.ThrottleReasons = t
		g.ThrottleReasonNames = ThrottleNames(t)
	}
	return g
}

var throttleNames = map[uint64]string{
	nvml.ClocksEventReasonGpuIdle:                   "gpu_idle",
	nvml.ClocksEventReasonApplicationsClocksSetting: "applications_clocks_setting",
	nvml.ClocksEventReasonSwPowerCap:                "sw_power_cap",
	nvml.ClocksThrottleReasonHwSlowdown:             "hw_slowdown",
	nvml.ClocksEventReasonSyncBoost:                 "sync_boost",
	nvml.ClocksEventReasonSwThermalSlowdown:         "sw_thermal_slowdown",
	nvml.ClocksThrottleReasonHwThermalSlowdown:      "hw_thermal_slowdown",
	nvml.ClocksThrottleReasonHwPowerBrakeSlowdown:   "hw_power_brake_slowdown",
	nvml.ClocksEventReasonDisplayClockSetting:       "display_clock_setting",
	nvml.ClocksEventReasonBoardLimit:                "board_limit",
	nvml.ClocksEventReasonReliability:               "reliability",
}

// ThrottleNames decodes NVML's clock event reason mask, in bit order.
func ThrottleNames(mask uint64) []string {
	var bits []uint64
	for b := range throttleNames {
		if mask&b != 0 {
			bits = append(bits, b)
		}
	}
	sort.Slice(bits, func(i, j int) bool { return bits[i] < bits[j] })
	names := make([]string, 0, len(bits))
	for _, b := range bits {
		names = append(names, throttleNames[b])
	}
	if rest := mask &^ uint64(nvml.ClocksEventReasonAll); rest != 0 {
		names = append(names, fmt.Sprintf("unknown_0x%x", rest))
	}
	return names
}

// host fills CPU and memory from /proc; missing files leave them zero.
func (r *Reader) host(v *meshv1.HardwareVitals) {
	v.CpuCount = uint32(runtime.NumCPU())
	if b, err := os.ReadFile(r.proc + "/loadavg"); err == nil {
		if f := strings.Fields(string(b)); len(f) > 0 {
			if l, err := strconv.ParseFloat(f[0], 64); err == nil && v.CpuCount > 0 {
				v.CpuLoad = l / float64(v.CpuCount)
			}
		}
	}
	f, err := os.Open(r.proc + "/meminfo")
	if err != nil {
		return
	}
	defer f.Close()
	var total, avail uint64
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, val, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		fs := strings.Fields(val)
		if len(fs) == 0 {
			continue
		}
		n, err := strconv.ParseUint(fs[0], 10, 64)
		if err != nil {
			continue
		}
		switch k {
		case "MemTotal":
			total = n * 1024
		case "MemAvailable":
			avail = n * 1024
		}
	}
	v.MemoryTotalBytes = total
	if avail <= total {
		v.MemoryUsedBytes = total - avail
	}
}

// Summary is a one-line description of a GPU's vitals for humans.
func Summary(g *meshv1.GPUVitals) string {
	s := fmt.Sprintf("GPU %d %s: util %d%%, mem %.1f/%.1f GiB, %d°C, power %.0f/%.0f W, sm %d MHz, mem %d MHz",
		g.GetIndex(), g.GetName(), g.GetUtilizationPercent(), gib(g.GetMemoryUsedBytes()), gib(g.GetMemoryTotalBytes()),
		g.GetTemperatureC(), float64(g.GetPowerDrawMw())/1000, float64(g.GetPowerLimitMw())/1000, g.GetSmClockMhz(), g.GetMemoryClockMhz())
	if len(g.GetThrottleReasonNames()) > 0 {
		s += ", clocks limited by " + strings.Join(g.GetThrottleReasonNames(), "+")
	}
	if len(g.GetUnsupported()) > 0 {
		s += ", unsupported: " + strings.Join(g.GetUnsupported(), ",")
	}
	if len(g.GetErrors()) > 0 {
		s += ", errors: " + strings.Join(g.GetErrors(), "; ")
	}
	return s
}

func gib(b uint64) float64 { return float64(b) / (1 << 30) }
