package hubcmd

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"
)

// Outcome is what one run of an admitted command did.
type Outcome struct {
	ExitCode int `json:"exit_code"`
	// Stdout and Stderr are what was kept of each, ending in a marker when
	// truncated.
	Stdout []byte `json:"stdout,omitempty"`
	Stderr []byte `json:"stderr,omitempty"`
	// BytesOut counts every byte the command wrote, kept or not.
	BytesOut  int64 `json:"bytes_out"`
	Truncated bool  `json:"truncated,omitempty"`
	// TimedOut: the command outlived its timeout and its process group was killed.
	TimedOut bool `json:"timed_out,omitempty"`
	// Cancelled: the request was cancelled while the command ran, and its
	// process group was killed.
	Cancelled bool          `json:"cancelled,omitempty"`
	Duration  time.Duration `json:"duration"`
}

// TruncatedMarker ends a stream cut at the output bound.
const TruncatedMarker = "\n[output truncated by the hub: limit reached]\n"

// killGrace is how long Wait waits for the pipes after the process group
// was killed (a descendant that left the group may hold them open).
const killGrace = 2 * time.Second

// Run runs e with args (admitted by e) until it exits, its timeout (at
// most limit, when limit > 0) passes, or ctx ends (the request cancelled);
// at either of the last two its whole process group is killed.
func Run(ctx context.Context, e Entry, args []string, limit time.Duration) (Outcome, error) {
	timeout := e.EffectiveTimeout()
	if limit > 0 && limit < timeout {
		timeout = limit
	}
	max := e.MaxOutputBytes
	if max <= 0 {
		max = DefaultOutputBytes
	}
	cmd := exec.Command(e.Path, args...)
	switch {
	case len(e.argv) == 1:
		// The file checked, not whatever the link names by now (argv[0]
		// stays Path).
		cmd.Path = e.argv[0]
	case len(e.argv) > 1:
		// A script: its checked interpreter, on its resolved path.
		cmd.Path, cmd.Args = e.argv[0], append(slices.Clone(e.argv), args...)
	}
	cmd.Env = environ(e.Env)
	cmd.Dir = e.Dir
	if cmd.Dir == "" {
		cmd.Dir = "/"
	}
	out := &bounded{left: max}
	cmd.Stdout, cmd.Stderr = out.stream(0), out.stream(1)
	cmd.WaitDelay = killGrace
	ownGroup(cmd)
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return Outcome{ExitCode: -1}, fmt.Errorf("start %s: %w", e.Path, err)
	}
	var timedOut, cancelled atomic.Bool
	done, watched := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(watched)
		t := time.NewTimer(timeout)
		defer t.Stop()
		select {
		case <-done:
			return
		case <-t.C:
			timedOut.Store(true)
		case <-ctx.Done():
			cancelled.Store(true)
		}
		killGroup(cmd)
	}()
	err := cmd.Wait()
	close(done)
	<-watched
	o := Outcome{Duration: time.Since(start), TimedOut: timedOut.Load(), Cancelled: cancelled.Load()}
	o.Stdout, o.Stderr, o.BytesOut, o.Truncated = out.result()
	o.ExitCode = -1
	if cmd.ProcessState != nil {
		o.ExitCode = cmd.ProcessState.ExitCode()
	}
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) && !errors.Is(err, exec.ErrWaitDelay) {
		return o, err
	}
	return o, nil
}

func environ(env map[string]string) []string {
	// An empty, non-nil slice: exec passes no variable at all.
	out := make([]string, 0, len(env))
	for k, v := range env {
		out = append(out, k+"="+v)
	}
	sort.Strings(out)
	return out
}

// bounded keeps the first left bytes written to its streams, together,
// and counts the rest.
type bounded struct {
	mu        sync.Mutex
	left      int
	buf       [2][]byte
	total     int64
	truncated [2]bool
}

type boundedStream struct {
	b *bounded
	i int
}

func (b *bounded) stream(i int) *boundedStream { return &boundedStream{b, i} }

func (s *boundedStream) Write(p []byte) (int, error) {
	b := s.b
	b.mu.Lock()
	defer b.mu.Unlock()
	b.total += int64(len(p))
	keep := min(len(p), b.left)
	b.buf[s.i] = append(b.buf[s.i], p[:keep]...)
	b.left -= keep
	if keep < len(p) {
		b.truncated[s.i] = true
	}
	return len(p), nil
}

func (b *bounded) result() (stdout, stderr []byte, total int64, truncated bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for i := range b.buf {
		if b.truncated[i] {
			b.buf[i] = append(b.buf[i], TruncatedMarker...)
			truncated = true
		}
	}
	return b.buf[0], b.buf[1], b.total, truncated
}
