package bridge_test

import (
	"context"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	"github.com/superinstance/mesh/hub/bridge"
	"github.com/superinstance/mesh/internal/store"
	meshv1 "github.com/superinstance/mesh/proto/meshv1"
	"github.com/superinstance/mesh/test/harness"
)

// A hub whose reading holds steady costs the registry one row every
// RefreshInterval however often it beats, and a reading that moves past
// the deadband (a GPU going over placement's load limit, a degree hotter,
// the round trip growing) is written at the very next flush. A hub whose
// link closes has its last reading written whatever the deadband says.
func TestSteadyHubsAreWrittenEveryRefreshAndChangesAtOnce(t *testing.T) {
	st := harness.Store(t)
	ctx := context.Background()
	harness.EnsureAccount(t, st, "acme-flush")
	id := harness.UniqueID("gpu-steady")
	if err := st.RegisterCert(ctx, id, "acme-flush", "serial-"+id, time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if _, _, err := st.HubConnected(ctx, store.Hub{DeviceID: id, Bridge: "b-flush"}); err != nil {
		t.Fatal(err)
	}
	b := bridge.NewFlushForTest(st, 5*time.Second, id)
	t0 := time.Now().Add(time.Second).Truncate(time.Millisecond) // after HubConnected's last_seen
	at := func(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }
	beat := func(s float64, util, temp uint32, rtt uint32) {
		t.Helper()
		b.NoteAtForTest(id, at(s), harness.FixedVitals(util, temp)(), rtt)
		b.FlushForTest(ctx)
	}
	want := func(step string, s float64, load, temp float64, rtt int) {
		t.Helper()
		h, err := st.HubByID(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if !h.LastSeen.Equal(at(s)) || h.GPULoad != load || h.GPUTempC != temp || h.RTTMicros != rtt {
			t.Fatalf("%s: registry has last_seen %v load %v temp %v rtt %d, want %v %v %v %d",
				step, h.LastSeen.Sub(t0), h.GPULoad, h.GPUTempC, h.RTTMicros, at(s).Sub(t0), load, temp, rtt)
		}
	}

	beat(0, 30, 60, 500)
	want("the first reading", 0, 0.30, 60, 500)
	// Four seconds of beats that jitter inside the deadband write nothing.
	for i := 1; i <= 4; i++ {
		beat(float64(i), 30+uint32(i%2), 60, 500+uint32(i)*20)
	}
	want("readings inside the deadband", 0, 0.30, 60, 500)
	// At RefreshInterval the same reading is written again: last_seen and
	// the round trip move, the figures and the vitals document stay those
	// last written.
	beat(5, 31, 60, 560)
	want("a steady hub at the refresh", 5, 0.30, 60, 560)
	h, err := st.HubByID(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	var doc meshv1.HardwareVitals
	if err := protojson.Unmarshal(h.Vitals, &doc); err != nil || len(doc.GetGpus()) != 1 || doc.GetGpus()[0].GetUtilizationPercent() != 30 {
		t.Fatalf("vitals document after the refresh: %s (%v)", h.Vitals, err)
	}
	// Changes past the deadband are written at once.
	beat(5.2, 97, 60, 560)
	want("a GPU over the load limit", 5.2, 0.97, 60, 560)
	beat(5.4, 97, 61, 560)
	want("a degree hotter", 5.4, 0.97, 61, 560)
	beat(5.6, 97, 61, 900)
	want("the round trip grown by more than a fifth", 5.6, 0.97, 61, 900)
	// A closing link writes its last reading, though it is inside the deadband.
	b.NoteAtForTest(id, at(5.8), harness.FixedVitals(97, 61)(), 910)
	b.ClosingForTest(id)
	want("the last reading of a closing link", 5.8, 0.97, 61, 910)
}
