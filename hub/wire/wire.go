// Package wire frames protobuf messages on a stream (a uvarint length, then
// the message) and validates what arrives from the network: every decoded
// message is bounded in size and in the length of its strings and lists.
package wire

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	meshv1 "github.com/superinstance/mesh/proto/meshv1"
)

// MaxMessageBytes bounds one framed message.
const MaxMessageBytes = 1 << 20

// Bounds on decoded content.
const (
	MaxIDLen     = 128
	MaxTextLen   = 256
	MaxPromptLen = 64 << 10
	MaxAnswerLen = 256 << 10
	MaxGPUs      = 64
	MaxListLen   = 64
	// MaxPrewarmLoRAs bounds the adapters one pre-warm signal names.
	MaxPrewarmLoRAs = 8
)

// ErrTooLarge is returned for a frame over MaxMessageBytes.
var ErrTooLarge = errors.New("wire: message exceeds size limit")

// Write frames m onto w.
func Write(w io.Writer, m proto.Message) error {
	b, err := appendFrame(nil, m)
	if err != nil {
		return err
	}
	_, err = w.Write(b)
	return err
}

// appendFrame appends m's frame to dst, sizing it once: one allocation at
// most, none when dst has room.
func appendFrame(dst []byte, m proto.Message) ([]byte, error) {
	n := proto.Size(m)
	if n > MaxMessageBytes {
		return dst, ErrTooLarge
	}
	if dst == nil {
		dst = make([]byte, 0, binary.MaxVarintLen64+n)
	}
	dst = binary.AppendUvarint(dst, uint64(n))
	return proto.MarshalOptions{UseCachedSize: true}.MarshalAppend(dst, m)
}

// Writer frames messages onto a stream through a buffer it keeps, so that a
// stream carrying many small messages (heartbeat acks) allocates nothing per
// frame. A buffer over keepBytes is dropped after its frame. A Writer is not
// safe for concurrent use.
type Writer struct {
	w   io.Writer
	buf []byte
}

// NewWriter wraps w.
func NewWriter(w io.Writer) *Writer { return &Writer{w: w} }

// Write frames m onto the stream.
func (w *Writer) Write(m proto.Message) error {
	b, err := appendFrame(w.buf[:0], m)
	if err != nil {
		return err
	}
	if cap(b) <= keepBytes {
		w.buf = b
	} else {
		w.buf = nil
	}
	_, err = w.w.Write(b)
	return err
}

// Reader reads framed messages.
type Reader struct {
	r   *bufio.Reader
	buf []byte
}

// NewReader wraps r.
func NewReader(r io.Reader) *Reader { return &Reader{r: bufio.NewReader(r)} }

// Read decodes the next frame into m. io.EOF means the stream ended cleanly
// between frames; a frame cut short is io.ErrUnexpectedEOF.
func (r *Reader) Read(m proto.Message) error {
	b, err := r.frame()
	if err != nil {
		return err
	}
	if err := proto.Unmarshal(b, m); err != nil {
		return fmt.Errorf("wire: %w", err)
	}
	return nil
}

// frame reads the next frame's body, valid until the next read.
func (r *Reader) frame() ([]byte, error) {
	n, err := binary.ReadUvarint(r.r)
	if err != nil {
		if errors.Is(err, io.EOF) {
			return nil, io.EOF
		}
		return nil, fmt.Errorf("wire: frame length: %w", err)
	}
	if n > MaxMessageBytes {
		return nil, ErrTooLarge
	}
	b, err := r.body(int(n))
	if err != nil {
		return nil, fmt.Errorf("wire: frame body: %w", err)
	}
	return b, nil
}

// HubDecoder reads the messages of one hub's control stream. A frame that
// is a heartbeat and nothing else (what hubs send every interval) is
// decoded into the envelope of the one before: across thousands of hubs,
// a fresh envelope each beat would be much of what a bridge allocates.
// The vitals are decoded anew every time, so a caller may keep them.
type HubDecoder struct {
	r  *Reader
	m  meshv1.HubMessage
	hb meshv1.HubMessage_Heartbeat
}

// NewHubDecoder reads hub messages from r.
func NewHubDecoder(r *Reader) *HubDecoder {
	d := &HubDecoder{r: r}
	d.hb.Heartbeat = &meshv1.Heartbeat{}
	return d
}

// Read returns the next message, as Reader.Read would decode it into a
// new one. A heartbeat is valid until the next call.
func (d *HubDecoder) Read() (*meshv1.HubMessage, error) {
	b, err := d.r.frame()
	if err != nil {
		return nil, err
	}
	if body, ok := onlyHeartbeat(b); ok {
		if err := proto.Unmarshal(body, d.hb.Heartbeat); err != nil {
			return nil, fmt.Errorf("wire: %w", err)
		}
		d.m.Reset()
		d.m.Body = &d.hb
		return &d.m, nil
	}
	m := &meshv1.HubMessage{}
	if err := proto.Unmarshal(b, m); err != nil {
		return nil, fmt.Errorf("wire: %w", err)
	}
	return m, nil
}

// onlyHeartbeat returns the heartbeat's bytes if frame holds one
// HubMessage field, the heartbeat, and nothing else.
func onlyHeartbeat(frame []byte) ([]byte, bool) {
	num, typ, n := protowire.ConsumeTag(frame)
	if n < 0 || num != heartbeatField || typ != protowire.BytesType {
		return nil, false
	}
	body, m := protowire.ConsumeBytes(frame[n:])
	if m < 0 || n+m != len(frame) {
		return nil, false
	}
	return body, true
}

// heartbeatField is HubMessage's heartbeat field number.
var heartbeatField = (&meshv1.HubMessage{}).ProtoReflect().Descriptor().Fields().ByName("heartbeat").Number()

// Frame bodies are read into a buffer that grows as bytes arrive, never to
// the declared length up front: a peer that declares 1 MiB and sends ten
// bytes costs what it sent. A buffer over keepBytes is dropped after its
// frame so that an idle stream does not hold on to a large one.
const (
	firstChunk = 4 << 10
	keepBytes  = 64 << 10
)

// body reads the next n bytes.
func (r *Reader) body(n int) ([]byte, error) {
	b := r.buf[:0]
	for len(b) < n {
		if len(b) == cap(b) {
			grown := make([]byte, len(b), min(n, max(2*cap(b), firstChunk)))
			copy(grown, b)
			b = grown
		}
		k, err := r.r.Read(b[len(b):min(cap(b), n)])
		b = b[:len(b)+k]
		if err != nil && len(b) < n {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return nil, err
		}
	}
	if cap(b) <= keepBytes {
		r.buf = b
	} else {
		r.buf = nil
	}
	return b, nil
}

// ValidateHub checks a message from a hub.
func ValidateHub(m *meshv1.HubMessage) error {
	switch b := m.GetBody().(type) {
	case *meshv1.HubMessage_Hello:
		h := b.Hello
		if err := errors.Join(str("device_id", h.GetDeviceId(), MaxIDLen), str("version", h.GetVersion(), MaxTextLen),
			str("hostname", h.GetHostname(), MaxTextLen)); err != nil {
			return err
		}
		if len(h.GetGpus()) > MaxGPUs {
			return fmt.Errorf("hello lists %d GPUs, more than %d", len(h.GetGpus()), MaxGPUs)
		}
		if len(h.GetFeatures()) > MaxFeatures {
			return fmt.Errorf("hello names %d features, more than %d", len(h.GetFeatures()), MaxFeatures)
		}
		for _, f := range h.GetFeatures() {
			if err := str("feature", f, MaxIDLen); err != nil {
				return err
			}
		}
		for _, g := range h.GetGpus() {
			if err := errors.Join(str("gpu uuid", g.GetUuid(), MaxTextLen), str("gpu name", g.GetName(), MaxTextLen)); err != nil {
				return err
			}
		}
		return ValidateVitals(h.GetVitals())
	case *meshv1.HubMessage_Heartbeat:
		return ValidateVitals(b.Heartbeat.GetVitals())
	case *meshv1.HubMessage_Prewarm:
		p := b.Prewarm
		errs := []error{str("reason", p.GetReason(), MaxTextLen), str("lora", p.GetLora(), MaxIDLen), finite("gpu_load", p.GetGpuLoad()),
			finite("temperature_c", p.GetTemperatureC())}
		if len(p.GetLoras()) > MaxPrewarmLoRAs {
			return fmt.Errorf("pre-warm names %d adapters, more than %d", len(p.GetLoras()), MaxPrewarmLoRAs)
		}
		for _, l := range p.GetLoras() {
			if l == "" {
				errs = append(errs, errors.New("pre-warm names an empty adapter id"))
				break
			}
			errs = append(errs, str("loras entry", l, MaxIDLen))
		}
		return errors.Join(errs...)
	case *meshv1.HubMessage_Usage:
		u := b.Usage
		if u.GetEventId() == "" {
			return errors.New("usage record without event_id")
		}
		return errors.Join(str("event_id", u.GetEventId(), MaxIDLen), str("project", u.GetProject(), MaxIDLen), str("model", u.GetModel(), MaxTextLen))
	case nil:
		return errors.New("empty hub message")
	}
	return errors.New("unknown hub message")
}

// ValidateVitals checks a vitals reading; nil is valid (no reading).
func ValidateVitals(v *meshv1.HardwareVitals) error {
	if v == nil {
		return nil
	}
	if len(v.GetGpus()) > MaxGPUs {
		return fmt.Errorf("vitals list %d GPUs, more than %d", len(v.GetGpus()), MaxGPUs)
	}
	// Only what fails is collected: a valid reading (every heartbeat's)
	// allocates nothing.
	var errs []error
	add := func(err error) {
		if err != nil {
			errs = append(errs, err)
		}
	}
	add(str("no_gpu_reason", v.GetNoGpuReason(), MaxTextLen))
	add(str("driver_version", v.GetDriverVersion(), MaxTextLen))
	add(finite("cpu_load", v.GetCpuLoad()))
	for _, g := range v.GetGpus() {
		add(str("gpu uuid", g.GetUuid(), MaxTextLen))
		add(str("gpu name", g.GetName(), MaxTextLen))
		if g.GetUtilizationPercent() > 100 || g.GetMemoryUtilizationPercent() > 100 {
			add(fmt.Errorf("gpu %d utilization over 100%%", g.GetIndex()))
		}
		for _, l := range [3][]string{g.GetThrottleReasonNames(), g.GetUnsupported(), g.GetErrors()} {
			if len(l) > MaxListLen {
				add(fmt.Errorf("gpu %d lists %d entries, more than %d", g.GetIndex(), len(l), MaxListLen))
			}
			for _, s := range l {
				add(str("gpu list entry", s, MaxTextLen))
			}
		}
	}
	return errors.Join(errs...)
}

// ValidateEscalation checks an escalation request from a hub.
func ValidateEscalation(r *meshv1.EscalationRequest) error {
	if r.GetRequestId() == "" {
		return errors.New("escalation without request_id")
	}
	if r.GetPrompt() == "" {
		return errors.New("escalation without prompt")
	}
	return errors.Join(str("request_id", r.GetRequestId(), MaxIDLen), str("prompt", r.GetPrompt(), MaxPromptLen),
		str("project", r.GetProject(), MaxIDLen), str("lora", r.GetLora(), MaxIDLen), finite("threshold", r.GetThreshold()))
}

// ValidateResponse checks an escalation response from the bridge.
func ValidateResponse(r *meshv1.EscalationResponse) error {
	errs := []error{str("request_id", r.GetRequestId(), MaxIDLen)}
	switch b := r.GetBody().(type) {
	case *meshv1.EscalationResponse_Progress:
		errs = append(errs, str("agent", b.Progress.GetAgent(), MaxTextLen), str("text", b.Progress.GetText(), MaxAnswerLen), finite("score", b.Progress.GetScore()))
	case *meshv1.EscalationResponse_Result:
		errs = append(errs, str("workflow_id", b.Result.GetWorkflowId(), MaxTextLen), str("status", b.Result.GetStatus(), MaxTextLen),
			str("answer", b.Result.GetAnswer(), MaxAnswerLen), finite("score", b.Result.GetScore()))
	case *meshv1.EscalationResponse_Error:
		errs = append(errs, str("code", b.Error.GetCode(), MaxTextLen), str("message", b.Error.GetMessage(), MaxAnswerLen))
	case nil:
		return errors.New("empty escalation response")
	}
	return errors.Join(errs...)
}

func str(name, s string, max int) error {
	if len(s) > max {
		return fmt.Errorf("%s is %d bytes, more than %d", name, len(s), max)
	}
	return nil
}

func finite(name string, x float64) error {
	if x != x || x > 1e12 || x < -1e12 {
		return fmt.Errorf("%s is not a finite number", name)
	}
	return nil
}
