package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// LoRA states.
const (
	LoRARegistering = "registering"
	LoRAAvailable   = "available"
	LoRADeleting    = "deleting"
)

// LoRA is a registered adapter.
type LoRA struct {
	ID            string     `json:"id"`
	Owner         string     `json:"owner"`
	Project       string     `json:"project,omitempty"`
	Name          string     `json:"name"`
	BaseModel     string     `json:"base_model"`
	Rank          int        `json:"rank"`
	Alpha         float64    `json:"alpha"`
	TargetModules []string   `json:"target_modules"`
	Config        []byte     `json:"-"`
	Size          int64      `json:"size_bytes"`
	SHA256        string     `json:"sha256"`
	ObjectKey     string     `json:"-"`
	State         string     `json:"state"`
	CreatedAt     time.Time  `json:"created_at"`
	AvailableAt   *time.Time `json:"available_at,omitempty"`
	LastUsedAt    *time.Time `json:"last_used_at,omitempty"`
}

const loraColumns = `id, owner_id, coalesce(project_id, ''), name, base_model, rank, alpha, target_modules, config,
	size_bytes, sha256, object_key, state, created_at, available_at, last_used_at`

func scanLoRA(row pgx.Row) (LoRA, error) {
	var l LoRA
	err := row.Scan(&l.ID, &l.Owner, &l.Project, &l.Name, &l.BaseModel, &l.Rank, &l.Alpha, &l.TargetModules, &l.Config,
		&l.Size, &l.SHA256, &l.ObjectKey, &l.State, &l.CreatedAt, &l.AvailableAt, &l.LastUsedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return l, ErrNotFound
	}
	return l, err
}

// visible is the condition under which $caller may see a loras row: it owns
// it, or is a member of the adapter's project.
const visible = `(l.owner_id = $1 OR EXISTS (SELECT 1 FROM project_members m WHERE m.project_id = l.project_id AND m.account_id = $1))`

// RegisterLoRA inserts l (state registering) unless the owner already has an
// adapter with the same checksum; either way it returns the row and whether
// it was created. A project must be one the owner may write to.
func (s *Store) RegisterLoRA(ctx context.Context, l LoRA) (LoRA, bool, error) {
	if l.Project != "" {
		role, err := s.ClaimProject(ctx, l.Project, l.Owner)
		if err != nil {
			return LoRA{}, false, err
		}
		if !CanWrite(role) {
			return LoRA{}, false, fmt.Errorf("project %s: a %s cannot add adapters: %w", l.Project, role, ErrForbidden)
		}
	}
	var project *string
	if l.Project != "" {
		project = &l.Project
	}
	row := s.Pool.QueryRow(ctx, `INSERT INTO loras (id, owner_id, project_id, name, base_model, rank, alpha, target_modules, config, size_bytes, sha256, object_key, state)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, 'registering')
		ON CONFLICT (owner_id, sha256) DO NOTHING
		RETURNING `+loraColumns, l.ID, l.Owner, project, l.Name, l.BaseModel, l.Rank, l.Alpha, l.TargetModules, l.Config, l.Size, l.SHA256, l.ObjectKey)
	got, err := scanLoRA(row)
	if err == nil {
		return got, true, nil
	}
	if !errors.Is(err, ErrNotFound) {
		return got, false, err
	}
	got, err = s.LoRAByChecksum(ctx, l.Owner, l.SHA256)
	return got, false, err
}

// LoRAByID returns an adapter regardless of who asks (for the mesh's own
// workflows, after an access check).
func (s *Store) LoRAByID(ctx context.Context, id string) (LoRA, error) {
	return scanLoRA(s.Pool.QueryRow(ctx, `SELECT `+loraColumns+` FROM loras WHERE id = $1`, id))
}

// LoRAByChecksum returns the owner's adapter with these bytes.
func (s *Store) LoRAByChecksum(ctx context.Context, owner, sha256 string) (LoRA, error) {
	return scanLoRA(s.Pool.QueryRow(ctx, `SELECT `+loraColumns+` FROM loras WHERE owner_id = $1 AND sha256 = $2`, owner, sha256))
}

// LoRAFor returns the adapter if caller may see it, else ErrNotFound: an
// adapter that exists but is someone else's is indistinguishable from one
// that does not.
func (s *Store) LoRAFor(ctx context.Context, caller, id string) (LoRA, error) {
	return scanLoRA(s.Pool.QueryRow(ctx, `SELECT `+loraColumns+` FROM loras l WHERE l.id = $2 AND `+visible, caller, id))
}

// LoRAs lists the adapters caller may see, newest first.
func (s *Store) LoRAs(ctx context.Context, caller string) ([]LoRA, error) {
	return queryAll(ctx, s, scanLoRA, `SELECT `+loraColumns+` FROM loras l WHERE `+visible+` ORDER BY created_at DESC, id`, caller)
}

// CanDeleteLoRA says whether caller may remove the adapter: its owner, or an
// owner or editor of its project. An adapter caller cannot see is ErrNotFound.
func (s *Store) CanDeleteLoRA(ctx context.Context, caller, id string) (LoRA, error) {
	l, err := s.LoRAFor(ctx, caller, id)
	if err != nil || l.Owner == caller {
		return l, err
	}
	role, err := s.ProjectRole(ctx, l.Project, caller)
	if err != nil {
		return l, err
	}
	if !CanWrite(role) {
		return l, fmt.Errorf("adapter %s: a %s of project %s cannot remove it: %w", id, role, l.Project, ErrForbidden)
	}
	return l, nil
}

// SetLoRAState moves an adapter to state; available also stamps available_at.
func (s *Store) SetLoRAState(ctx context.Context, id, state string) error {
	tag, err := s.Pool.Exec(ctx, `UPDATE loras SET state = $2,
		available_at = CASE WHEN $2 = 'available' THEN coalesce(available_at, now()) ELSE available_at END WHERE id = $1`, id, state)
	if err == nil && tag.RowsAffected() == 0 {
		return ErrNotFound
	}
	return err
}

// TouchLoRA records that the adapter was used.
func (s *Store) TouchLoRA(ctx context.Context, id string) error {
	_, err := s.Pool.Exec(ctx, `UPDATE loras SET last_used_at = now() WHERE id = $1`, id)
	return err
}

// DeleteLoRA removes the registry row; deleting what is gone succeeds.
func (s *Store) DeleteLoRA(ctx context.Context, id string) error {
	_, err := s.Pool.Exec(ctx, `DELETE FROM loras WHERE id = $1`, id)
	return err
}
