package wire

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"runtime"
	"strings"
	"testing"
	"testing/iotest"

	"google.golang.org/protobuf/proto"

	meshv1 "github.com/superinstance/mesh/proto/meshv1"
)

func TestRoundTrip(t *testing.T) {
	var buf bytes.Buffer
	msgs := []*meshv1.HubMessage{
		{Body: &meshv1.HubMessage_Hello{Hello: &meshv1.Hello{DeviceId: "gpu1", Version: "1"}}},
		{Body: &meshv1.HubMessage_Heartbeat{Heartbeat: &meshv1.Heartbeat{Seq: 7, Vitals: &meshv1.HardwareVitals{CpuLoad: 0.5}}}},
		{Body: &meshv1.HubMessage_Usage{Usage: &meshv1.UsageRecord{EventId: "e1"}}},
	}
	for _, m := range msgs {
		if err := Write(&buf, m); err != nil {
			t.Fatal(err)
		}
	}
	r := NewReader(&buf)
	for _, want := range msgs {
		var got meshv1.HubMessage
		if err := r.Read(&got); err != nil {
			t.Fatal(err)
		}
		if !proto.Equal(&got, want) || ValidateHub(&got) != nil {
			t.Fatalf("got %v want %v", &got, want)
		}
	}
	var m meshv1.HubMessage
	if err := r.Read(&m); err != io.EOF {
		t.Fatalf("end of stream: %v", err)
	}
}

func TestBounds(t *testing.T) {
	var hdr [binary.MaxVarintLen64]byte
	n := binary.PutUvarint(hdr[:], MaxMessageBytes+1)
	var m meshv1.HubMessage
	if err := NewReader(bytes.NewReader(hdr[:n])).Read(&m); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("oversized frame: %v", err)
	}
	n = binary.PutUvarint(hdr[:], 10)
	if err := NewReader(bytes.NewReader(append(hdr[:n], 1, 2))).Read(&m); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("truncated frame: %v", err)
	}
	cases := map[string]*meshv1.HubMessage{
		"empty":         {},
		"long id":       {Body: &meshv1.HubMessage_Hello{Hello: &meshv1.Hello{DeviceId: strings.Repeat("x", MaxIDLen+1)}}},
		"too many gpus": {Body: &meshv1.HubMessage_Hello{Hello: &meshv1.Hello{Gpus: make([]*meshv1.GPUInfo, MaxGPUs+1)}}},
		"util > 100": {Body: &meshv1.HubMessage_Heartbeat{Heartbeat: &meshv1.Heartbeat{Vitals: &meshv1.HardwareVitals{
			Gpus: []*meshv1.GPUVitals{{UtilizationPercent: 101}}}}}},
		"usage without id":           {Body: &meshv1.HubMessage_Usage{Usage: &meshv1.UsageRecord{}}},
		"prewarm, too many adapters": {Body: &meshv1.HubMessage_Prewarm{Prewarm: &meshv1.PrewarmSignal{Loras: make([]string, 100)}}},
		"prewarm, long adapter id": {Body: &meshv1.HubMessage_Prewarm{Prewarm: &meshv1.PrewarmSignal{
			Loras: []string{"lora-1", strings.Repeat("x", MaxIDLen+1)}}}},
		"prewarm, empty adapter id": {Body: &meshv1.HubMessage_Prewarm{Prewarm: &meshv1.PrewarmSignal{Loras: []string{""}}}},
		"too many features":         {Body: &meshv1.HubMessage_Hello{Hello: &meshv1.Hello{Features: make([]string, MaxFeatures+1)}}},
		"long feature":              {Body: &meshv1.HubMessage_Hello{Hello: &meshv1.Hello{Features: []string{strings.Repeat("f", MaxIDLen+1)}}}},
	}
	if err := ValidateHub(&meshv1.HubMessage{Body: &meshv1.HubMessage_Hello{Hello: &meshv1.Hello{Features: HubFeatures()}}}); err != nil {
		t.Errorf("this build's hello refused: %v", err)
	}
	for name, m := range cases {
		if ValidateHub(m) == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if ValidateEscalation(&meshv1.EscalationRequest{RequestId: "r"}) == nil {
		t.Error("escalation without prompt accepted")
	}
}

// TestDeclaredLengthIsNotAllocated sends a header that declares the largest
// frame and then only a few bytes: the reader must not allocate the
// declared length before the body arrives.
func TestDeclaredLengthIsNotAllocated(t *testing.T) {
	var hdr [binary.MaxVarintLen64]byte
	n := binary.PutUvarint(hdr[:], MaxMessageBytes)
	frame := append(hdr[:n:n], bytes.Repeat([]byte{0}, 100)...)
	var m meshv1.HubMessage
	allocs := allocated(func() {
		for range 16 {
			if err := NewReader(bytes.NewReader(frame)).Read(&m); !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Fatalf("frame cut short: %v", err)
			}
		}
	})
	// 16 readers, each with its bufio buffer and what 100 bytes need: well
	// under one declared length, where the old reader took 16 MiB.
	if allocs > MaxMessageBytes/2 {
		t.Fatalf("16 frames declaring %d bytes with 100 sent allocated %d bytes", MaxMessageBytes, allocs)
	}
}

// TestLargeFrameGrows reads frames of many sizes, largest first, through one
// reader, so buffers grow and are reused correctly.
func TestLargeFrameGrows(t *testing.T) {
	var buf bytes.Buffer
	sizes := []int{MaxPromptLen, 1, 5000, 70000, 0, 3}
	for _, n := range sizes {
		if err := Write(&buf, &meshv1.EscalationRequest{RequestId: "r", Prompt: strings.Repeat("p", n)}); err != nil {
			t.Fatal(err)
		}
	}
	r := NewReader(iotest.OneByteReader(&buf))
	for _, n := range sizes {
		var m meshv1.EscalationRequest
		if err := r.Read(&m); err != nil {
			t.Fatal(err)
		}
		if len(m.GetPrompt()) != n || m.GetRequestId() != "r" {
			t.Fatalf("prompt of %d bytes read as %d", n, len(m.GetPrompt()))
		}
	}
}

// TestWriterFramesAsWrite checks that a Writer puts the same bytes on the
// stream as Write, keeps no large buffer, refuses an oversized message
// without writing any of it, and allocates nothing per heartbeat ack.
func TestWriterFramesAsWrite(t *testing.T) {
	msgs := []proto.Message{
		&meshv1.BridgeMessage{Body: &meshv1.BridgeMessage_HeartbeatAck{HeartbeatAck: &meshv1.HeartbeatAck{Seq: 1, EchoSentUnixNano: 12345}}},
		&meshv1.EscalationRequest{RequestId: "r", Prompt: strings.Repeat("p", 2*keepBytes)},
		&meshv1.BridgeMessage{Body: &meshv1.BridgeMessage_HeartbeatAck{HeartbeatAck: &meshv1.HeartbeatAck{Seq: 1 << 40}}},
		&meshv1.BridgeMessage{},
	}
	var want, got bytes.Buffer
	w := NewWriter(&got)
	for _, m := range msgs {
		if err := Write(&want, m); err != nil {
			t.Fatal(err)
		}
		if err := w.Write(m); err != nil {
			t.Fatal(err)
		}
		if cap(w.buf) > keepBytes {
			t.Fatalf("writer keeps a buffer of %d bytes, over %d", cap(w.buf), keepBytes)
		}
	}
	if !bytes.Equal(got.Bytes(), want.Bytes()) {
		t.Fatalf("writer framed %d bytes, Write %d, or they differ", got.Len(), want.Len())
	}
	got.Reset()
	if err := w.Write(&meshv1.EscalationRequest{Prompt: strings.Repeat("p", MaxMessageBytes)}); !errors.Is(err, ErrTooLarge) || got.Len() != 0 {
		t.Fatalf("oversized message: %v, %d bytes written", err, got.Len())
	}
	ack := &meshv1.HeartbeatAck{}
	m := &meshv1.BridgeMessage{Body: &meshv1.BridgeMessage_HeartbeatAck{HeartbeatAck: ack}}
	if n := testing.AllocsPerRun(100, func() {
		got.Reset()
		ack.Seq++
		if err := w.Write(m); err != nil {
			t.Fatal(err)
		}
	}); n != 0 {
		t.Fatalf("%v allocations per heartbeat ack, want 0", n)
	}
}

// TestValidHeartbeatAllocatesNothing: the bridge validates every heartbeat;
// a valid one costs no allocation, and an invalid one still names each
// fault.
func TestValidHeartbeatAllocatesNothing(t *testing.T) {
	v := &meshv1.HardwareVitals{NvmlAvailable: true, CpuCount: 2, Gpus: []*meshv1.GPUVitals{
		{Index: 0, Name: "gpu", UtilizationPercent: 40, TemperatureC: 60, ThrottleReasonNames: []string{"idle"}},
		{Index: 1, Name: "gpu", UtilizationPercent: 90, TemperatureC: 70}}}
	m := &meshv1.HubMessage{Body: &meshv1.HubMessage_Heartbeat{Heartbeat: &meshv1.Heartbeat{Seq: 1, Vitals: v}}}
	if n := testing.AllocsPerRun(100, func() {
		if err := ValidateHub(m); err != nil {
			t.Fatal(err)
		}
	}); n != 0 {
		t.Fatalf("%v allocations to validate a heartbeat, want 0", n)
	}
	v.Gpus[0].UtilizationPercent = 101
	v.Gpus[1].Name = strings.Repeat("n", MaxTextLen+1)
	err := ValidateHub(m)
	if err == nil || !strings.Contains(err.Error(), "gpu 0 utilization over 100%") || !strings.Contains(err.Error(), "gpu name is") {
		t.Fatalf("two faults reported as %v", err)
	}
}

func allocated(f func()) uint64 {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	f()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

func fuzzRead[T proto.Message](f *testing.F, newMsg func() T, validate func(T) error, seeds ...T) {
	for _, s := range seeds {
		var buf bytes.Buffer
		if err := Write(&buf, s); err != nil {
			f.Fatal(err)
		}
		f.Add(buf.Bytes())
	}
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0x0f})
	f.Fuzz(func(t *testing.T, data []byte) {
		r := NewReader(bytes.NewReader(data))
		for range 8 {
			m := newMsg()
			if err := r.Read(m); err != nil {
				return
			}
			_ = validate(m)
			var buf bytes.Buffer
			if err := Write(&buf, m); err != nil && !errors.Is(err, ErrTooLarge) {
				t.Fatalf("re-encoding a decoded message: %v", err)
			}
		}
	})
}

func FuzzHubMessage(f *testing.F) {
	fuzzRead(f, func() *meshv1.HubMessage { return &meshv1.HubMessage{} }, ValidateHub,
		&meshv1.HubMessage{Body: &meshv1.HubMessage_Hello{Hello: &meshv1.Hello{DeviceId: "d", Gpus: []*meshv1.GPUInfo{{Name: "H100"}}, Features: HubFeatures()}}},
		&meshv1.HubMessage{Body: &meshv1.HubMessage_Heartbeat{Heartbeat: &meshv1.Heartbeat{Seq: 1, Vitals: &meshv1.HardwareVitals{Gpus: []*meshv1.GPUVitals{{TemperatureC: 80}}}}}},
		&meshv1.HubMessage{Body: &meshv1.HubMessage_Prewarm{Prewarm: &meshv1.PrewarmSignal{Reason: "hot", GpuLoad: 0.9}}},
		&meshv1.HubMessage{Body: &meshv1.HubMessage_Prewarm{Prewarm: &meshv1.PrewarmSignal{Reason: "hot", Lora: "lora-a", Loras: []string{"lora-a", "lora-b"}}}})
}

func FuzzBridgeMessage(f *testing.F) {
	fuzzRead(f, func() *meshv1.BridgeMessage { return &meshv1.BridgeMessage{} }, func(*meshv1.BridgeMessage) error { return nil },
		&meshv1.BridgeMessage{Body: &meshv1.BridgeMessage_HeartbeatAck{HeartbeatAck: &meshv1.HeartbeatAck{Seq: 3}}},
		&meshv1.BridgeMessage{Body: &meshv1.BridgeMessage_HelloAck{HelloAck: &meshv1.HelloAck{DeviceId: "d"}}})
}

func FuzzEscalationRequest(f *testing.F) {
	fuzzRead(f, func() *meshv1.EscalationRequest { return &meshv1.EscalationRequest{} }, ValidateEscalation,
		&meshv1.EscalationRequest{RequestId: "r1", Prompt: "why?", MaxRounds: 2, Threshold: 0.8})
}

func FuzzEscalationResponse(f *testing.F) {
	fuzzRead(f, func() *meshv1.EscalationResponse { return &meshv1.EscalationResponse{} }, ValidateResponse,
		&meshv1.EscalationResponse{RequestId: "r1", Body: &meshv1.EscalationResponse_Result{Result: &meshv1.EscalationResult{Status: "consensus"}}},
		&meshv1.EscalationResponse{RequestId: "r1", Body: &meshv1.EscalationResponse_Error{Error: &meshv1.EscalationError{Code: "x"}}})
}

// FuzzFrameChunks reads the same bytes whole and one byte at a time: a
// frame's growing buffer must give the same messages either way.
func FuzzFrameChunks(f *testing.F) {
	var buf bytes.Buffer
	_ = Write(&buf, &meshv1.EscalationRequest{RequestId: "r1", Prompt: strings.Repeat("why? ", 2000)})
	_ = Write(&buf, &meshv1.EscalationRequest{RequestId: "r2", Prompt: "short"})
	f.Add(buf.Bytes())
	f.Add([]byte{0x80, 0x80, 0x40, 1, 2, 3})
	f.Fuzz(func(t *testing.T, data []byte) {
		whole, bytewise := NewReader(bytes.NewReader(data)), NewReader(iotest.OneByteReader(bytes.NewReader(data)))
		for range 8 {
			var a, b meshv1.EscalationRequest
			errA, errB := whole.Read(&a), bytewise.Read(&b)
			if (errA == nil) != (errB == nil) || !proto.Equal(&a, &b) {
				t.Fatalf("whole: %v %v; byte by byte: %v %v", &a, errA, &b, errB)
			}
			if errA != nil {
				return
			}
		}
	})
}

// FuzzHubDecoder reads the same bytes with a HubDecoder and into a new
// message each frame: they must agree on every message and every error,
// and a heartbeat's vitals kept from one read must not change at the next.
func FuzzHubDecoder(f *testing.F) {
	var buf bytes.Buffer
	for _, m := range []*meshv1.HubMessage{
		{Body: &meshv1.HubMessage_Heartbeat{Heartbeat: &meshv1.Heartbeat{Seq: 1, LastRttMicros: 900, Vitals: &meshv1.HardwareVitals{CpuLoad: 0.5,
			Gpus: []*meshv1.GPUVitals{{TemperatureC: 80, Name: "gpu"}}}}}},
		{Body: &meshv1.HubMessage_Heartbeat{Heartbeat: &meshv1.Heartbeat{Seq: 2}}},
		{Body: &meshv1.HubMessage_Usage{Usage: &meshv1.UsageRecord{EventId: "e1", PromptTokens: 3}}},
		{Body: &meshv1.HubMessage_Heartbeat{Heartbeat: &meshv1.Heartbeat{Seq: 3, Vitals: &meshv1.HardwareVitals{NvmlAvailable: true}}}},
		{},
	} {
		if err := Write(&buf, m); err != nil {
			f.Fatal(err)
		}
	}
	f.Add(buf.Bytes())
	// A heartbeat field, then a hello field: the hello is the message.
	f.Add([]byte{6, 0x12, 2, 0x08, 7, 0x0a, 0})
	// An empty frame, and one holding only an unknown field.
	f.Add([]byte{0, 2, 0x28, 1})
	f.Fuzz(func(t *testing.T, data []byte) {
		plain, dec := NewReader(bytes.NewReader(data)), NewHubDecoder(NewReader(bytes.NewReader(data)))
		var kept, keptCopy *meshv1.HardwareVitals
		for range 8 {
			want := &meshv1.HubMessage{}
			errWant := plain.Read(want)
			got, errGot := dec.Read()
			if (errWant == nil) != (errGot == nil) {
				t.Fatalf("decoder: %v, %v; a new message: %v, %v", got, errGot, want, errWant)
			}
			if kept != nil && !proto.Equal(kept, keptCopy) {
				t.Fatalf("vitals kept from the last heartbeat changed to %v, were %v", kept, keptCopy)
			}
			if errWant != nil {
				return
			}
			if !proto.Equal(got, want) {
				t.Fatalf("decoder: %v; a new message: %v", got, want)
			}
			if v := got.GetHeartbeat().GetVitals(); v != nil {
				kept, keptCopy = v, proto.Clone(v).(*meshv1.HardwareVitals)
			}
		}
	})
}

// repeat yields frame over and over.
type repeat struct {
	frame []byte
	off   int
}

func (r *repeat) Read(p []byte) (int, error) {
	n := 0
	for n < len(p) {
		k := copy(p[n:], r.frame[r.off:])
		n += k
		r.off = (r.off + k) % len(r.frame)
	}
	return n, nil
}

// TestHubDecoderAllocatesOnlyTheVitals: a heartbeat costs what its vitals
// cost to decode, and its envelope nothing.
func TestHubDecoderAllocatesOnlyTheVitals(t *testing.T) {
	v := &meshv1.HardwareVitals{NvmlAvailable: true, CpuCount: 2, Gpus: []*meshv1.GPUVitals{{Index: 0, Name: "gpu", UtilizationPercent: 40, TemperatureC: 60}}}
	var frame bytes.Buffer
	if err := Write(&frame, &meshv1.HubMessage{Body: &meshv1.HubMessage_Heartbeat{Heartbeat: &meshv1.Heartbeat{Seq: 9, SentUnixNano: 1, LastRttMicros: 300, Vitals: v}}}); err != nil {
		t.Fatal(err)
	}
	raw, err := proto.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	vitals := testing.AllocsPerRun(200, func() {
		if err := proto.Unmarshal(raw, &meshv1.HardwareVitals{}); err != nil {
			t.Fatal(err)
		}
	})
	dec := NewHubDecoder(NewReader(&repeat{frame: frame.Bytes()}))
	plain := NewReader(&repeat{frame: frame.Bytes()})
	var seq uint64
	got := testing.AllocsPerRun(200, func() {
		m, err := dec.Read()
		if err != nil {
			t.Fatal(err)
		}
		seq = m.GetHeartbeat().GetSeq()
	})
	fresh := testing.AllocsPerRun(200, func() {
		if err := plain.Read(&meshv1.HubMessage{}); err != nil {
			t.Fatal(err)
		}
	})
	if seq != 9 {
		t.Fatalf("heartbeat %d decoded, want 9", seq)
	}
	if got > vitals || got >= fresh {
		t.Fatalf("%v allocations a heartbeat, want at most the vitals' %v (a new message each: %v)", got, vitals, fresh)
	}
}
