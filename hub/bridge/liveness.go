package bridge

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"time"

	"github.com/superinstance/mesh/internal/store"
)

// newInstance names one bridge process in the registry: replicas often
// share a name (the listen address 0.0.0.0:7443), a restart must not pass
// for the process it replaces, and a dead one's hubs are told apart by it.
func newInstance() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// Instance is this bridge process's id in the registry (bridge_beats).
func (b *Bridge) Instance() string { return b.instance }

// live beats for this bridge every store.BridgeBeatEvery until ctx ends, and
// marks offline the hubs of bridges that stopped beating: a bridge killed
// without closing its links takes its hubs offline within
// store.BridgeStale, for every reader of the registry, whether or not
// their own heartbeat age has run out.
func (b *Bridge) live(ctx context.Context) {
	t := time.NewTicker(store.BridgeBeatEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			b.beat(ctx)
		}
	}
}

// beat writes this bridge's liveness row once, takes back its hubs that
// another bridge's sweep marked lost, and sweeps the dead bridges' hubs. A
// write that cannot finish within the stale age is given up: the next tick
// tries again.
func (b *Bridge) beat(parent context.Context) {
	ctx, cancel := context.WithTimeout(parent, store.BridgeStale)
	defer cancel()
	wasDead, err := b.opts.Store.BridgeBeat(ctx, b.instance, b.opts.Name)
	if err != nil {
		if !errors.Is(ctx.Err(), context.Canceled) { // not the bridge shutting down
			b.opts.Logger.Warn("bridge liveness beat failed; its hubs go offline for the others after "+store.BridgeStale.String(), "error", err)
		}
		return
	}
	b.reclaimLost(parent, wasDead)
	n, err := b.opts.Store.SweepDeadBridges(ctx, b.instance)
	if err != nil {
		b.opts.Logger.Warn("marking the hubs of dead bridges offline", "error", err)
		return
	}
	if n > 0 {
		b.opts.Logger.Info("marked the hubs of bridges that stopped beating offline", "hubs", n)
	}
}

// reclaimLost marks connected again the hubs this bridge holds live links
// for that another bridge's sweep marked lost (bridge_lost_at) while this
// one could not beat. It runs on every beat, not only the first after a
// stall, with a context of its own: a reclaim that failed, or a sweep that
// committed after it (read before this bridge's beat), is put right on the
// next beat instead of leaving the hubs offline while their links hold.
func (b *Bridge) reclaimLost(parent context.Context, wasDead bool) {
	ctx, cancel := context.WithTimeout(parent, store.BridgeStale)
	defer cancel()
	// Which of this bridge's hubs are marked lost: almost always none, a
	// lookup in a near-empty index, where sending every connected device's
	// id each second would cost the bridge and the database in proportion
	// to its hubs.
	lost, err := b.opts.Store.LostHubs(ctx, b.instance)
	if err != nil {
		if !errors.Is(ctx.Err(), context.Canceled) {
			b.opts.Logger.Warn("asking which of this bridge's hubs were marked lost; the next beat asks again", "error", err)
		}
		return
	}
	if len(lost) == 0 {
		if wasDead {
			b.opts.Logger.Warn("this bridge had missed its liveness beats; none of its hubs was marked lost")
		}
		return
	}
	b.mu.Lock()
	ids := lost[:0]
	for _, id := range lost {
		if _, held := b.conns[id]; held {
			ids = append(ids, id)
		}
	}
	b.mu.Unlock()
	if len(ids) == 0 {
		return
	}
	reclaim := b.reclaim
	if reclaim == nil {
		reclaim = b.opts.Store.ReclaimHubs
	}
	n, err := reclaim(ctx, b.instance, ids)
	switch {
	case err != nil:
		if !errors.Is(ctx.Err(), context.Canceled) {
			b.opts.Logger.Warn("reclaiming this bridge's hubs marked lost by another bridge; the next beat tries again", "error", err, "hubs", len(ids))
		}
	case n > 0 || wasDead:
		b.opts.Logger.Warn("this bridge had missed its liveness beats; its hubs are connected again", "hubs", n)
	}
}

// stopped records this bridge's clean stop, so a hub still registered on
// it is offline at once.
func (b *Bridge) stopped() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := b.opts.Store.BridgeStopped(ctx, b.instance); err != nil {
		b.opts.Logger.Warn("recording the bridge's stop", "error", err)
	}
}
