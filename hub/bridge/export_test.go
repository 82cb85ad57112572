package bridge

import (
	"context"
	"io"
	"log/slog"
	"time"

	"github.com/superinstance/mesh/internal/pki"
	"github.com/superinstance/mesh/internal/store"
	meshv1 "github.com/superinstance/mesh/proto/meshv1"
)

// NewLivenessForTest is a bridge process named instance holding live links
// for the hubs ids, for tests of its liveness beat alone; reclaim, when not
// nil, stands in for the store's ReclaimHubs.
func NewLivenessForTest(st *store.Store, instance string, ids []string,
	reclaim func(ctx context.Context, instance string, ids []string) (int64, error)) *Bridge {
	b := &Bridge{opts: Options{Store: st, Name: "b-" + instance, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))},
		instance: instance, conns: map[string]*hubConn{}, reclaim: reclaim}
	for _, id := range ids {
		b.conns[id] = &hubConn{}
	}
	return b
}

// BeatForTest runs one liveness beat.
func (b *Bridge) BeatForTest(ctx context.Context) { b.beat(ctx) }

// NewFlushForTest is a bridge telling hubs to beat every heartbeat and
// holding live links for the hubs ids, for tests of its registry writes
// alone.
func NewFlushForTest(st *store.Store, refresh, heartbeat time.Duration, ids ...string) *Bridge {
	b := &Bridge{opts: Options{Store: st, RefreshInterval: refresh, HeartbeatInterval: heartbeat, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))},
		conns: map[string]*hubConn{}, beats: map[string]beat{}, written: map[string]writtenRow{}, unwritten: map[string]beat{}}
	for _, id := range ids {
		b.conns[id] = &hubConn{}
	}
	return b
}

// NoteAtForTest keeps a heartbeat of deviceID received at at.
func (b *Bridge) NoteAtForTest(deviceID string, at time.Time, v *meshv1.HardwareVitals, rtt uint32) {
	b.mu.Lock()
	b.beats[deviceID] = beat{at: at, rtt: rtt, vitals: v}
	b.mu.Unlock()
}

// FlushForTest runs one flush.
func (b *Bridge) FlushForTest(ctx context.Context) { b.flush(ctx) }

// ClosingForTest runs the flush of a hub whose control stream ended.
func (b *Bridge) ClosingForTest(deviceID string) { b.flushClosing(deviceID) }

// NewRegistryForTest is a bridge with no hub connected, for tests of how
// it registers a device's connections.
func NewRegistryForTest() *Bridge {
	return &Bridge{conns: map[string]*hubConn{}}
}

// RegisterForTest registers c, whose hello the registry wrote at
// connectedAt, as deviceID's connection, and reports whether it was kept.
func (b *Bridge) RegisterForTest(c Conn, deviceID string, connectedAt time.Time) bool {
	return b.register(&hubConn{conn: c, connectedAt: connectedAt, id: pki.Identity{DeviceID: deviceID}})
}

// ConnOfForTest is deviceID's registered connection (nil for none).
func (b *Bridge) ConnOfForTest(deviceID string) Conn {
	b.mu.Lock()
	defer b.mu.Unlock()
	if h := b.conns[deviceID]; h != nil {
		return h.conn
	}
	return nil
}
