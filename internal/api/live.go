package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"go.temporal.io/api/serviceerror"
	"go.temporal.io/sdk/client"

	"github.com/superinstance/mesh/internal/httpjson"
	"github.com/superinstance/mesh/workflows"
)

// Hub fans a consensus's progress out to everyone watching it. One watcher
// per consensus queries the workflow every Interval while anyone watches;
// each change is encoded once and handed to every viewer. A viewer holds at
// most one pending state: a slow one skips to the latest and never holds up
// the others.
type Hub struct {
	Temporal client.Client
	// Interval is how often a watched consensus is queried. Default 25ms.
	Interval time.Duration
	// Encode turns a state into the JSON viewers get, once per change.
	// Default json.Marshal of the state.
	Encode   func(ctx context.Context, id string, st workflows.ConsensusState) ([]byte, error)
	mu       sync.Mutex
	watchers map[string]*watcher
}

// Event is one state of a consensus as viewers receive it: the state's JSON
// and whether it is the last one.
type Event struct {
	Data []byte
	// Frame is the event as sent: "event: state\ndata: ...\n\n".
	Frame []byte
	Done  bool
	// State is the decoded state, for access checks.
	State workflows.ConsensusState
	// Err is set when the consensus could no longer be read.
	Err string
}

type viewer struct{ ch chan Event }

type watcher struct {
	viewers map[*viewer]struct{}
	last    *Event
	stop    context.CancelFunc
}

// offer hands ev to v, replacing a state v has not taken yet.
func (v *viewer) offer(ev Event) {
	select {
	case v.ch <- ev:
		return
	default:
	}
	select {
	case <-v.ch:
	default:
	}
	select {
	case v.ch <- ev:
	default:
	}
}

// Watch subscribes to a consensus. The channel first gets the latest state
// known, then each change, the final state last. Call cancel when done
// watching.
func (h *Hub) Watch(id string) (<-chan Event, func()) {
	v := &viewer{ch: make(chan Event, 1)}
	h.mu.Lock()
	if h.watchers == nil {
		h.watchers = map[string]*watcher{}
	}
	w := h.watchers[id]
	if w == nil {
		ctx, cancel := context.WithCancel(context.Background())
		w = &watcher{viewers: map[*viewer]struct{}{}, stop: cancel}
		h.watchers[id] = w
		go h.run(ctx, id, w)
	}
	w.viewers[v] = struct{}{}
	if w.last != nil {
		v.offer(*w.last)
	}
	h.mu.Unlock()
	return v.ch, func() {
		h.mu.Lock()
		defer h.mu.Unlock()
		if _, ok := w.viewers[v]; !ok {
			return
		}
		delete(w.viewers, v)
		if len(w.viewers) == 0 && h.watchers[id] == w {
			delete(h.watchers, id)
			w.stop()
		}
	}
}

// Latest returns the last state a watched consensus published, if any.
func (h *Hub) Latest(id string) (workflows.ConsensusState, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if w := h.watchers[id]; w != nil && w.last != nil {
		return w.last.State, true
	}
	return workflows.ConsensusState{}, false
}

// Watching reports how many consensus runs have viewers.
func (h *Hub) Watching() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.watchers)
}

// maxPollFailures is how many queries in a row may fail (a second's worth
// at the default interval) before the viewers are told the run is unreadable.
const maxPollFailures = 40

func (h *Hub) run(ctx context.Context, id string, w *watcher) {
	interval := h.Interval
	if interval <= 0 {
		interval = 25 * time.Millisecond
	}
	tick := time.NewTicker(interval)
	defer tick.Stop()
	var last Event
	failures := 0
	for {
		ev, err := h.poll(ctx, id)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			failures++
			var missing *serviceerror.NotFound
			if errors.As(err, &missing) && last.Data == nil {
				// No such run: said at once, not after a second of queries
				// (a run that exists but is not readable yet is retried).
				failures = maxPollFailures
			}
			ev = Event{Done: true, Err: "the consensus can no longer be read: " + err.Error()}
		} else {
			failures = 0
		}
		changed := ev.Done || ev.State.Steps != last.State.Steps || ev.State.Status != last.State.Status ||
			currentStep(ev.State) != currentStep(last.State)
		if err == nil && (last.Data == nil || changed) {
			if eerr := h.encode(ctx, id, &ev); eerr != nil {
				ev = Event{Done: true, Err: "the consensus can no longer be shown: " + eerr.Error()}
			}
		}
		if (err == nil || failures >= maxPollFailures) && (last.Data == nil || changed) {
			h.publish(id, w, ev)
			last = ev
		}
		if last.Done {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

func (h *Hub) poll(ctx context.Context, id string) (Event, error) {
	qctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	v, err := h.Temporal.QueryWorkflow(qctx, id, "", workflows.QueryState)
	var st workflows.ConsensusState
	if err == nil {
		err = v.Get(&st)
	}
	if err != nil {
		return Event{}, err
	}
	// Encoded only when it will be sent: the state changed or the run ended.
	return Event{State: st, Done: st.Status != workflows.StatusRunning}, nil
}

// encode fills in ev's JSON and frame.
func (h *Hub) encode(ctx context.Context, id string, ev *Event) error {
	st := ev.State
	var b []byte
	var err error
	if h.Encode != nil {
		b, err = h.Encode(ctx, id, st)
	} else {
		b, err = json.Marshal(st)
	}
	if err != nil {
		return err
	}
	frame := make([]byte, 0, len(b)+30)
	frame = append(append(append(frame, "event: state\ndata: "...), b...), "\n\n"...)
	ev.Data, ev.Frame = b, frame
	return nil
}

// currentStep names the step in progress, "" between steps.
func currentStep(st workflows.ConsensusState) string {
	if st.Current == nil {
		return ""
	}
	return st.Current.ID
}

func (h *Hub) publish(id string, w *watcher, ev Event) {
	h.mu.Lock()
	defer h.mu.Unlock()
	w.last = &ev
	for v := range w.viewers {
		v.offer(ev)
	}
	if ev.Done {
		if h.watchers[id] == w {
			delete(h.watchers, id)
		}
		w.stop()
	}
}

// firstWait bounds how long a viewer waits for a run's first state.
const firstWait = 10 * time.Second

// firstEvent is the first state a watch delivers, within firstWait; false
// if none came, or the run could not be read.
func firstEvent(ctx context.Context, ch <-chan Event) (Event, bool) {
	t := time.NewTimer(firstWait)
	defer t.Stop()
	select {
	case ev := <-ch:
		return ev, ev.Err == "" && ev.Data != nil
	case <-t.C:
	case <-ctx.Done():
	}
	return Event{}, false
}

// events streams a consensus's progress as Server-Sent Events: "state"
// events carrying the state's JSON, then "end" after the final one. A
// comment line every 15 seconds keeps idle connections open.
func (s *Server) events(w http.ResponseWriter, r *http.Request, c Caller) {
	id := r.PathValue("id")
	if !consensusID(id) {
		httpjson.Error(w, http.StatusNotFound, "not_found", "no consensus "+id)
		return
	}
	// A consensus others watch already is checked against the state they
	// share, not with a query of its own; the first viewers of a run wait
	// for its one watcher's first state, so that hundreds opening it at
	// once cost one query, not one each. Nothing is sent before the check.
	ch, cancel := s.Hub.Watch(id)
	defer func() { cancel() }()
	var first *Event
	st, ok := s.Hub.Latest(id)
	if !ok {
		if ev, got := firstEvent(r.Context(), ch); got {
			st, ok, first = ev.State, true, &ev
		}
	}
	if !ok || !s.maySee(r.Context(), c, st) {
		if st, ok = s.visibleState(w, r, c, id); !ok {
			return
		}
		if first == nil {
			// The watch may have given up on a run not readable yet.
			cancel()
			ch, cancel = s.Hub.Watch(id)
		}
	}
	fl, canFlush := w.(http.Flusher)
	if !canFlush {
		httpjson.Error(w, http.StatusInternalServerError, "unsupported", "this connection cannot stream")
		return
	}
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	send := func(event string, data []byte) error {
		if _, err := fmt.Fprintf(w, "event: %s\ndata: %s\n\n", event, data); err != nil {
			return err
		}
		fl.Flush()
		return nil
	}
	if st.Status != workflows.StatusRunning {
		b, _ := json.Marshal(s.viewFor(r.Context(), c, id, st))
		_ = send("state", b)
		_ = send("end", []byte(`{}`))
		return
	}
	own := ownRun(c, st)
	// deliver sends one state; done says the stream is over.
	deliver := func(ev Event) (done bool) {
		if ev.Err != "" {
			b, _ := json.Marshal(map[string]string{"code": "unavailable", "message": ev.Err})
			_ = send("error", b)
			return true
		}
		frame := ev.Frame
		if own && len(ev.Data) > 0 {
			frame = []byte("event: state\ndata: " + string(s.withTemporalURL(ev.Data, id)) + "\n\n")
		}
		if _, err := w.Write(frame); err != nil {
			return true
		}
		fl.Flush()
		if ev.Done {
			_ = send("end", []byte(`{}`))
			return true
		}
		return false
	}
	if first != nil && deliver(*first) {
		return
	}
	ping := time.NewTicker(15 * time.Second)
	defer ping.Stop()
	for {
		select {
		case <-r.Context().Done():
			return
		case <-ping.C:
			if _, err := fmt.Fprint(w, ": ping\n\n"); err != nil {
				return
			}
			fl.Flush()
		case ev := <-ch:
			if deliver(ev) {
				return
			}
		}
	}
}
