package harness

import (
	"context"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/superinstance/mesh/hub/bridge"
	"github.com/superinstance/mesh/internal/blob"
	"github.com/superinstance/mesh/internal/lora"
	"github.com/superinstance/mesh/internal/runner"
	"github.com/superinstance/mesh/internal/simulator"
	"github.com/superinstance/mesh/internal/store"
	"github.com/superinstance/mesh/workflows"
)

var pushes atomic.Int64

// PushAdapter scaffolds a small adapter for the simulator's small model,
// pushes it for owner (into project, if not empty) as si push does, and
// returns its id once available, unloaded from the backend again: the
// next use is a cold start. m needs WithAdapters.
func PushAdapter(t testing.TB, m *Mesh, owner, project, name string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), name)
	// Each push gets a rank of its own: the same bytes pushed twice are one adapter.
	rank := int(pushes.Add(1))
	if err := lora.Scaffold(dir, lora.ScaffoldOptions{BaseModel: simulator.ModelSmall, Rank: rank, Hidden: 64, Bytes: 64 << 10}); err != nil {
		t.Fatal(err)
	}
	a, err := lora.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	up, err := runner.UploadLoRA(ctx, m.Blob, a, owner, project, blob.UploadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	res, err := runner.RegisterLoRA(ctx, m.Client, up.Input)
	if err != nil {
		t.Fatal(err)
	}
	if res.State != store.LoRAAvailable {
		t.Fatalf("push of %s for %s: %+v", name, owner, res)
	}
	Cold(t, m, res.ID)
	return res.ID
}

// Cold unloads adapter id from the backend and the worker's cache
// directory, as if other adapters had pushed it out.
func Cold(t testing.TB, m *Mesh, id string) {
	t.Helper()
	if err := m.Adapters.Cache.Evict(context.Background(), id); err != nil {
		t.Fatal(err)
	}
	_ = os.RemoveAll(filepath.Join(m.Adapters.CacheDir, id))
}

// Warmup waits up to limit for the warm-up workflow the bridge started for
// deviceID's pre-warm signal (at since or later) to finish, and returns its
// result and when it closed.
func Warmup(t testing.TB, m *Mesh, deviceID string, since time.Time, limit time.Duration) (workflows.WarmupResult, time.Time) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	for {
		for at := since.Truncate(time.Minute); !at.After(time.Now()); at = at.Add(time.Minute) {
			id := bridge.WarmupWorkflowID(deviceID, at)
			if _, err := m.Client.DescribeWorkflowExecution(ctx, id, ""); err != nil {
				continue
			}
			var res workflows.WarmupResult
			if err := m.Client.GetWorkflow(ctx, id, "").Get(ctx, &res); err != nil {
				t.Fatalf("warm-up %s: %v", id, err)
			}
			d, err := m.Client.DescribeWorkflowExecution(ctx, id, "")
			if err != nil {
				t.Fatalf("warm-up %s: %v", id, err)
			}
			return res, d.GetWorkflowExecutionInfo().GetCloseTime().AsTime()
		}
		select {
		case <-ctx.Done():
			t.Fatalf("no warm-up workflow for %s within %s", deviceID, limit)
		case <-time.After(20 * time.Millisecond):
		}
	}
}
