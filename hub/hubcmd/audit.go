package hubcmd

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"sync"
	"time"
)

// AuditFile is the audit log's name in the hub's directory.
const AuditFile = "commands.audit.jsonl"

// The events of an audit line.
const (
	EventRefused  = "refused"
	EventStarted  = "started"
	EventFinished = "finished"
)

// AuditLine is one line of the hub's audit log: who asked, what, and what came of it.
type AuditLine struct {
	Time  time.Time `json:"time"`
	Event string    `json:"event"`
	// WorkflowID and RunID are Temporal's, not the request's.
	WorkflowID   string   `json:"workflow_id,omitempty"`
	RunID        string   `json:"run_id,omitempty"`
	WorkflowType string   `json:"workflow_type,omitempty"`
	Account      string   `json:"account,omitempty"`
	AskedBy      string   `json:"asked_by,omitempty"`
	Command      string   `json:"command"`
	Path         string   `json:"path,omitempty"`
	Args         []string `json:"args,omitempty"`
	ExitCode     *int     `json:"exit_code,omitempty"`
	BytesOut     int64    `json:"bytes_out,omitempty"`
	Truncated    bool     `json:"truncated,omitempty"`
	TimedOut     bool     `json:"timed_out,omitempty"`
	Cancelled    bool     `json:"cancelled,omitempty"`
	DurationMS   int64    `json:"duration_ms,omitempty"`
	Refused      string   `json:"refused,omitempty"`
	Error        string   `json:"error,omitempty"`
}

// DefaultAuditMaxBytes is the size past which the audit log is rotated.
const DefaultAuditMaxBytes = 64 << 20

// Audit appends lines to the hub's audit log, a JSONL file opened for
// append only (0600). Past MaxBytes the file is moved to path.1 (the older
// ones shifting up to path.5, the oldest dropped) and a new one started, so
// requests cannot fill the disk.
type Audit struct {
	path string
	// MaxBytes is the rotation size; zero means DefaultAuditMaxBytes.
	MaxBytes int64
	mu       sync.Mutex
}

// NewAudit returns the audit log at path; the file is created at the first line.
func NewAudit(path string) *Audit { return &Audit{path: path} }

// Path is the log's file.
func (a *Audit) Path() string { return a.path }

// Append writes one line and syncs it. A command runs only once its
// started line is on disk.
func (a *Audit) Append(l AuditLine) error {
	if l.Time.IsZero() {
		l.Time = time.Now().UTC()
	}
	l.Command = trunc(l.Command, 64)
	l.Args = truncArgs(l.Args)
	l.AskedBy, l.Refused, l.Error = trunc(l.AskedBy, 200), trunc(l.Refused, 1000), trunc(l.Error, 1000)
	b, err := json.Marshal(l)
	if err != nil {
		return err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	limit := a.MaxBytes
	if limit <= 0 {
		limit = DefaultAuditMaxBytes
	}
	if fi, err := os.Stat(a.path); err == nil && fi.Size()+int64(len(b)) >= limit {
		if err := a.rotate(); err != nil {
			return fmt.Errorf("audit log %s: rotate: %w", a.path, err)
		}
	}
	f, err := os.OpenFile(a.path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("audit log %s: %w", a.path, err)
	}
	if _, err := f.Write(append(b, '\n')); err != nil {
		f.Close()
		return fmt.Errorf("audit log %s: %w", a.path, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("audit log %s: %w", a.path, err)
	}
	return f.Close()
}

// AuditGenerations is how many full logs are kept beside the current one
// (path.1, newest, to path.5), so that a flood of refused requests does not
// rotate the record of a run away at once.
const AuditGenerations = 5

// rotate shifts path.N to path.N+1, dropping the oldest, and path to path.1.
func (a *Audit) rotate() error {
	for g := AuditGenerations; g > 1; g-- {
		err := os.Rename(fmt.Sprintf("%s.%d", a.path, g-1), fmt.Sprintf("%s.%d", a.path, g))
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	return os.Rename(a.path, a.path+".1")
}

// tailBytes is how much of the log's end Recent reads.
const tailBytes = 1 << 20

// Recent returns up to n of the log's last lines, oldest first; lines that
// do not decode are skipped. A missing log has none.
func Recent(path string, n int) ([]AuditLine, error) {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	off := max(fi.Size()-tailBytes, 0)
	b, err := io.ReadAll(io.NewSectionReader(f, off, fi.Size()-off))
	if err != nil {
		return nil, err
	}
	if off > 0 {
		// The first line may be cut.
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			b = b[i+1:]
		}
	}
	var out []AuditLine
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 64<<10), tailBytes)
	for sc.Scan() {
		var l AuditLine
		if json.Unmarshal(sc.Bytes(), &l) == nil {
			out = append(out, l)
		}
	}
	if len(out) > n {
		out = out[len(out)-n:]
	}
	return out, sc.Err()
}
