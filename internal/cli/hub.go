package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"

	"google.golang.org/protobuf/encoding/protojson"

	"github.com/superinstance/mesh/hub/vitals"
)

func hubCommand() *Command {
	return &Command{
		Name:  "hub",
		Short: "hub commands: read this machine's GPU vitals",
		Sub:   []*Command{hubVitalsCommand()},
	}
}

func hubVitalsCommand() *Command {
	var asJSON bool
	return &Command{
		Name:  "vitals",
		Short: "print this machine's hardware vitals once (every GPU through NVML, CPU, memory)",
		Long: `si hub vitals reads every NVIDIA GPU through NVML (utilization, memory,
temperature, power draw and limit, clocks, throttle reasons) and the CPU load
and memory, and prints them once. Without NVML it says "no GPU" and why, and
still prints CPU and memory.`,
		Flags: func(fs *flag.FlagSet) {
			fs.BoolVar(&asJSON, "json", false, "print the reading as JSON")
		},
		Run: func(_ context.Context, env *Env, args []string) error {
			if len(args) > 0 {
				return errors.New("si hub vitals takes no arguments")
			}
			r := vitals.NewReader(nil)
			defer r.Close()
			v := r.Read()
			if asJSON {
				b, err := protojson.MarshalOptions{Multiline: true, EmitUnpopulated: true}.Marshal(v)
				if err != nil {
					return err
				}
				fmt.Fprintln(env.Stdout, string(b))
				return nil
			}
			fmt.Fprintf(env.Stdout, "cpu: load %.2f over %d CPUs, memory %.1f/%.1f GiB used\n", v.CpuLoad, v.CpuCount,
				float64(v.MemoryUsedBytes)/(1<<30), float64(v.MemoryTotalBytes)/(1<<30))
			if !v.NvmlAvailable {
				fmt.Fprintln(env.Stdout, v.NoGpuReason)
				return nil
			}
			fmt.Fprintf(env.Stdout, "nvml: driver %s, %d GPU(s)\n", v.DriverVersion, len(v.Gpus))
			if v.NoGpuReason != "" {
				fmt.Fprintln(env.Stdout, v.NoGpuReason)
			}
			for _, g := range v.Gpus {
				fmt.Fprintln(env.Stdout, vitals.Summary(g))
			}
			return nil
		},
	}
}
