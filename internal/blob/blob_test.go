package blob_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/superinstance/mesh/internal/blob"
	"github.com/superinstance/mesh/test/harness"
)

func TestMain(m *testing.M) { harness.Main(m) }

func randomBytes(n int) []byte {
	b := make([]byte, n)
	r := rand.New(rand.NewPCG(1, 2))
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func sum(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:]) }

func TestUploadInterruptedThenResumed(t *testing.T) {
	s := harness.Blob(t)
	ctx := context.Background()
	data := randomBytes(23 << 20) // five 5 MiB parts, the last short
	key := "adapters/acme/x/adapter_model.safetensors"

	// The first attempt is cut off once two parts are stored.
	cut, cancel := context.WithCancel(ctx)
	var parts int
	_, err := s.Upload(cut, key, bytes.NewReader(data), int64(len(data)), blob.UploadOptions{
		PartSize: 5 << 20, Parallel: 1,
		Progress: func(done, total int64) {
			parts++
			if parts == 2 {
				cancel()
			}
		},
	})
	cancel()
	if err == nil {
		t.Fatal("interrupted upload reported success")
	}
	if _, err := s.Stat(ctx, key); !errors.Is(err, blob.ErrNotFound) {
		t.Fatalf("object exists after an interrupted upload: %v", err)
	}

	var last int64
	res, err := s.Upload(ctx, key, bytes.NewReader(data), int64(len(data)), blob.UploadOptions{
		PartSize: 5 << 20, Parallel: 3, Progress: func(done, total int64) { last = done },
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Resumed < 2*(5<<20) || res.Resumed >= int64(len(data)) || res.Parts != 5 {
		t.Fatalf("resumed %d bytes in %d parts; want at least the two stored parts and not all", res.Resumed, res.Parts)
	}
	if last != int64(len(data)) {
		t.Fatalf("progress ended at %d of %d", last, len(data))
	}
	info, err := s.Checksum(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	if info.Size != int64(len(data)) || info.SHA256 != sum(data) {
		t.Fatalf("stored %+v, want %d bytes %s", info, len(data), sum(data))
	}
}

func TestResumeIgnoresChangedParts(t *testing.T) {
	s := harness.Blob(t)
	ctx := context.Background()
	old := randomBytes(11 << 20)
	key := "k"
	cut, cancel := context.WithCancel(ctx)
	_, _ = s.Upload(cut, key, bytes.NewReader(old), int64(len(old)), blob.UploadOptions{
		PartSize: 5 << 20, Parallel: 1, Progress: func(int64, int64) { cancel() },
	})
	cancel()
	// The file changed before the retry: no stored part may be reused.
	data := bytes.Clone(old)
	for i := range data {
		data[i] ^= 0xff
	}
	res, err := s.Upload(ctx, key, bytes.NewReader(data), int64(len(data)), blob.UploadOptions{PartSize: 5 << 20})
	if err != nil {
		t.Fatal(err)
	}
	if res.Resumed != 0 {
		t.Fatalf("reused %d bytes of a different file", res.Resumed)
	}
	if info, err := s.Checksum(ctx, key); err != nil || info.SHA256 != sum(data) {
		t.Fatalf("checksum %+v, %v", info, err)
	}
}

func TestSmallObjectCopyDownloadDelete(t *testing.T) {
	s := harness.Blob(t)
	ctx := context.Background()
	data := []byte("adapter bytes")
	if _, err := s.Upload(ctx, "a", bytes.NewReader(data), int64(len(data)), blob.UploadOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := s.Copy(ctx, "a", "b"); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "sub", "b")
	if err := s.Download(ctx, "b", path); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(path); !bytes.Equal(got, data) {
		t.Fatalf("downloaded %q", got)
	}
	if err := s.Delete(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete(ctx, "a"); err != nil {
		t.Fatalf("deleting twice: %v", err)
	}
	if _, err := s.Stat(ctx, "a"); !errors.Is(err, blob.ErrNotFound) {
		t.Fatalf("Stat after delete = %v", err)
	}
	if err := s.Copy(ctx, "missing", "c"); !errors.Is(err, blob.ErrNotFound) {
		t.Fatalf("Copy of a missing key = %v", err)
	}
}
