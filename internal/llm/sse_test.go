package llm

import (
	"errors"
	"io"
	"strings"
	"testing"
)

func TestSSEReader(t *testing.T) {
	in := ": keep-alive\r\n\r\ndata: {\"a\":1}\r\n\r\nevent: error\ndata: line1\ndata:line2\nid: 7\nretry: 10\n\n\n\ndata: last"
	r := NewSSEReader(strings.NewReader(in))
	want := []Event{{Data: []byte(`{"a":1}`)}, {Type: "error", Data: []byte("line1\nline2")}, {Data: []byte("last")}}
	for i, w := range want {
		ev, err := r.Next()
		if err != nil || ev.Type != w.Type || string(ev.Data) != string(w.Data) {
			t.Fatalf("event %d: %+v %v, want %+v", i, ev, err, w)
		}
	}
	if _, err := r.Next(); !errors.Is(err, io.EOF) {
		t.Fatalf("after the last event: %v", err)
	}
}

func TestSSEReaderBounds(t *testing.T) {
	t.Run("a line over MaxEventLine", func(t *testing.T) {
		r := NewSSEReader(strings.NewReader("data: " + strings.Repeat("x", MaxEventLine+10) + "\n\n"))
		if _, err := r.Next(); !errors.Is(err, ErrStreamTooLarge) {
			t.Fatalf("%v", err)
		}
	})
	t.Run("a stream over MaxBytes", func(t *testing.T) {
		r := NewSSEReader(strings.NewReader(strings.Repeat("data: {}\n\n", 1000)))
		r.MaxBytes = 5000
		var err error
		for n := 0; err == nil; n++ {
			_, err = r.Next()
			if n > 1000 {
				t.Fatal("no bound")
			}
		}
		if !errors.Is(err, ErrStreamTooLarge) {
			t.Fatalf("%v", err)
		}
	})
	t.Run("an endless comment", func(t *testing.T) {
		r := NewSSEReader(io.LimitReader(zeros{}, 3*MaxEventLine))
		if _, err := r.Next(); !errors.Is(err, ErrStreamTooLarge) {
			t.Fatalf("%v", err)
		}
	})
	t.Run("cut inside an event", func(t *testing.T) {
		r := NewSSEReader(strings.NewReader("event: x\n"))
		if _, err := r.Next(); !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Fatalf("%v", err)
		}
	})
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = ':'
	}
	return len(p), nil
}

func TestReadStreamCut(t *testing.T) {
	_, err := ReadStream(strings.NewReader("data: {\"choices\":[{\"delta\":{\"content\":\"{\\\"a\"}}]}\n\n"), nil)
	if !errors.Is(err, ErrStreamCut) {
		t.Fatalf("%v", err)
	}
	if _, err := ReadStream(strings.NewReader("data: not json\n\n"), nil); err == nil {
		t.Fatal("accepted a chunk that is not JSON")
	}
	if _, err := ReadStream(strings.NewReader("event: error\ndata: {\"error\":{\"message\":\"overloaded\",\"code\":503}}\n\n"), nil); err == nil ||
		!strings.Contains(err.Error(), "overloaded") {
		t.Fatalf("error event: %v", err)
	}
}

// FuzzReadStream feeds arbitrary bytes to the stream decoder: it must not
// panic, must stay within its bounds, and what it returns must come from
// the stream.
func FuzzReadStream(f *testing.F) {
	for _, s := range []string{
		"data: [DONE]\n\n",
		"data: {\"choices\":[{\"delta\":{\"content\":\"hi\"},\"finish_reason\":\"stop\"}],\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":1}}\n\ndata: [DONE]\n\n",
		"event: error\ndata: {\"error\":{\"message\":\"x\",\"code\":500}}\n\n",
		": c\r\n\r\ndata: {\"choices\":[]}\r\n\r\n",
		"data: {\"error\":null,\"choices\":[{\"delta\":{\"reasoning_content\":\"r\"},\"finish_reason\":null}]}\n\n",
		"data:", "\n\n\n", "data: {\n", "event:\ndata: \xff\n\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		chunks := 0
		out, err := ReadStream(strings.NewReader(string(b)), func() { chunks++ })
		if len(out.Text)+len(out.Reasoning) > len(b) {
			t.Fatalf("returned %d bytes from a %d-byte stream", len(out.Text)+len(out.Reasoning), len(b))
		}
		if err == nil && chunks < out.Chunks {
			t.Fatalf("%d chunks counted, %d reported", out.Chunks, chunks)
		}
	})
}
