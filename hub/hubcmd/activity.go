package hubcmd

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"time"

	"go.temporal.io/api/serviceerror"
	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/worker"

	"github.com/superinstance/mesh/internal/beat"
)

// ActivityRunCommand is the name Hub.RunCommand is registered under on a
// hub's worker (workers.RegisterHubCommands registers that method alone).
const ActivityRunCommand = "Hub.RunCommand"

// WorkflowType is the one workflow whose activities a hub runs commands for.
const WorkflowType = "HubCommandWorkflow"

// RunInput asks a hub to run one command of its allow-list.
type RunInput struct {
	// Account is the account the request is made for; the hub refuses any
	// but its own (the certificate's).
	Account string `json:"account"`
	// AskedBy says who asked ("operator alice", "consensus <id>").
	AskedBy string   `json:"asked_by"`
	Command string   `json:"command"`
	Args    []string `json:"args,omitempty"`
	// Timeout, when shorter than the allow-list's, bounds the run.
	Timeout time.Duration `json:"timeout,omitempty"`
}

// RunResult is the hub's answer. Refused is set, and nothing ran, when the
// hub refused the request.
type RunResult struct {
	Refused string `json:"refused,omitempty"`
	Outcome
}

// Hub holds what RunCommand needs; the zero AllowList path admits nothing.
type Hub struct {
	// Device and Account are the hub's own, from its certificate.
	Device, Account string
	// AllowList is the allow-list file, read at every request (so an edit
	// takes effect at once); missing means nothing runs.
	AllowList string
	// Audit receives every request, run or refused; required.
	Audit *Audit
	// MaxRunning bounds the commands running at once; past it a request
	// is refused. Default 4.
	MaxRunning int

	once    sync.Once
	running chan struct{}
}

// RunCommand runs one command of the hub's allow-list, for a
// HubCommandWorkflow of the hub's own account. Every request is audited
// before anything runs; a request that cannot be audited does not run.
func (h *Hub) RunCommand(ctx context.Context, in RunInput) (RunResult, error) {
	info := activity.GetInfo(ctx)
	c := Caller{WorkflowID: info.WorkflowExecution.ID, RunID: info.WorkflowExecution.RunID}
	if info.WorkflowType != nil {
		c.WorkflowType = info.WorkflowType.Name
	}
	// Heartbeats carry the workflow's cancellation to the hub: a request
	// cancelled while its command runs kills the command's process group.
	stop := beat.Every(ctx, HeartbeatEvery)
	res, err := h.handle(ctx, c, in)
	stop()
	if err != nil {
		activity.GetLogger(ctx).Warn("hub command not run", "error", err)
	}
	return res, err
}

// HeartbeatEvery is how often RunCommand heartbeats while it runs; each
// answer says whether the request was cancelled. The hub's worker sends
// them at most every node.HeartbeatThrottle (a second).
const HeartbeatEvery = time.Second

// Caller is the workflow a request comes from, as Temporal (not the
// request) says.
type Caller struct {
	WorkflowID, RunID, WorkflowType string
}

// handle is RunCommand for the caller c.
func (h *Hub) handle(ctx context.Context, c Caller, in RunInput) (RunResult, error) {
	line := AuditLine{WorkflowID: c.WorkflowID, RunID: c.RunID, WorkflowType: c.WorkflowType,
		Account: in.Account, AskedBy: in.AskedBy, Command: in.Command, Args: in.Args}
	refuse := func(why string) (RunResult, error) {
		line.Event, line.Refused = EventRefused, why
		if err := h.Audit.Append(line); err != nil {
			return RunResult{}, err
		}
		return RunResult{Refused: why, Outcome: Outcome{ExitCode: -1}}, nil
	}
	if line.WorkflowType != WorkflowType {
		return refuse(fmt.Sprintf("workflow %q may not run commands on a hub (only %s)", trunc(line.WorkflowType, 64), WorkflowType))
	}
	if in.Account != h.Account {
		return refuse(fmt.Sprintf("account %q is not this hub's", trunc(in.Account, 64)))
	}
	if err := ValidRequest(in.Command, in.Args); err != nil {
		return refuse(err.Error())
	}
	if in.Timeout < 0 {
		return refuse("a negative timeout")
	}
	if h.AllowList == "" {
		return refuse("no allow-list is configured on this hub: nothing runs")
	}
	l, err := Load(h.AllowList)
	if err != nil {
		return refuse(err.Error())
	}
	e, err := l.Admit(in.Command, in.Args)
	if err != nil {
		return refuse(err.Error())
	}
	if e.argv, err = checkExecutable(e.Path); err != nil {
		return refuse(err.Error())
	}
	h.once.Do(func() { h.running = make(chan struct{}, cmp.Or(h.MaxRunning, 4)) })
	select {
	case h.running <- struct{}{}:
		defer func() { <-h.running }()
	default:
		return refuse(fmt.Sprintf("%d commands are running on this hub already: ask again later", cap(h.running)))
	}
	line.Event, line.Path = EventStarted, e.Path
	if err := h.Audit.Append(line); err != nil {
		return RunResult{}, fmt.Errorf("not run: %w", err)
	}
	runCtx, ended := commandContext(ctx)
	o, runErr := Run(runCtx, e, in.Args, in.Timeout)
	ended()
	line.Event, line.Time = EventFinished, time.Time{}
	code := o.ExitCode
	line.ExitCode, line.BytesOut, line.Truncated, line.TimedOut, line.DurationMS = &code, o.BytesOut, o.Truncated, o.TimedOut, o.Duration.Milliseconds()
	if o.Cancelled {
		// Killed because the request ended: cancelled by the asker, or
		// the hub's worker stopping.
		if asked := temporal.IsCanceledError(context.Cause(ctx)); asked {
			line.Cancelled = true
		} else {
			o.Cancelled = false
			line.Error = "killed: its request ended on the hub (" + trunc(context.Cause(ctx).Error(), 200) + ")"
			o.Stderr = append(o.Stderr, "\n[hub: "+line.Error+"]\n"...)
		}
	}
	if runErr != nil {
		line.Error = runErr.Error()
	}
	auditErr := h.Audit.Append(line)
	if runErr != nil {
		// It could not start (the path is gone, say): an answer, not a retry.
		return RunResult{Refused: runErr.Error(), Outcome: o}, nil
	}
	if auditErr != nil {
		// It ran; the answer still goes back (the cloud records it), with the hub's failure in it.
		o.Stderr = append(o.Stderr, "\n[hub: the audit log could not record this run's end: "+trunc(auditErr.Error(), 200)+"]\n"...)
	}
	return RunResult{Outcome: o}, nil
}

// commandContext is the context a command runs in: it ends, and the
// command is killed, when ctx ends for good: the request cancelled (the
// cancellation a heartbeat's answer brings), gone on the server, or the
// hub's worker stopping. It does not end when ctx ends only because a
// heartbeat could not reach the server (the link to the bridge down for a
// second or more): the SDK ends an activity's context then too, and a
// command is not killed by a blip of the link; it runs on to its end or
// its timeout, though a cancellation can no longer reach it. ended
// releases what commandContext holds.
func commandContext(ctx context.Context) (_ context.Context, ended func()) {
	run, stop := context.WithCancelCause(context.WithoutCancel(ctx))
	done := make(chan struct{})
	go func() {
		select {
		case <-ctx.Done():
			if ends(ctx) {
				stop(context.Cause(ctx))
			}
		case <-done:
		}
	}()
	return run, func() { close(done); stop(nil) }
}

// ends says whether an ended activity context ends its request: a
// cancellation, the activity gone on the server (timed out, its workflow
// ended, its namespace gone), paused or reset there (a reset attempt runs
// again: this one must not run on beside it), its own deadline, the
// worker stopping, or its parent ending (a caller outside Temporal). A
// heartbeat's transient failure does not.
func ends(ctx context.Context) bool {
	cause := context.Cause(ctx)
	var (
		gone     *serviceerror.NotFound
		noNS     *serviceerror.NamespaceNotFound
		inactive *serviceerror.NamespaceNotActive
	)
	switch {
	case temporal.IsCanceledError(cause), errors.As(cause, &gone), errors.As(cause, &noNS), errors.As(cause, &inactive),
		errors.Is(cause, activity.ErrActivityPaused), errors.Is(cause, activity.ErrActivityReset),
		errors.Is(cause, worker.ErrWorkerShutdown), errors.Is(cause, context.Canceled):
		return true
	case errors.Is(cause, context.DeadlineExceeded):
		// Its own deadline, not a heartbeat call's.
		dl, ok := ctx.Deadline()
		return ok && !time.Now().Before(dl)
	}
	return false
}

// maxInterpreters is how many "#!" lines may lead from a command to the
// binary that runs it; no real program needs more.
const maxInterpreters = 4

// checkExecutable refuses a command file that others than root or the
// hub's own user could replace or change, and a script whose interpreter
// (its "#!" line's program, and that one's, to maxInterpreters) is such a
// file: whoever may change the interpreter runs what they like. It
// returns what to run: argv[0] is the file to execute and argv the
// arguments before the request's. A script is not handed to the kernel,
// which would follow its "#!" line's links again at exec time; its checked
// interpreter is run on it, with the kernel's arguments, every path in
// them resolved: [interpreter, its argument if any, script].
func checkExecutable(path string) (argv []string, err error) {
	real, err := checkFile(path, "command")
	if err != nil {
		return nil, err
	}
	argv = []string{real}
	for i := 0; ; i++ {
		interp, arg, err := interpreter(argv[0])
		if err != nil {
			return nil, fmt.Errorf("command %s: %w", path, err)
		}
		if interp == "" {
			return argv, nil
		}
		if i == maxInterpreters {
			return nil, fmt.Errorf("command %s: more than %d \"#!\" interpreters lead to its program", path, maxInterpreters)
		}
		if !filepath.IsAbs(interp) {
			return nil, fmt.Errorf("command %s: its interpreter %q is not an absolute path: nothing runs it", path, trunc(interp, 64))
		}
		resolved, err := checkFile(interp, "interpreter")
		if err != nil {
			return nil, fmt.Errorf("command %s: %w", path, err)
		}
		head := []string{resolved}
		if arg != "" {
			head = append(head, arg)
		}
		argv = append(head, argv...)
	}
}

// interpreter is the program a "#!" line at the start of file names and
// the one argument after it, or "" for a file without one. As the kernel
// does, it reads the file's first 256 bytes, splits the line at its first
// space or tab and trims spaces and tabs; a line longer than that, or one
// holding another control character, is refused rather than read
// otherwise than the kernel would.
func interpreter(file string) (interp, arg string, err error) {
	f, err := os.Open(file)
	if err != nil {
		return "", "", err
	}
	defer f.Close()
	var buf [256]byte
	n, err := io.ReadFull(f, buf[:])
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
		return "", "", err
	}
	line, ok := bytes.CutPrefix(buf[:n], []byte("#!"))
	if !ok {
		return "", "", nil
	}
	line, _, found := bytes.Cut(line, []byte("\n"))
	if !found && n == len(buf) {
		return "", "", fmt.Errorf("its \"#!\" line is longer than %d bytes", len(buf)-1)
	}
	for _, c := range line {
		if c < 0x20 && c != '\t' || c == 0x7f {
			return "", "", fmt.Errorf("its \"#!\" line holds the control character %#x", c)
		}
	}
	const blank = " \t"
	line = bytes.Trim(line, blank)
	if len(line) == 0 {
		return "", "", errors.New("its \"#!\" line names no interpreter")
	}
	if k := bytes.IndexAny(line, blank); k >= 0 {
		return string(line[:k]), string(bytes.TrimLeft(line[k:], blank)), nil
	}
	return string(line), "", nil
}

// checkFile refuses a file (what: a command or an interpreter) that
// others than root or the hub's own user could replace or change. Links are resolved first; the file and every
// directory above it must be owned by root or the hub's user and writable
// by their owner alone. A directory that others may write passes only
// when it is root's and sticky (as /tmp): there nobody may rename or
// remove another's entry.
func checkFile(path, what string) (string, error) {
	real, err := filepath.EvalSymlinks(path)
	if err == nil {
		real, err = filepath.Abs(real)
	}
	if err != nil {
		return "", fmt.Errorf("%s %s: %w", what, path, err)
	}
	fi, err := os.Lstat(real)
	if err != nil {
		return "", fmt.Errorf("%s %s: %w", what, path, err)
	}
	if !fi.Mode().IsRegular() || fi.Mode().Perm()&0o111 == 0 {
		return "", fmt.Errorf("%s %s is not an executable file", what, path)
	}
	if fi.Mode().Perm()&0o022 != 0 {
		return "", fmt.Errorf("%s %s is writable by others than its owner (mode %v): nothing runs it", what, path, fi.Mode().Perm())
	}
	if err := trustedOwner(what, path, real, fi); err != nil {
		return "", err
	}
	for dir := filepath.Dir(real); ; dir = filepath.Dir(dir) {
		di, err := os.Lstat(dir)
		if err != nil {
			return "", fmt.Errorf("%s %s: %w", what, path, err)
		}
		if err := trustedOwner(what, path, dir, di); err != nil {
			return "", err
		}
		uid, _ := fileOwner(di)
		sticky := di.Mode()&os.ModeSticky != 0 && uid == 0
		if di.Mode().Perm()&0o022 != 0 && !sticky {
			return "", fmt.Errorf("%s %s is in a directory others than its owner may write (%s, mode %v): nothing runs it", what, path, dir, di.Mode().Perm())
		}
		if parent := filepath.Dir(dir); parent == dir {
			break
		}
	}
	return real, nil
}

// trustedOwner refuses p (on the way to path, the command or an
// interpreter: what) unless root or the hub's own user owns it.
func trustedOwner(what, path, p string, fi os.FileInfo) error {
	uid, ok := fileOwner(fi)
	if !ok || uid == 0 || uid == os.Getuid() {
		return nil
	}
	return fmt.Errorf("%s %s: %s is owned by uid %d, neither root nor this hub's user (uid %d): nothing runs it", what, path, p, uid, os.Getuid())
}
