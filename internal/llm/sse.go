package llm

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
)

// MaxEventLine bounds one line of a server-sent event stream. A chunk of a
// chat completion is one JSON object of a few hundred bytes; a megabyte is
// far beyond any honest server.
const MaxEventLine = 1 << 20

// Event is one server-sent event: its type ("" for the default, message)
// and its data lines joined by "\n".
type Event struct {
	Type string
	Data []byte
}

// ErrStreamTooLarge is returned when a stream exceeds its line or total bound.
var ErrStreamTooLarge = errors.New("event stream exceeds its size bound")

// SSEReader decodes a text/event-stream (the WHATWG EventSource format that
// OpenAI-compatible servers stream completions in): "data:" lines, "event:"
// lines, ":" comments, blank lines ending an event, LF or CRLF endings. It
// reads at most MaxBytes in all (MaxResponseBytes when 0) and MaxEventLine a
// line.
type SSEReader struct {
	r *bufio.Reader
	// MaxBytes bounds the stream; 0 means MaxResponseBytes.
	MaxBytes int
	read     int
}

// NewSSEReader reads events from r.
func NewSSEReader(r io.Reader) *SSEReader {
	return &SSEReader{r: bufio.NewReaderSize(r, 64<<10)}
}

// Next returns the next event. At the end of the stream it returns io.EOF,
// or io.ErrUnexpectedEOF when the stream ended inside an event.
func (s *SSEReader) Next() (Event, error) {
	limit := s.MaxBytes
	if limit <= 0 {
		limit = MaxResponseBytes
	}
	var ev Event
	var data bytes.Buffer
	started, hasData := false, false
	for {
		line, err := s.line(limit)
		if err != nil {
			if errors.Is(err, io.EOF) {
				if hasData {
					// A final event without its blank line: servers that
					// close the connection right after the last chunk.
					ev.Data = data.Bytes()
					return ev, nil
				}
				if started {
					return Event{}, io.ErrUnexpectedEOF
				}
			}
			return Event{}, err
		}
		if len(line) == 0 {
			if hasData {
				ev.Data = data.Bytes()
				return ev, nil
			}
			// An event with no data is dispatched as nothing (the spec).
			ev, started = Event{}, false
			continue
		}
		started = true
		if line[0] == ':' {
			continue
		}
		field, value, _ := bytes.Cut(line, []byte{':'})
		value = bytes.TrimPrefix(value, []byte{' '})
		switch string(field) {
		case "data":
			if hasData {
				data.WriteByte('\n')
			}
			data.Write(value)
			hasData = true
		case "event":
			ev.Type = string(value)
		}
		// id and retry are of no use to a one-shot completion; other
		// fields are ignored, as the spec says.
	}
}

// line reads one line without its ending, bounded by MaxEventLine and the
// stream's total limit.
func (s *SSEReader) line(limit int) ([]byte, error) {
	var out []byte
	for {
		frag, err := s.r.ReadSlice('\n')
		s.read += len(frag)
		if s.read > limit {
			return nil, fmt.Errorf("%w (%d bytes)", ErrStreamTooLarge, limit)
		}
		if len(out)+len(frag) > MaxEventLine+2 {
			return nil, fmt.Errorf("%w: a line over %d bytes", ErrStreamTooLarge, MaxEventLine)
		}
		out = append(out, frag...)
		switch {
		case err == nil:
			out = bytes.TrimSuffix(bytes.TrimSuffix(out, []byte{'\n'}), []byte{'\r'})
			return out, nil
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		case errors.Is(err, io.EOF):
			if len(out) > 0 {
				return bytes.TrimSuffix(out, []byte{'\r'}), nil
			}
			return nil, io.EOF
		default:
			return nil, err
		}
	}
}
