// Package bench measures the mesh side by side with its baselines. Run it
// with `make bench`: each benchmark runs once (-benchtime=1x) and does its
// own fixed amount of work; TestMain prints the table and writes the figures
// as a flat JSON object to $BENCH_OUT (default bench-report.json), or, with
// BENCH_MERGE=1, adds them to the figures already there (make bench runs
// the held-hubs benchmark in a process of its own first).
package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/superinstance/mesh/activities"
	"github.com/superinstance/mesh/internal/devstack"
	"github.com/superinstance/mesh/internal/runner"
	"github.com/superinstance/mesh/internal/simulator"
	"github.com/superinstance/mesh/internal/synapse"
	"github.com/superinstance/mesh/test/harness"
	"github.com/superinstance/mesh/workflows"
)

var report = struct {
	sync.Mutex
	figures map[string]float64
	notes   map[string]string
}{figures: map[string]float64{}, notes: map[string]string{}}

func record(name string, v float64, note string) {
	report.Lock()
	defer report.Unlock()
	report.figures[name] = v
	report.notes[name] = note
}

// merged is figures, added to the report at path when merge is set (this
// run's figures win); a report that is not there yet is an empty one.
func merged(path string, figures map[string]float64, merge bool) (map[string]float64, error) {
	if !merge {
		return figures, nil
	}
	all := map[string]float64{}
	b, err := os.ReadFile(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return figures, err
	default:
		if err := json.Unmarshal(b, &all); err != nil {
			return figures, fmt.Errorf("%s: %w", path, err)
		}
	}
	maps.Copy(all, figures)
	return all, nil
}

func TestMain(m *testing.M) {
	if os.Getenv(swarmEnv) != "" {
		os.Exit(runSwarm())
	}
	if os.Getenv(stallEnv) != "" {
		os.Exit(runStallProbe())
	}
	code := m.Run()
	report.Lock()
	if len(report.figures) > 0 {
		names := make([]string, 0, len(report.figures))
		for n := range report.figures {
			names = append(names, n)
		}
		sort.Strings(names)
		fmt.Printf("\n%-34s %14s  %s\n", "figure", "value", "what")
		for _, n := range names {
			fmt.Printf("%-34s %14.3f  %s\n", n, report.figures[n], report.notes[n])
		}
		out := os.Getenv("BENCH_OUT")
		if out == "" {
			out = filepath.Join("..", "..", "bench-report.json")
		}
		all, err := merged(out, report.figures, os.Getenv("BENCH_MERGE") == "1")
		b, _ := json.MarshalIndent(all, "", "  ")
		if err != nil {
			// The report is left as it is rather than replaced by this
			// run's figures alone.
			fmt.Fprintf(os.Stderr, "bench report not written, its earlier figures unreadable (%v): run make bench again\n", err)
			code = 1
		} else if err := os.WriteFile(out, append(b, '\n'), 0o644); err != nil {
			fmt.Fprintln(os.Stderr, "bench report:", err)
			code = 1
		} else {
			fmt.Println("\nwrote", out)
		}
	}
	report.Unlock()
	harness.Exit(code)
}

// fileTemporal starts an embedded server persisting to SQLite, as `si dev` does.
func fileTemporal(b *testing.B) string {
	b.Helper()
	ts, err := devstack.StartTemporal(devstack.TemporalOptions{DatabaseFile: filepath.Join(b.TempDir(), "temporal.db"),
		SearchAttributes: workflows.SearchAttributes()})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(ts.Stop)
	return ts.Address()
}

func consensus(b *testing.B, m *harness.Mesh, in workflows.ConsensusInput) time.Duration {
	b.Helper()
	d, err := tryConsensus(m, in)
	if err != nil {
		b.Fatal(err)
	}
	return d
}

func tryConsensus(m *harness.Mesh, in workflows.ConsensusInput) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	start := time.Now()
	run, err := runner.Start(ctx, m.Client, harness.UniqueID("bench"), in)
	if err != nil {
		return 0, err
	}
	var st workflows.ConsensusState
	if err := run.Get(ctx, &st); err != nil {
		return 0, err
	}
	return time.Since(start), nil
}

func median(ds []time.Duration) time.Duration {
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[len(s)/2]
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// BenchmarkConsensusRound measures what orchestration adds to one round
// (Logos then Ethos): the median time of a 6-round consensus minus that of a
// 1-round one, over 5 rounds, against the same two activities called directly
// in this process against the same simulator.
func BenchmarkConsensusRound(b *testing.B) {
	c := harness.ClientOf(b, fileTemporal(b))
	m := harness.StartMeshOn(b, c, simulator.Options{})
	const prompt = "Which sort for nearly sorted data? [sim:disagree]"
	for range 3 { // warm up the worker, connections and caches
		consensus(b, m, workflows.ConsensusInput{Prompt: prompt, MaxRounds: 1, Placement: workflows.PlacementCloud})
	}
	const n = 15
	var one, six []time.Duration
	for range n {
		one = append(one, consensus(b, m, workflows.ConsensusInput{Prompt: prompt, MaxRounds: 1, Placement: workflows.PlacementCloud}))
		six = append(six, consensus(b, m, workflows.ConsensusInput{Prompt: prompt, MaxRounds: 6, Placement: workflows.PlacementCloud}))
	}
	round := (median(six) - median(one)) / 5

	ctx := context.Background()
	inf := m.Inference
	man := synapse.Manifest{Intent: "sort", Confidence: 0.9}
	var direct []time.Duration
	for i := range 100 {
		start := time.Now()
		lo, err := inf.Logos(ctx, activities.LogosInput{Question: prompt, Manifest: man, Round: i%6 + 1})
		if err != nil {
			b.Fatal(err)
		}
		if _, err := inf.Ethos(ctx, activities.EthosInput{Question: prompt, Manifest: man, Solution: lo.Solution, Round: i%6 + 1}); err != nil {
			b.Fatal(err)
		}
		direct = append(direct, time.Since(start))
	}
	d := median(direct)
	record("consensus_round_ms", ms(round), "one round (Logos+Ethos) through Temporal, SQLite file, simulator at zero latency")
	record("consensus_direct_round_ms", ms(d), "the same two activities called directly in one process")
	record("consensus_overhead_ms", ms(round-d), "what orchestration adds per round (target < 30)")
	record("consensus_1round_total_ms", ms(median(one)), "a whole 1-round consensus: placement, pathos, logos, ethos, record")
}

// BenchmarkConsensusThroughput counts consensus workflows completed per
// second with 16 in flight.
func BenchmarkConsensusThroughput(b *testing.B) {
	c := harness.ClientOf(b, fileTemporal(b))
	m := harness.StartMeshOn(b, c, simulator.Options{})
	const inFlight, total = 16, 240
	in := workflows.ConsensusInput{Prompt: "Throughput [sim:agree]", MaxRounds: 1, Placement: workflows.PlacementCloud}
	for range 3 {
		consensus(b, m, in)
	}
	jobs := make(chan struct{})
	var wg sync.WaitGroup
	start := time.Now()
	for range inFlight {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range jobs {
				if _, err := tryConsensus(m, in); err != nil {
					b.Error(err)
				}
			}
		}()
	}
	for range total {
		jobs <- struct{}{}
	}
	close(jobs)
	wg.Wait()
	record("consensus_workflows_per_s", float64(total)/time.Since(start).Seconds(), "1-round consensus workflows completed per second, 16 in flight (target >= 10)")
}
