package activities

import (
	"context"

	"github.com/superinstance/mesh/internal/store"
)

// Records writes workflow outcomes to PostgreSQL.
type Records struct {
	Store *store.Store
}

// RecordConsensus stores a finished consensus run; a retry overwrites the same row.
func (r *Records) RecordConsensus(ctx context.Context, run store.ConsensusRun) error {
	return r.Store.RecordConsensus(ctx, run)
}
