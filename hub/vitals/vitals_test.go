package vitals

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock"
)

// gpu is a mock device; unsupported names fields it returns ERROR_NOT_SUPPORTED for.
func gpu(name string, util, temp uint32, unsupported ...string) *mock.Device {
	ret := func(field string) nvml.Return {
		for _, u := range unsupported {
			if u == field {
				return nvml.ERROR_NOT_SUPPORTED
			}
		}
		return nvml.SUCCESS
	}
	return &mock.Device{
		GetUUIDFunc: func() (string, nvml.Return) { return "GPU-" + name, ret("uuid") },
		GetNameFunc: func() (string, nvml.Return) { return name, ret("name") },
		GetUtilizationRatesFunc: func() (nvml.Utilization, nvml.Return) {
			return nvml.Utilization{Gpu: util, Memory: util / 2}, ret("utilization")
		},
		GetMemoryInfo_v2Func: func() (nvml.Memory_v2, nvml.Return) {
			if r := ret("memory_v2"); r != nvml.SUCCESS {
				return nvml.Memory_v2{}, r
			}
			return nvml.Memory_v2{Total: 80 << 30, Used: 20 << 30, Reserved: 1 << 29}, ret("memory")
		},
		GetMemoryInfoFunc: func() (nvml.Memory, nvml.Return) {
			return nvml.Memory{Total: 80 << 30, Used: 20<<30 + 1<<29}, ret("memory")
		},
		GetTemperatureFunc:        func(nvml.TemperatureSensors) (uint32, nvml.Return) { return temp, ret("temperature") },
		GetPowerUsageFunc:         func() (uint32, nvml.Return) { return 350_000, ret("power_draw") },
		GetEnforcedPowerLimitFunc: func() (uint32, nvml.Return) { return 700_000, ret("power_limit") },
		GetClockInfoFunc: func(c nvml.ClockType) (uint32, nvml.Return) {
			if c == nvml.CLOCK_SM {
				return 1980, ret("sm_clock")
			}
			return 2619, ret("memory_clock")
		},
		GetCurrentClocksEventReasonsFunc: func() (uint64, nvml.Return) {
			return nvml.ClocksEventReasonSwPowerCap | nvml.ClocksThrottleReasonHwThermalSlowdown, ret("throttle_reasons")
		},
	}
}

func lib(devs ...nvml.Device) *mock.Interface {
	return &mock.Interface{
		InitFunc:                   func() nvml.Return { return nvml.SUCCESS },
		ShutdownFunc:               func() nvml.Return { return nvml.SUCCESS },
		SystemGetDriverVersionFunc: func() (string, nvml.Return) { return "550.54.15", nvml.SUCCESS },
		DeviceGetCountFunc:         func() (int, nvml.Return) { return len(devs), nvml.SUCCESS },
		DeviceGetHandleByIndexFunc: func(i int) (nvml.Device, nvml.Return) {
			if devs[i] == nil {
				return nil, nvml.ERROR_GPU_IS_LOST
			}
			return devs[i], nvml.SUCCESS
		},
	}
}

func TestSeveralGPUs(t *testing.T) {
	m := lib(gpu("H100", 93, 71), gpu("H100", 12, 45), gpu("L4", 50, 60, "power_draw", "throttle_reasons", "memory_v2"))
	r := NewReader(m)
	defer r.Close()
	v := r.Read()
	if !v.NvmlAvailable || v.NoGpuReason != "" || v.DriverVersion != "550.54.15" || len(v.Gpus) != 3 {
		t.Fatalf("vitals %v", v)
	}
	g := v.Gpus[0]
	if g.Index != 0 || g.Name != "H100" || g.Uuid != "GPU-H100" || g.UtilizationPercent != 93 || g.MemoryUtilizationPercent != 46 ||
		g.MemoryUsedBytes != 20<<30 || g.MemoryTotalBytes != 80<<30 || g.TemperatureC != 71 || g.PowerDrawMw != 350000 ||
		g.PowerLimitMw != 700000 || g.SmClockMhz != 1980 || g.MemoryClockMhz != 2619 {
		t.Fatalf("gpu 0: %v", g)
	}
	if !reflect.DeepEqual(g.ThrottleReasonNames, []string{"sw_power_cap", "hw_thermal_slowdown"}) {
		t.Fatalf("throttle names %v", g.ThrottleReasonNames)
	}
	l4 := v.Gpus[2]
	if !reflect.DeepEqual(l4.Unsupported, []string{"power_draw", "throttle_reasons"}) || l4.PowerDrawMw != 0 || l4.UtilizationPercent != 50 ||
		l4.MemoryUsedBytes != 20<<30+1<<29 {
		t.Fatalf("unsupported fields must be listed, the rest read: %v", l4)
	}
	if v.CpuCount == 0 || v.MemoryTotalBytes == 0 {
		t.Fatalf("host figures missing: %v", v)
	}
	// NVML is initialised once and shut down on Close.
	r.Read()
	if len(m.InitCalls()) != 1 {
		t.Fatalf("Init called %d times", len(m.InitCalls()))
	}
	r.Close()
	if len(m.ShutdownCalls()) != 1 {
		t.Fatalf("Shutdown called %d times", len(m.ShutdownCalls()))
	}
}

func TestErrors(t *testing.T) {
	broken := gpu("A100", 10, 50)
	broken.GetTemperatureFunc = func(nvml.TemperatureSensors) (uint32, nvml.Return) { return 0, nvml.ERROR_UNKNOWN }
	v := NewReader(lib(broken, nil)).Read()
	if len(v.Gpus) != 2 || v.Gpus[0].UtilizationPercent != 10 {
		t.Fatalf("vitals %v", v)
	}
	if len(v.Gpus[0].Errors) != 1 || !strings.HasPrefix(v.Gpus[0].Errors[0], "temperature: ") {
		t.Fatalf("a failed field is reported, not fatal: %v", v.Gpus[0].Errors)
	}
	if len(v.Gpus[1].Errors) != 1 || !strings.HasPrefix(v.Gpus[1].Errors[0], "handle: ") {
		t.Fatalf("a lost GPU is reported: %v", v.Gpus[1])
	}

	countFails := lib()
	countFails.DeviceGetCountFunc = func() (int, nvml.Return) { return 0, nvml.ERROR_UNKNOWN }
	if v := NewReader(countFails).Read(); v.NvmlAvailable || !strings.Contains(v.NoGpuReason, "device count") {
		t.Fatalf("count failure: %v", v)
	}
}

func TestNoGPU(t *testing.T) {
	for ret, want := range map[nvml.Return]string{
		nvml.ERROR_LIBRARY_NOT_FOUND: "NVML library (libnvidia-ml.so) not found",
		nvml.ERROR_DRIVER_NOT_LOADED: "driver is not loaded",
		nvml.ERROR_NO_PERMISSION:     "no permission",
	} {
		m := lib()
		m.InitFunc = func() nvml.Return { return ret }
		v := NewReader(m).Read()
		if v.NvmlAvailable || !strings.HasPrefix(v.NoGpuReason, "no GPU: ") || !strings.Contains(v.NoGpuReason, want) {
			t.Errorf("%v: %q", ret, v.NoGpuReason)
		}
		if v.CpuCount == 0 || v.MemoryTotalBytes == 0 {
			t.Errorf("%v: a machine without a GPU still reports CPU and memory: %v", ret, v)
		}
	}
}

func TestHostFigures(t *testing.T) {
	dir := t.TempDir()
	_ = os.WriteFile(filepath.Join(dir, "loadavg"), []byte("3.00 2.00 1.00 1/100 42\n"), 0o644)
	_ = os.WriteFile(filepath.Join(dir, "meminfo"), []byte("MemTotal:       16384 kB\nMemFree: 1 kB\nMemAvailable:    4096 kB\n"), 0o644)
	r := NewReader(lib())
	r.proc = dir
	v := r.Read()
	if v.MemoryTotalBytes != 16384*1024 || v.MemoryUsedBytes != 12288*1024 {
		t.Fatalf("memory %d/%d", v.MemoryUsedBytes, v.MemoryTotalBytes)
	}
	if want := 3.0 / float64(v.CpuCount); v.CpuLoad != want {
		t.Fatalf("cpu load %v, want %v", v.CpuLoad, want)
	}
}

func TestThrottleNames(t *testing.T) {
	if got := ThrottleNames(0); len(got) != 0 {
		t.Fatalf("%v", got)
	}
	if got := ThrottleNames(nvml.ClocksEventReasonGpuIdle | 1<<40); !reflect.DeepEqual(got, []string{"gpu_idle", "unknown_0x10000000000"}) {
		t.Fatalf("%v", got)
	}
}
