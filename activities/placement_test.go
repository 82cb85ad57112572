package activities_test

import (
	"context"
	"strings"
	"testing"
	"time"

	enumspb "go.temporal.io/api/enums/v1"
	taskqueuepb "go.temporal.io/api/taskqueue/v1"
	"go.temporal.io/api/workflowservice/v1"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/superinstance/mesh/activities"
	"github.com/superinstance/mesh/internal/store"
	"github.com/superinstance/mesh/test/harness"
)

// livePollers says every queue has a worker polling it now.
type livePollers struct{}

func (livePollers) DescribeTaskQueue(context.Context, string, enumspb.TaskQueueType) (*workflowservice.DescribeTaskQueueResponse, error) {
	return &workflowservice.DescribeTaskQueueResponse{Pollers: []*taskqueuepb.PollerInfo{{LastAccessTime: timestamppb.Now()}}}, nil
}

// hubWith enrolls device for account and records it connected with a heartbeat of load.
func hubWith(t *testing.T, st *store.Store, account, device string, load float64) {
	t.Helper()
	ctx := context.Background()
	harness.EnsureAccount(t, st, account)
	if err := st.RegisterCert(ctx, device, account, "serial-"+device, time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if _, _, err := st.HubConnected(ctx, store.Hub{DeviceID: device, Version: "test", Hostname: device}); err != nil {
		t.Fatal(err)
	}
	if err := st.SaveHeartbeats(ctx, []store.HubBeat{{DeviceID: device, At: time.Now(), GPUCount: 1, GPULoad: load, GPUTempC: 50}}); err != nil {
		t.Fatal(err)
	}
}

// Placement picks the least loaded healthy hub of the run's own account,
// and never another account's hub however idle it is.
func TestPickHubChoosesTheAccountsLeastLoadedHub(t *testing.T) {
	st := harness.Store(t)
	hubWith(t, st, "acme", "acme-a", 0.60)
	hubWith(t, st, "acme", "acme-b", 0.20)
	hubWith(t, st, "acme", "acme-hot", 0.99) // over the policy's 95%
	hubWith(t, st, "evil", "evil-idle", 0.00)
	p := &activities.Placement{Temporal: livePollers{}, Hubs: st, Accounts: st}
	ctx := context.Background()

	got, err := p.PickHub(ctx, activities.PickHubInput{Account: "acme"})
	if err != nil {
		t.Fatal(err)
	}
	if got.Queue != "hub.acme-b" || !strings.HasPrefix(got.Note, "acme-b: lowest GPU load") || !strings.Contains(got.Note, "of 2 healthy hubs") {
		t.Fatalf("picked %+v, want hub.acme-b as the lowest GPU load of 2 healthy hubs", got)
	}

	// An account whose only hub is over the limit runs in the cloud, not on
	// the idle hub of another account.
	hubWith(t, st, "solo", "solo-hot", 0.99)
	got, err = p.PickHub(ctx, activities.PickHubInput{Account: "solo"})
	if err != nil {
		t.Fatal(err)
	}
	if got.Queue != "" || !strings.HasPrefix(got.Note, "cloud: no healthy hub") || strings.Contains(got.Note, "evil") {
		t.Fatalf("picked %+v, want the cloud with no healthy hub", got)
	}
	// An account without hubs.
	got, err = p.PickHub(ctx, activities.PickHubInput{Account: "nohubs"})
	if err != nil || got.Queue != "" || !strings.HasPrefix(got.Note, "cloud: ") {
		t.Fatalf("picked %+v, %v, want the cloud", got, err)
	}
	// Naming the other account's idle hub does not make it a candidate.
	got, err = p.PickHub(ctx, activities.PickHubInput{Account: "solo", Prefer: "hub.evil-idle"})
	if err != nil || got.Queue != "" {
		t.Fatalf("picked %+v, %v for solo preferring evil's hub, want the cloud", got, err)
	}
	// A hub queue the bridge never registered (a worker the operator runs)
	// is judged by its pollers, as before.
	got, err = p.PickHub(ctx, activities.PickHubInput{Account: "solo", Prefer: "hub.operator-gpu"})
	if err != nil || got.Queue != "hub.operator-gpu" {
		t.Fatalf("picked %+v, %v for an unregistered hub queue with a live poller, want it", got, err)
	}
	// The other account's own view is its own hub.
	got, err = p.PickHub(ctx, activities.PickHubInput{Account: "evil"})
	if err != nil || got.Queue != "hub.evil-idle" {
		t.Fatalf("picked %+v, %v for evil, want its own hub", got, err)
	}
}
