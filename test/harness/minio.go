package harness

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/superinstance/mesh/activities"
	"github.com/superinstance/mesh/internal/blob"
	"github.com/superinstance/mesh/internal/devstack"
	"github.com/superinstance/mesh/workers"
)

// BlobConfig returns the configuration of a fresh bucket on the shared MinIO
// server (built by `make tools`; SI_MINIO names another binary). The bucket
// and everything in it are removed at cleanup.
func BlobConfig(t testing.TB) blob.Config {
	t.Helper()
	bin := tool(t, "minio", "SI_MINIO")
	shared.mu.Lock()
	if shared.minio == nil {
		dir, err := os.MkdirTemp("", "si-minio-")
		if err != nil {
			shared.mu.Unlock()
			t.Fatal(err)
		}
		m, err := devstack.StartMinIO(bin, filepath.Join(dir, "data"), "127.0.0.1:0")
		if err != nil {
			shared.mu.Unlock()
			_ = os.RemoveAll(dir)
			t.Fatal(err)
		}
		shared.minio = m
		shared.stops = append(shared.stops, func() { m.Stop(); _ = os.RemoveAll(dir) })
	}
	m := shared.minio
	shared.mu.Unlock()
	cfg := m.Config(UniqueID("t"))
	s, err := blob.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := s.EnsureBucket(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := s.RemoveBucket(ctx); err != nil {
			t.Errorf("removing bucket %s: %v", cfg.Bucket, err)
		}
	})
	return cfg
}

// Blob returns a Store on a fresh bucket (see BlobConfig).
func Blob(t testing.TB) *blob.Store {
	t.Helper()
	s, err := blob.New(BlobConfig(t))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// WithAdapters gives the cloud worker LoRA push and loading: a fresh bucket,
// a cache directory of the test's, and at most capacity adapters loaded in
// the mesh's simulator.
func WithAdapters(t testing.TB, capacity int) func(*Mesh, *workers.Cloud) {
	t.Helper()
	b := Blob(t)
	dir := t.TempDir()
	return func(m *Mesh, c *workers.Cloud) {
		m.Blob = b
		m.Adapters = activities.NewAdapters(m.Store, b, m.Inference.LLM, dir, capacity, m.Inference.LLM.BaseModels)
		inf := *m.Inference
		inf.Adapters = m.Adapters
		c.Inference = &inf
		c.Adapters = m.Adapters
	}
}
