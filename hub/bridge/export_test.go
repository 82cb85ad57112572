package bridge

import (
	"context"
	"io"
	"log/slog"

	"github.com/superinstance/mesh/internal/store"
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
