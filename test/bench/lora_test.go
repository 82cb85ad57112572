//lint:file-ignore SA1019 the push is measured against the SDK's multipart upload manager, the baseline people know (feature/s3/transfermanager succeeds it)

package bench

import (
	"context"
	"fmt"
	"io"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/feature/s3/manager"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/superinstance/mesh/activities"
	"github.com/superinstance/mesh/internal/api"
	"github.com/superinstance/mesh/internal/blob"
	"github.com/superinstance/mesh/internal/client"
	"github.com/superinstance/mesh/internal/llm"
	"github.com/superinstance/mesh/internal/lora"
	"github.com/superinstance/mesh/internal/runner"
	"github.com/superinstance/mesh/internal/simulator"
	"github.com/superinstance/mesh/internal/synapse"
	"github.com/superinstance/mesh/test/harness"
)

// BenchmarkLoRAPush pushes a 200 MB adapter as si push does, through the
// API: SHA-256, presigned part URLs for the account's key, 16 MiB parts x4
// straight to MinIO on loopback; against the AWS SDK's own multipart upload
// manager (same part size and concurrency, same MinIO) and cp of the same
// file, three times each, alternating; then times registration (verify,
// register, fetch into the backend's cache, load) of the last push.
func BenchmarkLoRAPush(b *testing.B) {
	m := harness.StartMesh(b, simulator.Options{}, harness.WithAdapters(b, 4))
	m.Account(b, "bench")
	srv := httptest.NewServer((&api.Server{Store: m.Store, Temporal: m.Client, Blob: m.Blob}).Handler())
	b.Cleanup(srv.Close)
	ctx := context.Background()
	tok, err := m.Store.CreateAPIToken(ctx, "bench", "bench")
	if err != nil {
		b.Fatal(err)
	}
	c, err := client.New(client.Credentials{APIURL: srv.URL, Token: tok})
	if err != nil {
		b.Fatal(err)
	}
	dir := filepath.Join(b.TempDir(), "big")
	if err := lora.Scaffold(dir, lora.ScaffoldOptions{BaseModel: simulator.ModelSmall, Rank: 16, Hidden: 4096, Bytes: 200 << 20}); err != nil {
		b.Fatal(err)
	}
	a, err := lora.Open(dir)
	if err != nil {
		b.Fatal(err)
	}
	f, err := os.Open(a.WeightsPath)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	cfg := harness.BlobConfig(b) // another bucket on the same MinIO
	sdk := manager.NewUploader(s3.New(s3.Options{Region: "us-east-1", BaseEndpoint: aws.String(cfg.Endpoint), UsePathStyle: true,
		Credentials:                credentials.NewStaticCredentialsProvider(cfg.AccessKey, cfg.SecretKey, ""),
		RequestChecksumCalculation: aws.RequestChecksumCalculationWhenRequired,
		ResponseChecksumValidation: aws.ResponseChecksumValidationWhenRequired}),
		func(u *manager.Uploader) { u.PartSize, u.Concurrency = 16<<20, 4 })
	var push, upload, sdkUp, cp []time.Duration
	var sum string
	var up client.UploadResult
	for i := range 3 {
		dst := filepath.Join(b.TempDir(), fmt.Sprintf("copy-%d", i))
		start := time.Now()
		if out, err := exec.Command("cp", a.WeightsPath, dst).CombinedOutput(); err != nil {
			b.Fatalf("cp: %v %s", err, out)
		}
		cp = append(cp, time.Since(start))
		_ = os.Remove(dst)

		key := fmt.Sprintf("sdk/%d", i)
		start = time.Now()
		if _, err := sdk.Upload(ctx, &s3.PutObjectInput{Bucket: &cfg.Bucket, Key: &key, Body: io.NewSectionReader(f, 0, a.Size)}); err != nil {
			b.Fatal(err)
		}
		sdkUp = append(sdkUp, time.Since(start))

		s, _ := client.SHA256(io.NewSectionReader(f, 0, a.Size))
		k, _ := lora.ObjectKey("bench", s)
		if err := m.Blob.Delete(ctx, k); err != nil {
			b.Fatal(err)
		}
		start = time.Now()
		if sum, err = client.SHA256(io.NewSectionReader(f, 0, a.Size)); err != nil {
			b.Fatal(err)
		}
		hashed := time.Now()
		if up, err = c.UploadAdapter(ctx, f, a.Size, sum, client.UploadOptions{PartSize: 16 << 20, Parallel: 4}); err != nil {
			b.Fatal(err)
		}
		push = append(push, time.Since(start))
		upload = append(upload, time.Since(hashed))
	}
	start := time.Now()
	if _, err := c.PushAdapter(ctx, client.PushRequest{SHA256: sum, Size: a.Size, Name: a.Name, Config: a.ConfigJSON,
		UploadID: up.UploadID, Parts: up.Parts}); err != nil {
		b.Fatal(err)
	}
	reg := time.Since(start)
	mb := float64(a.Size) / 1e6
	pushS, uploadS, sdkS, cpS := median(push).Seconds(), median(upload).Seconds(), median(sdkUp).Seconds(), median(cp).Seconds()
	record("lora_push_200mb_s", pushS, fmt.Sprintf("si push's path for %.0f MB: SHA-256, then the API presigns 16 MiB parts and x4 go straight to MinIO on loopback (target < 10)", mb))
	record("lora_push_upload_200mb_s", uploadS, "the same without the SHA-256: presign request and parts only")
	record("lora_sdk_upload_200mb_s", sdkS, "the AWS SDK's multipart upload manager, 16 MiB parts x4, the same file to the same MinIO")
	record("lora_push_vs_sdk_ratio", uploadS/sdkS, "presigned upload / SDK upload, the same bytes sent the same way (the SHA-256 si push also computes is not in either); target <= 1.2")
	record("lora_cp_200mb_s", cpS, "cp of the same file to a directory on the same disk")
	record("lora_push_vs_cp_ratio", pushS/cpS, "target <= 3")
	record("lora_register_ms", ms(reg), "upload done to available through POST /v1/adapters: complete the upload, verify size and SHA-256 in the store, register, fetch to the backend cache, load")
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
