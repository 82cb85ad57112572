package client

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"time"

	"github.com/superinstance/mesh/workflows"
)

// ConsensusRequest starts a run billed to the token's account (or the
// guest's host).
type ConsensusRequest struct {
	Prompt    string  `json:"prompt"`
	Project   string  `json:"project,omitempty"`
	MaxRounds int     `json:"max_rounds,omitempty"`
	Threshold float64 `json:"threshold,omitempty"`
	Placement string  `json:"placement,omitempty"`
	LoRA      string  `json:"lora,omitempty"`
	// MaxTokens bounds each agent call's completion; zero takes the mesh's default.
	MaxTokens int `json:"max_tokens,omitempty"`
	// Continue starts from this finished run (a failed one too).
	Continue string `json:"continue,omitempty"`
	// Strategy is debate (the default when empty), vote or single;
	// Samples and Temperature are a vote's k and sampling temperature.
	// Left empty they are not sent, so a request without them suits a mesh
	// of any version.
	Strategy    string   `json:"strategy,omitempty"`
	Samples     int      `json:"samples,omitempty"`
	Temperature *float64 `json:"temperature,omitempty"`
}

// Started says where a new run is.
type Started struct {
	WorkflowID string `json:"workflow_id"`
	StateURL   string `json:"state_url"`
	EventsURL  string `json:"events_url"`
	PageURL    string `json:"page_url"`
}

// StartConsensus starts a run.
func (c *Client) StartConsensus(ctx context.Context, r ConsensusRequest) (Started, error) {
	var s Started
	return s, c.do(ctx, "POST", "/v1/consensus", r, &s)
}

// Consensus reads a run's state once.
func (c *Client) Consensus(ctx context.Context, id string) (workflows.ConsensusState, error) {
	var st workflows.ConsensusState
	return st, c.do(ctx, "GET", "/v1/consensus/"+url.PathEscape(id), nil, &st)
}

// RunView is a run's state as GET /v1/consensus/{id} shows it, with what it
// has cost according to the ledger (credits included).
type RunView struct {
	workflows.ConsensusState
	CostMicros int64 `json:"cost_micros"`
}

// Run reads a run's state and cost once.
func (c *Client) Run(ctx context.Context, id string) (RunView, error) {
	var v RunView
	return v, c.do(ctx, "GET", "/v1/consensus/"+url.PathEscape(id), nil, &v)
}

// ErrStreamEnded says the event stream closed before the run's final state.
var ErrStreamEnded = errors.New("the event stream ended before the run did")

// Follow streams a run's states from its event stream, calling onState for
// each, and returns the final one. A stream cut before the end is opened
// again (a few times, with a short pause).
func (c *Client) Follow(ctx context.Context, id string, onState func(workflows.ConsensusState)) (workflows.ConsensusState, error) {
	var (
		last workflows.ConsensusState
		err  error
	)
	for attempt := range 5 {
		if attempt > 0 {
			select {
			case <-ctx.Done():
				return last, ctx.Err()
			case <-time.After(time.Duration(attempt) * 200 * time.Millisecond):
			}
		}
		var done bool
		done, err = c.follow(ctx, id, func(st workflows.ConsensusState) { last = st; onState(st) })
		if done || ctx.Err() != nil {
			return last, err
		}
		var ae *Error
		if errors.As(err, &ae) {
			return last, err // 404, 401: asking again will not help
		}
	}
	return last, err
}

func (c *Client) follow(ctx context.Context, id string, onState func(workflows.ConsensusState)) (done bool, err error) {
	req, err := c.request(ctx, "GET", "/v1/consensus/"+url.PathEscape(id)+"/events", nil)
	if err != nil {
		return true, err
	}
	req.Header.Set("Accept", "text/event-stream")
	resp, err := c.send(req)
	if err != nil {
		return false, err
	}
	defer resp.Body.Close()
	err = ReadEvents(resp.Body, func(ev Event) error {
		switch ev.Name {
		case "state":
			var st workflows.ConsensusState
			if err := json.Unmarshal(ev.Data, &st); err != nil {
				return fmt.Errorf("a state in the event stream is not valid: %w", err)
			}
			onState(st)
		case "end":
			done = true
			return io.EOF
		case "error":
			var e struct {
				Code    string `json:"code"`
				Message string `json:"message"`
			}
			_ = json.Unmarshal(ev.Data, &e)
			done = true
			return &Error{Status: 503, Code: e.Code, Message: e.Message}
		}
		return nil
	})
	if errors.Is(err, io.EOF) {
		err = nil
	}
	if err == nil && !done {
		err = ErrStreamEnded
	}
	return done, err
}

// Event is one Server-Sent Event.
type Event struct {
	Name string
	Data []byte
}

// MaxEventBytes bounds one event of a stream.
const MaxEventBytes = 8 << 20

// ErrEventTooLarge says an event passed MaxEventBytes.
var ErrEventTooLarge = errors.New("an event in the stream is larger than 8 MiB")

// ReadEvents decodes a text/event-stream, calling fn for each event until
// the stream ends or fn returns an error (returned as is). Comments and
// fields other than event and data are skipped; an event with no name is
// "message", as in browsers.
func ReadEvents(r io.Reader, fn func(Event) error) error {
	br := bufio.NewReaderSize(r, 64<<10)
	var (
		name string
		data []byte
		has  bool
	)
	for {
		line, err := readLine(br, MaxEventBytes-len(data))
		if err != nil {
			if errors.Is(err, io.EOF) {
				return nil // an unfinished event is dropped, as in browsers
			}
			return err
		}
		if len(line) == 0 {
			if has {
				if name == "" {
					name = "message"
				}
				if err := fn(Event{Name: name, Data: data}); err != nil {
					return err
				}
			}
			name, data, has = "", nil, false
			continue
		}
		if line[0] == ':' {
			continue
		}
		field, value, _ := bytes.Cut(line, []byte(":"))
		value = bytes.TrimPrefix(value, []byte(" "))
		switch string(field) {
		case "event":
			name, has = string(value), true
		case "data":
			if data != nil {
				data = append(data, '\n')
			}
			data = append(data, value...)
			if data == nil {
				data = []byte{}
			}
			has = true
		}
	}
}

// readLine reads one line without its ending (\n or \r\n), at most max bytes.
func readLine(br *bufio.Reader, max int) ([]byte, error) {
	var line []byte
	for {
		frag, err := br.ReadSlice('\n')
		if len(line)+len(frag) > max+2 {
			return nil, ErrEventTooLarge
		}
		line = append(line, frag...)
		if err == nil {
			break
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			continue
		}
		if len(line) > 0 && errors.Is(err, io.EOF) {
			break
		}
		return nil, err
	}
	line = bytes.TrimSuffix(line, []byte("\n"))
	line = bytes.TrimSuffix(line, []byte("\r"))
	return line, nil
}
