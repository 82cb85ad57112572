package bench

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/superinstance/mesh/activities"
	"github.com/superinstance/mesh/internal/blob"
	"github.com/superinstance/mesh/internal/llm"
	"github.com/superinstance/mesh/internal/lora"
	"github.com/superinstance/mesh/internal/runner"
	"github.com/superinstance/mesh/internal/simulator"
	"github.com/superinstance/mesh/internal/synapse"
	"github.com/superinstance/mesh/test/harness"
)

// BenchmarkLoRAPush pushes a 200 MB adapter to MinIO on loopback (hashing
// included, as si push does it) against cp of the same file into a directory
// on the same disk, three times each, alternating; then times registration
// (verify, register, fetch into the backend's cache, load) of the last push.
func BenchmarkLoRAPush(b *testing.B) {
	m := harness.StartMesh(b, simulator.Options{}, harness.WithAdapters(b, 4))
	m.Account(b, "bench")
	dir := filepath.Join(b.TempDir(), "big")
	if err := lora.Scaffold(dir, lora.ScaffoldOptions{BaseModel: simulator.ModelSmall, Rank: 16, Hidden: 4096, Bytes: 200 << 20}); err != nil {
		b.Fatal(err)
	}
	a, err := lora.Open(dir)
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	var push, cp []time.Duration
	var up runner.Upload
	for i := range 3 {
		dst := filepath.Join(b.TempDir(), fmt.Sprintf("copy-%d", i))
		start := time.Now()
		if out, err := exec.Command("cp", a.WeightsPath, dst).CombinedOutput(); err != nil {
			b.Fatalf("cp: %v %s", err, out)
		}
		cp = append(cp, time.Since(start))
		_ = os.Remove(dst)

		sum, _ := runner.FileSHA256(a.WeightsPath)
		key, _ := lora.ObjectKey("bench", sum)
		if err := m.Blob.Delete(ctx, key); err != nil {
			b.Fatal(err)
		}
		start = time.Now()
		if up, err = runner.UploadLoRA(ctx, m.Blob, a, "bench", "", blob.UploadOptions{}); err != nil {
			b.Fatal(err)
		}
		push = append(push, time.Since(start))
	}
	start := time.Now()
	if _, err := runner.RegisterLoRA(ctx, m.Client, up.Input); err != nil {
		b.Fatal(err)
	}
	reg := time.Since(start)
	mb := float64(a.Size) / 1e6
	pushS, cpS := median(push).Seconds(), median(cp).Seconds()
	record("lora_push_200mb_s", pushS, fmt.Sprintf("si push's upload path for %.0f MB: SHA-256 then 16 MiB parts x4 to MinIO on loopback (target < 10)", mb))
	record("lora_cp_200mb_s", cpS, "cp of the same file to a directory on the same disk")
	record("lora_push_vs_cp_ratio", pushS/cpS, "target <= 3")
	record("lora_register_ms", ms(reg), "upload done to available: verify size and SHA-256 in the store, register, fetch to the backend cache, load")
}

// BenchmarkLoRAOverhead measures what the mesh adds to an inference with an
// adapter, beyond the backend's own load and inference time: the Logos
// activity (access check, registry, fetch from the store, load, chat) against
// the same load and chat calls made straight to the backend.
func BenchmarkLoRAOverhead(b *testing.B) {
	m := harness.StartMesh(b, simulator.Options{LoadDelay: 20 * time.Millisecond}, harness.WithAdapters(b, 64))
	m.Account(b, "bench")
	ctx := context.Background()
	const n = 12
	var ids, dirs []string
	for i := range n {
		dir := filepath.Join(b.TempDir(), fmt.Sprintf("a%d", i))
		if err := lora.Scaffold(dir, lora.ScaffoldOptions{BaseModel: simulator.ModelSmall, Rank: 1 + i, Hidden: 256, Bytes: 1 << 20}); err != nil {
			b.Fatal(err)
		}
		a, _ := lora.Open(dir)
		up, err := runner.UploadLoRA(ctx, m.Blob, a, "bench", "", blob.UploadOptions{})
		if err != nil {
			b.Fatal(err)
		}
		res, err := runner.RegisterLoRA(ctx, m.Client, up.Input)
		if err != nil {
			b.Fatal(err)
		}
		// Start cold: unloaded from the backend, not in the worker's cache dir.
		if err := m.Adapters.Cache.Evict(ctx, res.ID); err != nil {
			b.Fatal(err)
		}
		_ = os.RemoveAll(filepath.Join(m.Adapters.CacheDir, res.ID))
		ids, dirs = append(ids, res.ID), append(dirs, dir)
	}
	inf := *m.Inference
	inf.Adapters = m.Adapters
	cl := &llm.Client{BaseURL: m.LLMURL}
	man := synapse.Manifest{Intent: "support", Confidence: 0.9}
	msgs := func(q string) []llm.Message {
		p := synapse.LogosPrompt(q, man, 1, "", "x")
		return []llm.Message{{Role: "system", Content: p.System}, {Role: "user", Content: p.User}}
	}
	logos := func(id string) time.Duration {
		start := time.Now()
		if _, err := inf.Logos(ctx, activities.LogosInput{Question: "q [sim:agree]", Manifest: man, Round: 1, LoRA: id, Account: "bench"}); err != nil {
			b.Fatal(err)
		}
		return time.Since(start)
	}
	direct := func(name, dir string, load bool) time.Duration {
		start := time.Now()
		if load {
			if err := cl.LoadLoRA(ctx, name, dir); err != nil {
				b.Fatal(err)
			}
		}
		if _, err := cl.Chat(ctx, llm.Request{Model: name, Messages: msgs("q [sim:agree]"), JSON: true}); err != nil {
			b.Fatal(err)
		}
		return time.Since(start)
	}
	var meshFirst, directFirst, meshCached, directCached []time.Duration
	for i := range n {
		meshFirst = append(meshFirst, logos(ids[i]))
		directFirst = append(directFirst, direct(fmt.Sprintf("direct-%d", i), dirs[i], true))
	}
	for i := range 5 * n {
		meshCached = append(meshCached, logos(ids[i%n]))
		directCached = append(directCached, direct(fmt.Sprintf("direct-%d", i%n), "", false))
	}
	record("lora_first_overhead_ms", ms(median(meshFirst)-median(directFirst)),
		fmt.Sprintf("first Logos call with a new 1 MiB adapter (%.1f ms) minus load+chat straight to the backend (%.1f ms); target < 20",
			ms(median(meshFirst)), ms(median(directFirst))))
	record("lora_cached_overhead_ms", ms(median(meshCached)-median(directCached)),
		fmt.Sprintf("later Logos calls (%.2f ms) minus chat straight to the backend (%.2f ms); target < 5", ms(median(meshCached)), ms(median(directCached))))
}
