package integration

import (
	"context"
	"errors"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"go.temporal.io/sdk/client"

	"github.com/superinstance/mesh/internal/blob"
	"github.com/superinstance/mesh/internal/lora"
	"github.com/superinstance/mesh/internal/runner"
	"github.com/superinstance/mesh/internal/simulator"
	"github.com/superinstance/mesh/internal/store"
	"github.com/superinstance/mesh/test/harness"
	"github.com/superinstance/mesh/workers"
	"github.com/superinstance/mesh/workflows"
)

// adapter writes a small valid adapter; distinct ranks give distinct bytes.
func adapter(t *testing.T, name string, rank int, size int64) *lora.Adapter {
	t.Helper()
	dir := filepath.Join(t.TempDir(), name)
	if err := lora.Scaffold(dir, lora.ScaffoldOptions{BaseModel: simulator.ModelSmall, Rank: rank, Hidden: 64, Bytes: size}); err != nil {
		t.Fatal(err)
	}
	a, err := lora.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func push(t *testing.T, m *harness.Mesh, a *lora.Adapter, owner, project string) (workflows.LoRAPushResult, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	up, err := runner.UploadLoRA(ctx, m.Blob, a, owner, project, blob.UploadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return runner.RegisterLoRA(ctx, m.Client, up.Input)
}

func mustPush(t *testing.T, m *harness.Mesh, a *lora.Adapter, owner, project string) string {
	t.Helper()
	res, err := push(t, m, a, owner, project)
	if err != nil {
		t.Fatal(err)
	}
	if !lora.ValidID(res.ID) || res.State != store.LoRAAvailable {
		t.Fatalf("push = %+v", res)
	}
	return res.ID
}

func TestLoRAPushRegistersLoadsAndServesConsensus(t *testing.T) {
	m := harness.StartMesh(t, simulator.Options{LoadDelay: 20 * time.Millisecond}, harness.WithAdapters(t, 4))
	m.Account(t, "alice")
	a := adapter(t, "support-bot", 4, 64<<10)
	id := mustPush(t, m, a, "alice", "")
	if got := m.Sim.LoadedLoRAs(); !slices.Equal(got, []string{id}) {
		t.Fatalf("simulator has %v loaded, want [%s]", got, id)
	}
	l, err := m.Store.LoRAFor(context.Background(), "alice", id)
	if err != nil {
		t.Fatal(err)
	}
	sum, _ := runner.FileSHA256(a.WeightsPath)
	if l.Owner != "alice" || l.Size != a.Size || l.SHA256 != sum || l.Rank != 4 || l.BaseModel != simulator.ModelSmall ||
		l.Name != "support-bot" || l.AvailableAt == nil || strings.Contains(l.ObjectKey, "support-bot") {
		t.Fatalf("registered %+v", l)
	}

	// The same bytes again: no second registration.
	again, err := push(t, m, a, "alice", "")
	if err != nil || again.ID != id || !again.Existing {
		t.Fatalf("second push = %+v, %v; want existing %s", again, err, id)
	}
	if ls, _ := m.Store.LoRAs(context.Background(), "alice"); len(ls) != 1 {
		t.Fatalf("alice has %d adapters after pushing one twice", len(ls))
	}

	// Placed on a healthy hub, the other agents run there; Logos with the
	// adapter runs in the cloud, where adapters are loaded.
	m.StartHub(t, "gpu-1")
	_, st, err := ask(t, m, workflows.ConsensusInput{Prompt: "Reset my password [sim:agree]", Account: "alice", LoRA: id,
		HubQueue: workers.HubQueue("gpu-1"), Placement: workflows.PlacementHub}, nil)
	if err != nil {
		t.Fatal(err)
	}
	var logos []string
	for _, u := range st.Usage {
		switch {
		case u.Role == "logos":
			logos = append(logos, u.Model)
			if u.RanOn != workers.CloudQueue {
				t.Errorf("Logos with an adapter ran on %s", u.RanOn)
			}
		case u.RanOn != workers.HubQueue("gpu-1"):
			t.Errorf("%s ran on %s, want the hub", u.Role, u.RanOn)
		}
	}
	if len(logos) == 0 || logos[0] != id {
		t.Fatalf("Logos ran on %v, want the adapter %s", logos, id)
	}
}

func TestLoRAIsolationBetweenOwners(t *testing.T) {
	m := harness.StartMesh(t, simulator.Options{}, harness.WithAdapters(t, 4))
	ctx := context.Background()
	for _, acct := range []string{"alice", "bob", "carol"} {
		m.Account(t, acct)
	}
	aliceID := mustPush(t, m, adapter(t, "a", 4, 16<<10), "alice", "alpha")
	bobID := mustPush(t, m, adapter(t, "b", 8, 16<<10), "bob", "")

	// Neither can list the other's.
	for owner, want := range map[string]string{"alice": aliceID, "bob": bobID} {
		ls, err := m.Store.LoRAs(ctx, owner)
		if err != nil || len(ls) != 1 || ls[0].ID != want {
			t.Fatalf("%s lists %+v, %v; want only %s", owner, ls, err, want)
		}
	}
	// Nor show it, and a guessed id reads the same as someone else's.
	for _, id := range []string{aliceID, lora.NewID()} {
		if _, err := m.Store.LoRAFor(ctx, "bob", id); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("bob reading %s: %v, want not found", id, err)
		}
	}
	// Nor use it.
	_, _, err := ask(t, m, workflows.ConsensusInput{Prompt: "hi [sim:agree]", Account: "bob", LoRA: aliceID}, nil)
	if err == nil || !strings.Contains(err.Error(), "adapter "+aliceID+" not found") {
		t.Fatalf("bob using alice's adapter: %v", err)
	}
	// Nor delete it.
	if err := runner.RemoveLoRA(ctx, m.Client, "bob", aliceID); err == nil || !strings.Contains(err.Error(), "not found") {
		t.Fatalf("bob removing alice's adapter: %v", err)
	}
	if _, err := m.Store.LoRAFor(ctx, "alice", aliceID); err != nil {
		t.Fatalf("alice's adapter after bob's attempts: %v", err)
	}

	// A collaborator of alice's project may see and use it; a viewer may not remove it.
	if err := m.Store.AddMember(ctx, "alpha", "carol", store.RoleViewer); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Store.LoRAFor(ctx, "carol", aliceID); err != nil {
		t.Fatalf("carol (viewer of alpha) reading alice's adapter: %v", err)
	}
	if _, _, err := ask(t, m, workflows.ConsensusInput{Prompt: "hi [sim:agree]", Account: "carol", LoRA: aliceID}, nil); err != nil {
		t.Fatalf("carol using the project's adapter: %v", err)
	}
	if err := runner.RemoveLoRA(ctx, m.Client, "carol", aliceID); err == nil || !strings.Contains(err.Error(), "viewer") {
		t.Fatalf("a viewer removing the adapter: %v", err)
	}
	if _, err := m.Store.LoRAFor(ctx, "carol", bobID); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("carol reading bob's adapter: %v", err)
	}

	// Alice removes hers: unloaded, unregistered, object gone.
	l, _ := m.Store.LoRAFor(ctx, "alice", aliceID)
	if err := runner.RemoveLoRA(ctx, m.Client, "alice", aliceID); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Store.LoRAByID(ctx, aliceID); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("row after rm: %v", err)
	}
	if _, err := m.Blob.Stat(ctx, l.ObjectKey); !errors.Is(err, blob.ErrNotFound) {
		t.Fatalf("object after rm: %v", err)
	}
	if slices.Contains(m.Sim.LoadedLoRAs(), aliceID) {
		t.Fatal("adapter still loaded after rm")
	}
}

func TestLoRALoadFailureCompensates(t *testing.T) {
	m := harness.StartMesh(t, simulator.Options{FailLoad: true}, harness.WithAdapters(t, 4))
	m.Account(t, "alice")
	a := adapter(t, "broken", 4, 16<<10)
	_, err := push(t, m, a, "alice", "")
	if err == nil || !strings.Contains(err.Error(), "undone") || !strings.Contains(err.Error(), "simulated load failure") {
		t.Fatalf("push with a failing backend: %v", err)
	}
	ctx := context.Background()
	if ls, _ := m.Store.LoRAs(ctx, "alice"); len(ls) != 0 {
		t.Fatalf("registrations left after a failed push: %+v", ls)
	}
	sum, _ := runner.FileSHA256(a.WeightsPath)
	key, _ := lora.ObjectKey("alice", sum)
	if _, err := m.Blob.Stat(ctx, key); !errors.Is(err, blob.ErrNotFound) {
		t.Fatalf("object left after a failed push: %v", err)
	}
}

func TestLoRAVerificationRejectsMismatch(t *testing.T) {
	m := harness.StartMesh(t, simulator.Options{}, harness.WithAdapters(t, 4))
	m.Account(t, "alice")
	ctx := context.Background()
	up, err := runner.UploadLoRA(ctx, m.Blob, adapter(t, "x", 4, 16<<10), "alice", "", blob.UploadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	in := up.Input
	in.Size++
	if _, err := runner.RegisterLoRA(ctx, m.Client, in); err == nil || !strings.Contains(err.Error(), "the client sent") {
		t.Fatalf("registering with the wrong size: %v", err)
	}
	in = up.Input
	in.BaseModel, in.Config = "llama-9000", []byte(`{"base_model_name_or_path":"llama-9000","r":4,"lora_alpha":8,"target_modules":["q_proj"]}`)
	if _, err := runner.RegisterLoRA(ctx, m.Client, in); err == nil || !strings.Contains(err.Error(), "not served") {
		t.Fatalf("registering for an unserved base model: %v", err)
	}
}

func TestLoRAInterruptedPushResumes(t *testing.T) {
	m := harness.StartMesh(t, simulator.Options{}, harness.WithAdapters(t, 4))
	m.Account(t, "alice")
	a := adapter(t, "big", 16, 12<<20)
	ctx := context.Background()
	cut, cancel := context.WithCancel(ctx)
	parts := 0
	_, err := runner.UploadLoRA(cut, m.Blob, a, "alice", "", blob.UploadOptions{PartSize: 5 << 20, Parallel: 1,
		Progress: func(int64, int64) {
			if parts++; parts == 1 {
				cancel()
			}
		}})
	cancel()
	if err == nil {
		t.Fatal("interrupted upload succeeded")
	}
	up, err := runner.UploadLoRA(ctx, m.Blob, a, "alice", "", blob.UploadOptions{PartSize: 5 << 20})
	if err != nil {
		t.Fatal(err)
	}
	if up.Result.Resumed < 5<<20 {
		t.Fatalf("resumed %d bytes, want at least the first part", up.Result.Resumed)
	}
	res, err := runner.RegisterLoRA(ctx, m.Client, up.Input)
	if err != nil || res.State != store.LoRAAvailable {
		t.Fatalf("register after resume = %+v, %v", res, err)
	}
}

func TestLoRAEvictionAndReload(t *testing.T) {
	m := harness.StartMesh(t, simulator.Options{}, harness.WithAdapters(t, 2))
	m.Account(t, "alice")
	var ids []string
	for i, name := range []string{"one", "two", "three"} {
		ids = append(ids, mustPush(t, m, adapter(t, name, 2+i, 8<<10), "alice", ""))
	}
	// Capacity two: the first adapter went when the third loaded.
	loaded := m.Sim.LoadedLoRAs()
	if len(loaded) != 2 || slices.Contains(loaded, ids[0]) {
		t.Fatalf("loaded %v; want the last two of %v", loaded, ids)
	}
	if got := m.Adapters.Cache.Loaded(); !slices.Equal(got, []string{ids[2], ids[1]}) {
		t.Fatalf("cache order %v", got)
	}
	// Using the evicted one loads it again and evicts the least recently used.
	if _, _, err := ask(t, m, workflows.ConsensusInput{Prompt: "hi [sim:agree]", Account: "alice", LoRA: ids[0]}, nil); err != nil {
		t.Fatal(err)
	}
	loaded = m.Sim.LoadedLoRAs()
	if !slices.Contains(loaded, ids[0]) || slices.Contains(loaded, ids[1]) || len(loaded) != 2 {
		t.Fatalf("after reuse loaded %v; want %s back and %s evicted", loaded, ids[0], ids[1])
	}
}

func TestWarmupLoadsAdapterAheadOfNeed(t *testing.T) {
	m := harness.StartMesh(t, simulator.Options{}, harness.WithAdapters(t, 2))
	m.Account(t, "alice")
	m.Account(t, "bob")
	ctx := context.Background()
	id := mustPush(t, m, adapter(t, "warm", 4, 8<<10), "alice", "")
	if err := m.Adapters.Cache.Evict(ctx, id); err != nil {
		t.Fatal(err)
	}
	warm := func(account string) workflows.WarmupResult {
		run, err := m.Client.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: harness.UniqueID("warmup"), TaskQueue: workers.CloudQueue},
			workflows.WarmupWorkflow, workflows.WarmupInput{DeviceID: "h1", Account: account, Reason: "gpu_load", LoRA: id})
		if err != nil {
			t.Fatal(err)
		}
		var res workflows.WarmupResult
		if err := run.Get(ctx, &res); err != nil {
			t.Fatal(err)
		}
		return res
	}
	// Another account's hub cannot warm alice's adapter.
	if res := warm("bob"); len(res.Loaded) != 0 || slices.Contains(m.Sim.LoadedLoRAs(), id) {
		t.Fatalf("bob's warm-up loaded %v", res.Loaded)
	}
	if res := warm("alice"); !slices.Equal(res.Loaded, []string{id}) || !slices.Contains(m.Sim.LoadedLoRAs(), id) {
		t.Fatalf("warm-up loaded %v; simulator has %v", res.Loaded, m.Sim.LoadedLoRAs())
	}
}
