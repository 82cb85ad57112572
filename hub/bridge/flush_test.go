package bridge_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/superinstance/mesh/hub/bridge"
	"github.com/superinstance/mesh/internal/store"
	meshv1 "github.com/superinstance/mesh/proto/meshv1"
	"github.com/superinstance/mesh/test/harness"
)

// flushHub registers a connected hub and returns a bridge holding its link,
// a clock one second after the registration's (on the database's clock),
// and a function reading the hub's registry row.
func flushHub(t *testing.T, refresh, heartbeat time.Duration) (st *store.Store, id string, b *bridge.Bridge, t0 time.Time, row func() store.Hub) {
	t.Helper()
	st = harness.Store(t)
	ctx := context.Background()
	harness.EnsureAccount(t, st, "acme-flush")
	id = harness.UniqueID("gpu-flush")
	if err := st.RegisterCert(ctx, id, "acme-flush", "serial-"+id, time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if _, _, err := st.HubConnected(ctx, store.Hub{DeviceID: id, Bridge: "b-flush"}); err != nil {
		t.Fatal(err)
	}
	b = bridge.NewFlushForTest(st, refresh, heartbeat, id)
	return st, id, b, time.Now().Add(time.Second).Truncate(time.Millisecond), func() store.Hub {
		t.Helper()
		h, err := st.HubByID(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		return h
	}
}

// A hub whose reading holds steady costs the registry one row every
// RefreshInterval however often it beats, and a reading that moves past
// the deadband (a point of load near placement's limit, a degree hotter,
// the round trip growing) is written at the very next flush. A beat the
// registry refused (its row's last_seen was later, on the database's
// clock) is not taken for written, and a hub whose link closes has the
// last reading the deadband held back written.
func TestSteadyHubsAreWrittenEveryRefreshAndChangesAtOnce(t *testing.T) {
	_, id, b, t0, row := flushHub(t, 5*time.Second, time.Second)
	ctx := context.Background()
	at := func(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }
	beat := func(s float64, util, temp uint32, rtt uint32) {
		t.Helper()
		b.NoteAtForTest(id, at(s), harness.FixedVitals(util, temp)(), rtt)
		b.FlushForTest(ctx)
	}
	want := func(step string, s float64, load, temp float64, rtt int) {
		t.Helper()
		h := row()
		if !h.LastSeen.Equal(at(s)) || h.GPULoad != load || h.GPUTempC != temp || h.RTTMicros != rtt {
			t.Fatalf("%s: registry has last_seen %v load %v temp %v rtt %d, want %v %v %v %d",
				step, h.LastSeen.Sub(t0), h.GPULoad, h.GPUTempC, h.RTTMicros, at(s).Sub(t0), load, temp, rtt)
		}
	}

	// Two seconds before t0 is before the registration's last_seen: the
	// registry keeps its row, and the same reading at t0 is written.
	beat(-2, 30, 60, 500)
	beat(0, 30, 60, 500)
	want("the first reading the registry took", 0, 0.30, 60, 500)
	// Four seconds of beats that jitter inside the deadband write nothing.
	for i := 1; i <= 4; i++ {
		beat(float64(i), 30+uint32(i%2), 60, 500+uint32(i)*20)
	}
	want("readings inside the deadband", 0, 0.30, 60, 500)
	// Due a refresh (5 s less half a heartbeat), the reading as it is now.
	beat(4.6, 31, 60, 560)
	want("a steady hub at the refresh", 4.6, 0.31, 60, 560)
	// Changes past the deadband are written at once; near the limits, any.
	beat(4.8, 95, 60, 560)
	want("a GPU near the load limit", 4.8, 0.95, 60, 560)
	beat(4.9, 96, 60, 560)
	want("one point over the load limit", 4.9, 0.96, 60, 560)
	beat(5.0, 96, 61, 560)
	want("a degree hotter", 5.0, 0.96, 61, 560)
	beat(5.2, 96, 61, 900)
	want("the round trip grown by more than a fifth", 5.2, 0.96, 61, 900)
	// A beat held back by the deadband, then the link closes: the next
	// flush writes it.
	beat(5.4, 96, 61, 910)
	want("a beat inside the deadband", 5.2, 0.96, 61, 900)
	b.ClosingForTest(id)
	b.FlushForTest(ctx)
	want("the last reading of a closing link", 5.4, 0.96, 61, 910)
}

// With heartbeats as slow as the refresh (5 s, the default), a steady hub
// is refreshed at every beat, however a beat's arrival jitters: its
// last_seen never lags by two heartbeats.
func TestSlowHeartbeatsAreRefreshedAtEveryBeat(t *testing.T) {
	_, id, b, t0, row := flushHub(t, 5*time.Second, 5*time.Second)
	ctx := context.Background()
	for _, s := range []time.Duration{0, 4990 * time.Millisecond, 9980 * time.Millisecond} {
		b.NoteAtForTest(id, t0.Add(s), harness.FixedVitals(30, 60)(), 500)
		b.FlushForTest(ctx)
		if h := row(); !h.LastSeen.Equal(t0.Add(s)) {
			t.Fatalf("after the beat at %v the registry's last_seen is %v", s, h.LastSeen.Sub(t0))
		}
	}
}

// A hub whose figures stay inside the deadband is refreshed with them, and
// its vitals document (memory, power and clocks of every GPU) is marshaled
// anew at least every 30 s: details that move without moving the figures
// are never more than that old in the registry.
func TestTheVitalsDocumentIsAtMostThirtySecondsOld(t *testing.T) {
	_, id, b, t0, row := flushHub(t, 5*time.Second, time.Second)
	ctx := context.Background()
	memUsed := func() uint64 {
		t.Helper()
		var doc meshv1.HardwareVitals
		if err := protojson.Unmarshal(row().Vitals, &doc); err != nil || len(doc.GetGpus()) != 1 {
			t.Fatalf("vitals document %s: %v", row().Vitals, err)
		}
		return doc.GetGpus()[0].GetMemoryUsedBytes()
	}
	beat := func(s int, mem uint64) {
		v := harness.FixedVitals(30, 60)()
		v.Gpus[0].MemoryUsedBytes = mem
		b.NoteAtForTest(id, t0.Add(time.Duration(s)*time.Second), v, 500)
		b.FlushForTest(ctx)
	}
	beat(0, 1<<30)
	for s := 5; s <= 25; s += 5 {
		beat(s, 2<<30)
		if h := row(); !h.LastSeen.Equal(t0.Add(time.Duration(s) * time.Second)) {
			t.Fatalf("refresh at %ds: last_seen %v", s, h.LastSeen.Sub(t0))
		}
	}
	if got := memUsed(); got != 1<<30 {
		t.Fatalf("at 25 s the document says %d bytes used, want the first reading's (marshaled at 0 s)", got)
	}
	// The refresh at 30 s would find a 30 s old document at the next one:
	// it marshals.
	beat(30, 2<<30)
	if got := memUsed(); got != 2<<30 {
		t.Fatalf("at 30 s the document says %d bytes used, want the reading's %d", got, uint64(2<<30))
	}
	// A reading past the deadband marshals at once, the document too.
	v := harness.FixedVitals(40, 60)()
	v.Gpus[0].MemoryUsedBytes = 3 << 30
	b.NoteAtForTest(id, t0.Add(31*time.Second), v, 500)
	b.FlushForTest(ctx)
	if got := memUsed(); got != 3<<30 || row().GPULoad != 0.40 {
		t.Fatalf("after a change past the deadband: document %d bytes used, load %v", got, row().GPULoad)
	}
}

// A refresh inside the deadband sends the registry no vitals document:
// the row keeps the one it holds (here one put there behind the bridge's
// back), and the document is sent again once it would be 30 s old.
func TestARefreshInsideTheDeadbandSendsNoDocument(t *testing.T) {
	st, id, b, t0, row := flushHub(t, 5*time.Second, time.Second)
	ctx := context.Background()
	beat := func(s int) {
		b.NoteAtForTest(id, t0.Add(time.Duration(s)*time.Second), harness.FixedVitals(30, 60)(), 500)
		b.FlushForTest(ctx)
	}
	beat(0)
	const marker = `{"note": "put there by another writer"}`
	if _, err := st.Pool.Exec(ctx, `UPDATE hubs SET vitals = $2::jsonb WHERE device_id = $1`, id, marker); err != nil {
		t.Fatal(err)
	}
	beat(5)
	if h := row(); !h.LastSeen.Equal(t0.Add(5*time.Second)) || !strings.Contains(string(h.Vitals), "another writer") {
		t.Fatalf("a refresh inside the deadband: last_seen %v, vitals %s; want the row refreshed and its document left", h.LastSeen.Sub(t0), h.Vitals)
	}
	beat(30)
	if h := row(); strings.Contains(string(h.Vitals), "another writer") {
		t.Fatalf("the refresh at 30 s left the old document: %s", h.Vitals)
	}
}

// The vitals history takes a hub's reading once a minute: after it took
// one, the bridge does not offer the next minute's beats again (a reading
// pruned meanwhile is not replaced by one of them), and offers once the
// minute is over.
func TestTheHistoryIsOfferedOnceAMinute(t *testing.T) {
	st, id, b, t0, _ := flushHub(t, 5*time.Second, time.Second)
	ctx := context.Background()
	readings := func() []time.Duration {
		t.Helper()
		rows, err := st.Pool.Query(ctx, `SELECT at FROM hub_vitals WHERE device_id = $1 ORDER BY at`, id)
		if err != nil {
			t.Fatal(err)
		}
		ats, err := pgx.CollectRows(rows, pgx.RowTo[time.Time])
		if err != nil {
			t.Fatal(err)
		}
		var out []time.Duration
		for _, at := range ats {
			out = append(out, at.Sub(t0))
		}
		return out
	}
	beat := func(s int) {
		b.NoteAtForTest(id, t0.Add(time.Duration(s)*time.Second), harness.FixedVitals(30, 60)(), 500)
		b.FlushForTest(ctx)
	}
	beat(0)
	if got := readings(); len(got) != 1 || got[0] != 0 {
		t.Fatalf("history after the first beat: %v", got)
	}
	if _, err := st.Pool.Exec(ctx, `DELETE FROM hub_vitals WHERE device_id = $1`, id); err != nil {
		t.Fatal(err)
	}
	for s := 5; s < 60; s += 5 {
		beat(s)
	}
	if got := readings(); len(got) != 0 {
		t.Fatalf("beats of the minute after a reading was taken were offered again: %v", got)
	}
	beat(60)
	beat(65)
	if got := readings(); len(got) != 1 || got[0] != time.Minute {
		t.Fatalf("history after a minute: %v, want the reading at 1m0s", got)
	}
}
