package store_test

import (
	"context"
	"strings"
	"testing"

	"github.com/superinstance/mesh/internal/store"
	"github.com/superinstance/mesh/test/harness"
)

// A database whose recorded migration 0021 is another change than this
// binary's 0021 (two branches numbered theirs alike, or a binary built from
// another tree) is refused with an error that names both, before anything
// else is applied: at the same version, and when the database is behind.
func TestMigrateRefusesAMigrationRecordedUnderAnotherName(t *testing.T) {
	s := harness.Store(t) // Open has applied every migration
	ctx := context.Background()
	ms, err := store.Migrations()
	if err != nil || len(ms) < 22 {
		t.Fatalf("migrations %d %v", len(ms), err)
	}
	if _, err := s.Pool.Exec(ctx, `UPDATE schema_migrations SET name = 'evals' WHERE version = 21`); err != nil {
		t.Fatal(err)
	}
	check := func(when string) {
		t.Helper()
		n, err := store.Migrate(ctx, s.Pool)
		if err == nil || n != 0 {
			t.Fatalf("%s: migrate applied %d, err %v; want a refusal", when, n, err)
		}
		for _, want := range []string{"0021_evals", "0021_" + ms[20].Name} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("%s: error %q does not name %s", when, err, want)
			}
		}
	}
	check("at the same version")
	// Behind: the later migrations are not recorded (nor applied again).
	if _, err := s.Pool.Exec(ctx, `DELETE FROM schema_migrations WHERE version > 21`); err != nil {
		t.Fatal(err)
	}
	check("behind")
	// A gap in what the database recorded is refused too.
	if _, err := s.Pool.Exec(ctx, `UPDATE schema_migrations SET name = $1 WHERE version = 21`, ms[20].Name); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Pool.Exec(ctx, `DELETE FROM schema_migrations WHERE version = 20`); err != nil {
		t.Fatal(err)
	}
	if _, err := store.Migrate(ctx, s.Pool); err == nil || !strings.Contains(err.Error(), "0020_"+ms[19].Name) {
		t.Fatalf("a gap at 0020: %v", err)
	}
}
