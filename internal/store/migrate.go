package store

import (
	"context"
	"embed"
	"fmt"
	"io/fs"
	"sort"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

//go:embed migrations/*.sql
var migrationFiles embed.FS

// Migration is one numbered schema change.
type Migration struct {
	Version int
	Name    string
	SQL     string
}

// Migrations returns the embedded migrations in version order. File names are
// NNNN_name.sql; a gap or a duplicate number is a build defect caught by tests.
func Migrations() ([]Migration, error) {
	entries, err := fs.ReadDir(migrationFiles, "migrations")
	if err != nil {
		return nil, err
	}
	var ms []Migration
	for _, e := range entries {
		num, name, ok := strings.Cut(strings.TrimSuffix(e.Name(), ".sql"), "_")
		if !ok {
			return nil, fmt.Errorf("migration %s: name must be NNNN_name.sql", e.Name())
		}
		v, err := strconv.Atoi(num)
		if err != nil {
			return nil, fmt.Errorf("migration %s: %w", e.Name(), err)
		}
		body, err := migrationFiles.ReadFile("migrations/" + e.Name())
		if err != nil {
			return nil, err
		}
		ms = append(ms, Migration{Version: v, Name: name, SQL: string(body)})
	}
	sort.Slice(ms, func(i, j int) bool { return ms[i].Version < ms[j].Version })
	for i, m := range ms {
		if m.Version != i+1 {
			return nil, fmt.Errorf("migration %04d_%s: expected version %d", m.Version, m.Name, i+1)
		}
	}
	return ms, nil
}

// migrateLockID serialises concurrent `si` processes migrating one database.
const migrateLockID = 0x5349_4d45_5348 // "SIMESH"

// Migrate applies every embedded migration the database lacks, each in its own
// transaction, and returns how many it applied.
func Migrate(ctx context.Context, pool *pgxpool.Pool) (int, error) {
	ms, err := Migrations()
	if err != nil {
		return 0, err
	}
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return 0, err
	}
	defer conn.Release()
	if _, err := conn.Exec(ctx, `SELECT pg_advisory_lock($1)`, migrateLockID); err != nil {
		return 0, err
	}
	defer func() { _, _ = conn.Exec(context.Background(), `SELECT pg_advisory_unlock($1)`, migrateLockID) }()
	if _, err := conn.Exec(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
		version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())`); err != nil {
		return 0, err
	}
	var current int
	if err := conn.QueryRow(ctx, `SELECT coalesce(max(version), 0) FROM schema_migrations`).Scan(&current); err != nil {
		return 0, err
	}
	if current > len(ms) {
		return 0, fmt.Errorf("database schema is at version %d, newer than this binary's %d: upgrade si", current, len(ms))
	}
	if err := checkApplied(ctx, conn, ms, current); err != nil {
		return 0, err
	}
	applied := 0
	for _, m := range ms[current:] {
		err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, m.SQL); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, `INSERT INTO schema_migrations (version, name) VALUES ($1, $2)`, m.Version, m.Name)
			return err
		})
		if err != nil {
			return applied, fmt.Errorf("migration %04d_%s: %w", m.Version, m.Name, err)
		}
		applied++
	}
	return applied, nil
}

// checkApplied refuses a database whose recorded migrations up to current
// are not this binary's: one recorded under another name (two trees
// numbered different changes alike), or one missing below the highest.
// Applying on top of either would run changes against a schema they were
// not written for.
func checkApplied(ctx context.Context, conn *pgxpool.Conn, ms []Migration, current int) error {
	rows, err := conn.Query(ctx, `SELECT version, name FROM schema_migrations WHERE version <= $1 ORDER BY version`, current)
	if err != nil {
		return err
	}
	recorded := make(map[int]string, current)
	for rows.Next() {
		var v int
		var name string
		if err := rows.Scan(&v, &name); err != nil {
			rows.Close()
			return err
		}
		recorded[v] = name
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	for _, m := range ms[:current] {
		name, ok := recorded[m.Version]
		switch {
		case !ok:
			return fmt.Errorf("database schema records migrations up to %d but not %04d_%s: it was not migrated by si; restore it or migrate it by hand", current, m.Version, m.Name)
		case name != m.Name:
			return fmt.Errorf("database recorded migration %04d_%s where this binary's is %04d_%s: the database was migrated by another build; run the build that migrated it, or one whose migrations match", m.Version, name, m.Version, m.Name)
		}
	}
	return nil
}
