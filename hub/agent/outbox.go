package agent

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"
	_ "modernc.org/sqlite" // the "sqlite" database/sql driver, pure Go

	"github.com/superinstance/mesh/hub/wire"
	meshv1 "github.com/superinstance/mesh/proto/meshv1"
)

// OutboxFile is the name of the durable outbox in a hub's directory.
const OutboxFile = "outbox.db"

// Kinds of outbox entries.
const (
	kindEscalation = "escalation"
	kindUsage      = "usage"
)

// MaxOutboxEntries bounds what one hub keeps waiting for the link, per kind:
// past it new work is refused with a clear error rather than filling the disk.
const MaxOutboxEntries = 100_000

// ErrOutboxFull is returned when MaxOutboxEntries of a kind are waiting.
var ErrOutboxFull = errors.New("the hub's outbox is full: the link to the bridge has been down long enough that 100000 items wait; restore the link (si hub's log says why it is down) before sending more")

// Outbox keeps a hub's escalations and usage records on disk, in an SQLite
// file in the hub's directory, from before they are acknowledged to the
// local caller until the bridge has answered (an escalation's final
// response) or acked (a usage record). A hub restarted at any moment, even
// killed, finds them there and sends them again under the same ids, which
// the cloud runs and bills once.
//
// Every write is committed (fsync, WAL with synchronous=FULL) before the
// method returns. One process holds an outbox at a time.
type Outbox struct {
	db     *sql.DB
	path   string
	unlock func()
	// Loaded at open: what the last process left waiting.
	escalations []queuedEscalation
	usage       []queuedUsage
	// Skipped counts stored entries that did not decode at this open (a
	// damaged or crafted file): they move to the outbox_quarantine table,
	// kept for inspection, never sent and not counted against
	// MaxOutboxEntries.
	Skipped int
	// max is MaxOutboxEntries (smaller in tests).
	max int
}

type queuedEscalation struct {
	req *meshv1.EscalationRequest
	at  time.Time
}

type queuedUsage struct {
	rec *meshv1.UsageRecord
	at  time.Time
}

// OpenOutbox opens (creating it if needed, mode 0600) the outbox at path
// and reads what it holds. A second process opening the same outbox is
// refused: two hubs sending one queue would race each other.
func OpenOutbox(path string) (*Outbox, error) { return openOutbox(path, MaxOutboxEntries) }

func openOutbox(path string, max int) (*Outbox, error) {
	if path == "" {
		return nil, errors.New("outbox: a file path is required")
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("outbox: %w", err)
	}
	unlock, err := lockFile(path + ".lock")
	if err != nil {
		return nil, err
	}
	// Create the file 0600 before SQLite does (it would use 0644).
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		unlock()
		return nil, fmt.Errorf("outbox: %w", err)
	}
	_ = f.Close()
	db, err := sql.Open("sqlite", "file:"+path+"?_pragma=journal_mode(WAL)&_pragma=synchronous(FULL)&_pragma=busy_timeout(5000)")
	if err != nil {
		unlock()
		return nil, fmt.Errorf("outbox %s: %w", path, err)
	}
	db.SetMaxOpenConns(1)
	o := &Outbox{db: db, path: path, unlock: unlock, max: max}
	if err := o.init(); err != nil {
		_ = o.Close()
		return nil, fmt.Errorf("outbox %s: %w (move the file aside to start with an empty outbox)", path, err)
	}
	return o, nil
}

func (o *Outbox) init() error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := o.db.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS outbox (
		seq INTEGER PRIMARY KEY AUTOINCREMENT,
		kind TEXT NOT NULL,
		id TEXT NOT NULL,
		body BLOB NOT NULL,
		queued_unix_nano INTEGER NOT NULL,
		UNIQUE (kind, id))`); err != nil {
		return err
	}
	if _, err := o.db.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS outbox_quarantine (
		seq INTEGER PRIMARY KEY,
		kind TEXT NOT NULL,
		id TEXT NOT NULL,
		body BLOB NOT NULL,
		queued_unix_nano INTEGER NOT NULL,
		reason TEXT NOT NULL,
		quarantined_unix_nano INTEGER NOT NULL)`); err != nil {
		return err
	}
	bad, err := o.load(ctx)
	if err != nil {
		return err
	}
	return o.quarantine(ctx, bad)
}

// damaged is a stored entry that did not decode, and why.
type damaged struct {
	seq    int64
	reason string
}

// load reads what the file holds, at most MaxOutboxEntries of each kind,
// and returns the entries that do not decode. The rows cursor holds the
// only connection, so moving those waits until it is closed.
func (o *Outbox) load(ctx context.Context) ([]damaged, error) {
	rows, err := o.db.QueryContext(ctx, `SELECT seq, kind, id, body, queued_unix_nano FROM outbox ORDER BY seq`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var bad []damaged
	for rows.Next() {
		if len(o.escalations) >= o.max && len(o.usage) >= o.max {
			break // full either way; the rest waits for the next open
		}
		var (
			seq, at  int64
			kind, id string
			body     []byte
		)
		if err := rows.Scan(&seq, &kind, &id, &body, &at); err != nil {
			return nil, err
		}
		m, err := decodeEntry(kind, id, body)
		if err != nil {
			o.Skipped++
			bad = append(bad, damaged{seq, err.Error()})
			continue
		}
		switch r := m.(type) {
		case *meshv1.EscalationRequest:
			if len(o.escalations) < o.max {
				o.escalations = append(o.escalations, queuedEscalation{r, time.Unix(0, at)})
			}
		case *meshv1.UsageRecord:
			if len(o.usage) < o.max {
				o.usage = append(o.usage, queuedUsage{r, time.Unix(0, at)})
			}
		}
	}
	return bad, rows.Err()
}

// quarantineBatch is how many entries one statement moves (SQLite allows
// 32766 parameters; each entry takes three).
const quarantineBatch = 1000

// quarantine moves entries that do not decode out of the outbox, in one
// transaction, so that they no longer count against MaxOutboxEntries.
func (o *Outbox) quarantine(ctx context.Context, bad []damaged) error {
	if len(bad) == 0 {
		return nil
	}
	tx, err := o.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer func() { _ = tx.Rollback() }()
	now := time.Now().UnixNano()
	// In batches: one statement per row is minutes for a crafted file.
	for len(bad) > 0 {
		batch := bad[:min(len(bad), quarantineBatch)]
		bad = bad[len(batch):]
		reasons := make([]any, 0, 2*len(batch)+1)
		seqs := make([]any, 0, len(batch))
		var when, in strings.Builder
		for i, d := range batch {
			if i > 0 {
				in.WriteString(",")
			}
			in.WriteString("?")
			when.WriteString(" WHEN ? THEN ?")
			reasons = append(reasons, d.seq, d.reason)
			seqs = append(seqs, d.seq)
		}
		reasons = append(reasons, now)
		if _, err := tx.ExecContext(ctx, `INSERT OR REPLACE INTO outbox_quarantine (seq, kind, id, body, queued_unix_nano, reason, quarantined_unix_nano)
			SELECT seq, kind, id, body, queued_unix_nano, CASE seq`+when.String()+` END, ? FROM outbox WHERE seq IN (`+in.String()+`)`,
			append(reasons, seqs...)...); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM outbox WHERE seq IN (`+in.String()+`)`, seqs...); err != nil {
			return err
		}
	}
	return tx.Commit()
}

// decodeEntry decodes one stored entry: bounded in size, and valid as the
// bridge would check it, under the id it is stored by.
func decodeEntry(kind, id string, body []byte) (proto.Message, error) {
	if len(body) > wire.MaxMessageBytes {
		return nil, wire.ErrTooLarge
	}
	if len(id) == 0 || len(id) > wire.MaxIDLen {
		return nil, fmt.Errorf("outbox entry id of %d bytes", len(id))
	}
	switch kind {
	case kindEscalation:
		var r meshv1.EscalationRequest
		if err := proto.Unmarshal(body, &r); err != nil {
			return nil, err
		}
		if err := wire.ValidateEscalation(&r); err != nil {
			return nil, err
		}
		if r.GetRequestId() != id {
			return nil, errors.New("outbox escalation stored under another id")
		}
		return &r, nil
	case kindUsage:
		var u meshv1.UsageRecord
		if err := proto.Unmarshal(body, &u); err != nil {
			return nil, err
		}
		if err := wire.ValidateHub(&meshv1.HubMessage{Body: &meshv1.HubMessage_Usage{Usage: &u}}); err != nil {
			return nil, err
		}
		if u.GetEventId() != id {
			return nil, errors.New("outbox usage record stored under another id")
		}
		return &u, nil
	}
	return nil, fmt.Errorf("unknown outbox entry kind %q", kind)
}

// outboxError is a failure to write the outbox (the disk), not the request's fault.
type outboxError struct{ err error }

func (e *outboxError) Error() string { return e.err.Error() }
func (e *outboxError) Unwrap() error { return e.err }

// put stores an entry once; storing the same kind and id again keeps the first.
func (o *Outbox) put(kind, id string, m proto.Message, at time.Time) error {
	body, err := proto.Marshal(m)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var n int
	if err := o.db.QueryRowContext(ctx, `SELECT count(*) FROM outbox WHERE kind = ?`, kind).Scan(&n); err != nil {
		return &outboxError{fmt.Errorf("outbox %s: %w", o.path, err)}
	}
	if n >= o.max {
		return ErrOutboxFull
	}
	if _, err := o.db.ExecContext(ctx, `INSERT INTO outbox (kind, id, body, queued_unix_nano) VALUES (?, ?, ?, ?)
		ON CONFLICT (kind, id) DO NOTHING`, kind, id, body, at.UnixNano()); err != nil {
		return &outboxError{fmt.Errorf("outbox %s: %w", o.path, err)}
	}
	return nil
}

func (o *Outbox) remove(kind, id string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := o.db.ExecContext(ctx, `DELETE FROM outbox WHERE kind = ? AND id = ?`, kind, id); err != nil {
		return fmt.Errorf("outbox %s: %w", o.path, err)
	}
	return nil
}

// Path is the outbox's file.
func (o *Outbox) Path() string { return o.path }

// Close closes the file and releases it for another process.
func (o *Outbox) Close() error {
	err := o.db.Close()
	if o.unlock != nil {
		o.unlock()
		o.unlock = nil
	}
	return err
}
