package store

import (
	"context"
	"errors"
	"time"

	"github.com/jackc/pgx/v5"
)

// HubCommand is one row of the cloud's audit of commands asked of hubs.
type HubCommand struct {
	ID        string   `json:"id"`
	Account   string   `json:"account"`
	Device    string   `json:"device"`
	AskedBy   string   `json:"asked_by"`
	Command   string   `json:"command"`
	Args      []string `json:"args"`
	ExitCode  *int     `json:"exit_code,omitempty"`
	BytesOut  int64    `json:"bytes_out"`
	Truncated bool     `json:"truncated,omitempty"`
	TimedOut  bool     `json:"timed_out,omitempty"`
	// Cancelled: the request was cancelled, before the hub ran it (Error
	// says so) or while it ran (the hub killed it; ExitCode is -1).
	Cancelled bool   `json:"cancelled,omitempty"`
	Refused   string `json:"refused,omitempty"`
	// RefusedBy is "cloud" or "hub" when Refused is set.
	RefusedBy string `json:"refused_by,omitempty"`
	// Error says why the hub gave no answer (offline, or lost mid-run).
	Error      string     `json:"error,omitempty"`
	StartedAt  time.Time  `json:"started_at"`
	FinishedAt *time.Time `json:"finished_at,omitempty"`
}

// The values of HubCommand.RefusedBy.
const (
	RefusedByCloud = "cloud"
	RefusedByHub   = "hub"
)

// AskHubCommand records a request (c.ID is the workflow's id); a second
// call with the same id keeps the first row, so a retried activity records
// it once. A request refused already (c.Refused set) is finished at once.
func (s *Store) AskHubCommand(ctx context.Context, c HubCommand) error {
	if c.Args == nil {
		c.Args = []string{}
	}
	_, err := s.Pool.Exec(ctx, `INSERT INTO hub_commands (id, account, device, asked_by, command, args, refused, refused_by, finished_at)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, CASE WHEN $7 = '' THEN NULL ELSE now() END)
		ON CONFLICT (id) DO NOTHING`,
		c.ID, c.Account, c.Device, c.AskedBy, c.Command, c.Args, c.Refused, c.RefusedBy)
	return err
}

// FinishHubCommand records the outcome of the request id. A row finished
// already keeps its outcome.
func (s *Store) FinishHubCommand(ctx context.Context, c HubCommand) error {
	_, err := s.Pool.Exec(ctx, `UPDATE hub_commands SET exit_code = $2, bytes_out = $3, truncated = $4, timed_out = $5,
		refused = $6, refused_by = $7, error = $8, cancelled = $9, finished_at = now() WHERE id = $1 AND finished_at IS NULL`,
		c.ID, c.ExitCode, c.BytesOut, c.Truncated, c.TimedOut, c.Refused, c.RefusedBy, c.Error, c.Cancelled)
	return err
}

// HubCommandByID returns one request's row.
func (s *Store) HubCommandByID(ctx context.Context, id string) (HubCommand, error) {
	rows, err := s.Pool.Query(ctx, hubCommandSelect+` WHERE id = $1`, id)
	if err != nil {
		return HubCommand{}, err
	}
	cs, err := scanHubCommands(rows)
	if err != nil {
		return HubCommand{}, err
	}
	if len(cs) == 0 {
		return HubCommand{}, ErrNotFound
	}
	return cs[0], nil
}

// HubCommands returns the latest limit requests asked of device, newest first.
func (s *Store) HubCommands(ctx context.Context, device string, limit int) ([]HubCommand, error) {
	rows, err := s.Pool.Query(ctx, hubCommandSelect+` WHERE device = $1 ORDER BY started_at DESC, id LIMIT $2`, device, limit)
	if err != nil {
		return nil, err
	}
	return scanHubCommands(rows)
}

const hubCommandSelect = `SELECT id, account, device, asked_by, command, args, exit_code, bytes_out, truncated, timed_out,
	cancelled, refused, refused_by, error, started_at, finished_at FROM hub_commands`

func scanHubCommands(rows pgx.Rows) ([]HubCommand, error) {
	defer rows.Close()
	var out []HubCommand
	for rows.Next() {
		var c HubCommand
		var exit *int32
		if err := rows.Scan(&c.ID, &c.Account, &c.Device, &c.AskedBy, &c.Command, &c.Args, &exit, &c.BytesOut, &c.Truncated,
			&c.TimedOut, &c.Cancelled, &c.Refused, &c.RefusedBy, &c.Error, &c.StartedAt, &c.FinishedAt); err != nil {
			return nil, err
		}
		if exit != nil {
			e := int(*exit)
			c.ExitCode = &e
		}
		out = append(out, c)
	}
	if err := rows.Err(); err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return nil, err
	}
	return out, nil
}

// DeviceOwner returns the account of deviceID and whether it is revoked.
func (s *Store) DeviceOwner(ctx context.Context, deviceID string) (account string, revoked bool, err error) {
	var at *time.Time
	err = s.Pool.QueryRow(ctx, `SELECT account, revoked_at FROM devices WHERE id = $1`, deviceID).Scan(&account, &at)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", false, ErrNotFound
	}
	return account, at != nil, err
}
