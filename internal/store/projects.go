package store

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// Project roles, from most to least privileged.
const (
	RoleOwner  = "owner"
	RoleEditor = "editor"
	RoleViewer = "viewer"
)

// ErrForbidden: the caller can see the thing but their role does not allow the action.
var ErrForbidden = errors.New("forbidden")

// CanWrite reports whether role may change a project's contents.
func CanWrite(role string) bool { return role == RoleOwner || role == RoleEditor }

// ProjectRole returns account's role in project, or ErrNotFound when the
// project does not exist or the account is not a member (the two are not
// told apart).
func (s *Store) ProjectRole(ctx context.Context, project, account string) (string, error) {
	var role string
	err := s.Pool.QueryRow(ctx, `SELECT role FROM project_members WHERE project_id = $1 AND account_id = $2`, project, account).Scan(&role)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", ErrNotFound
	}
	return role, err
}

// DefaultProject is the project of runs that name none: each account's own
// scratch space, never owned, shared, invited to or handed over.
const DefaultProject = "default"

// ErrDefaultProject: the default project cannot be owned or shared.
var ErrDefaultProject = fmt.Errorf("the %s project is each account's own and cannot be shared: name a project of yours", DefaultProject)

// ClaimProject returns owner's role in project, creating the project, owned
// by owner, if it is new to the mesh. A project someone else owns is
// ErrNotFound unless owner is a member of it; so is a project without an
// owner, which is never adopted by whoever touches it first. The default
// project is ErrDefaultProject.
func (s *Store) ClaimProject(ctx context.Context, project, owner string) (role string, err error) {
	if err := ValidProjectID(project); err != nil {
		return "", err
	}
	if project == DefaultProject {
		return "", ErrDefaultProject
	}
	err = pgx.BeginFunc(ctx, s.Pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `INSERT INTO projects (id, owner_id) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING`, project, owner); err != nil {
			return err
		}
		var current *string
		if err := tx.QueryRow(ctx, `SELECT owner_id FROM projects WHERE id = $1 FOR UPDATE`, project).Scan(&current); err != nil {
			return err
		}
		if current != nil && *current == owner {
			role = RoleOwner
			_, err := tx.Exec(ctx, `INSERT INTO project_members (project_id, account_id, role) VALUES ($1, $2, 'owner')
				ON CONFLICT (project_id, account_id) DO UPDATE SET role = 'owner'`, project, owner)
			return err
		}
		err := tx.QueryRow(ctx, `SELECT role FROM project_members WHERE project_id = $1 AND account_id = $2`, project, owner).Scan(&role)
		if errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("project %s: %w", project, ErrNotFound)
		}
		return err
	})
	return role, err
}

// AddMember gives account role in project (replacing any role it had).
func (s *Store) AddMember(ctx context.Context, project, account, role string) error {
	_, err := s.Pool.Exec(ctx, `INSERT INTO project_members (project_id, account_id, role) VALUES ($1, $2, $3)
		ON CONFLICT (project_id, account_id) DO UPDATE SET role = EXCLUDED.role`, project, account, role)
	return err
}

// Membership is one project an account belongs to, and its role there.
type Membership struct {
	Project string `json:"project"`
	Role    string `json:"role"`
}

// Memberships lists the projects an account is a member of, by name, at
// most 200.
func (s *Store) Memberships(ctx context.Context, account string) ([]Membership, error) {
	return queryAll(ctx, s, func(row pgx.Row) (Membership, error) {
		var m Membership
		err := row.Scan(&m.Project, &m.Role)
		return m, err
	}, `SELECT project_id, role FROM project_members WHERE account_id = $1 ORDER BY project_id LIMIT 200`, account)
}
