package safetensors

import (
	"bytes"
	"encoding/binary"
	"errors"
	"strings"
	"testing"
)

// file builds a safetensors file from a literal header and data length.
func file(header string, data int) []byte {
	var b bytes.Buffer
	_ = binary.Write(&b, binary.LittleEndian, uint64(len(header)))
	b.WriteString(header)
	b.Write(make([]byte, data))
	return b.Bytes()
}

func TestReadValid(t *testing.T) {
	var b bytes.Buffer
	tensors := []Tensor{
		{Name: "base_model.model.layers.0.self_attn.q_proj.lora_A.weight", DType: "BF16", Shape: []uint64{8, 64}},
		{Name: "base_model.model.layers.0.self_attn.q_proj.lora_B.weight", DType: "BF16", Shape: []uint64{64, 8}},
		{Name: "scalar", DType: "F32", Shape: []uint64{}},
	}
	n, err := Encode(&b, tensors, map[string]string{"format": "pt"})
	if err != nil {
		t.Fatal(err)
	}
	h, err := Read(bytes.NewReader(b.Bytes()), n)
	if err != nil {
		t.Fatal(err)
	}
	if len(h.Tensors) != 3 || h.Params() != 8*64*2+1 || h.DataLen != 8*64*2*2+4 || h.Metadata["format"] != "pt" {
		t.Fatalf("header = %+v", h)
	}
	if h.Tensors[0].Begin != 0 || h.Tensors[2].End != h.DataLen {
		t.Fatalf("tensors not sorted by offset: %+v", h.Tensors)
	}
}

func TestReadRejects(t *testing.T) {
	huge := make([]byte, 8)
	binary.LittleEndian.PutUint64(huge, 1<<40)
	overflow := make([]byte, 8)
	binary.LittleEndian.PutUint64(overflow, ^uint64(0))
	cases := []struct {
		name string
		data []byte
		want string
	}{
		{"empty file", nil, "shorter than"},
		{"truncated length", []byte{1, 0, 0}, "shorter than"},
		{"huge header length", append(huge, `{}`...), "exceeds"},
		{"header length wraps", append(overflow, `{}`...), "exceeds"},
		{"header past end", file(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}`, 4)[:20], "runs past the end"},
		{"truncated data", file(`{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}`, 8), "past the 8-byte data section"},
		{"not JSON", file(`not json at all`, 0), "not a JSON object"},
		{"broken JSON", file(`{"a":{"dtype":`, 0), "not JSON"},
		{"JSON array", file(`[1,2]`, 0), "not a JSON object"},
		{"bytes after object", file(`{}{}`, 0), "after the header"},
		{"duplicate tensor", file(`{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"a":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}}`, 2), "appears twice"},
		{"overlapping offsets", file(`{"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},"b":{"dtype":"U8","shape":[4],"data_offsets":[2,6]}}`, 6), "overlaps"},
		{"gap between tensors", file(`{"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},"b":{"dtype":"U8","shape":[2],"data_offsets":[4,6]}}`, 6), "contiguous"},
		{"not starting at zero", file(`{"a":{"dtype":"U8","shape":[2],"data_offsets":[2,4]}}`, 4), "contiguous"},
		{"out of range", file(`{"a":{"dtype":"U8","shape":[8],"data_offsets":[0,8]}}`, 4), "past the 4-byte data section"},
		{"end before begin", file(`{"a":{"dtype":"U8","shape":[0],"data_offsets":[4,0]}}`, 4), "before it begins"},
		{"wrong dtype size", file(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}}`, 4), "is 8 bytes but its offsets span 4"},
		{"unknown dtype", file(`{"a":{"dtype":"F12","shape":[2],"data_offsets":[0,4]}}`, 4), "unknown dtype"},
		{"shape overflow", file(`{"a":{"dtype":"F64","shape":[4294967296,4294967296],"data_offsets":[0,8]}}`, 8), "overflows"},
		{"negative offset", file(`{"a":{"dtype":"U8","shape":[1],"data_offsets":[-1,0]}}`, 1), "tensor \"a\""},
		{"missing field", file(`{"a":{"dtype":"U8","shape":[1]}}`, 1), "needs dtype"},
		{"unknown field", file(`{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1],"x":1}}`, 1), "unknown field"},
		{"three offsets", file(`{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1,2]}}`, 1), "[begin, end]"},
		{"trailing bytes", file(`{"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}}`, 5), "3 trailing bytes"},
		{"bad metadata", file(`{"__metadata__":{"a":1}}`, 0), "__metadata__"},
		{"too many dimensions", file(`{"a":{"dtype":"U8","shape":[1,1,1,1,1,1,1,1,1],"data_offsets":[0,1]}}`, 1), "dimensions"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Read(bytes.NewReader(c.data), int64(len(c.data)))
			var se *Error
			if !errors.As(err, &se) {
				t.Fatalf("err = %v, want *Error", err)
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err = %q, want it to mention %q", err, c.want)
			}
		})
	}
}

func TestPaddedHeaderAccepted(t *testing.T) {
	data := file(`{"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}}      `, 2)
	if _, err := Read(bytes.NewReader(data), int64(len(data))); err != nil {
		t.Fatal(err)
	}
}

func FuzzRead(f *testing.F) {
	var b bytes.Buffer
	_, _ = Encode(&b, []Tensor{{Name: "w", DType: "F16", Shape: []uint64{2, 3}}, {Name: "v", DType: "I64", Shape: []uint64{1}}}, map[string]string{"k": "v"})
	f.Add(b.Bytes())
	f.Add(file(`{"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},"b":{"dtype":"U8","shape":[4],"data_offsets":[2,6]}}`, 6))
	f.Add(file(`{}`, 0))
	f.Fuzz(func(t *testing.T, data []byte) {
		h, err := Read(bytes.NewReader(data), int64(len(data)))
		if err != nil {
			return
		}
		// Whatever is accepted describes exactly the data that follows the header.
		var next uint64
		for _, tn := range h.Tensors {
			if tn.Begin != next || tn.End < tn.Begin {
				t.Fatalf("accepted non-contiguous tensors: %+v", h.Tensors)
			}
			next = tn.End
		}
		if next != h.DataLen || 8+h.HeaderLen+h.DataLen != uint64(len(data)) {
			t.Fatalf("accepted a header that does not cover the file: %+v (file %d bytes)", h, len(data))
		}
	})
}
