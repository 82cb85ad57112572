// Package safetensors validates the header of a .safetensors file before any
// of it is trusted: the format is an 8-byte little-endian header length, a
// JSON header naming each tensor's dtype, shape and byte range, then the
// tensor data, packed.
package safetensors

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/bits"
	"sort"
	"strings"
)

// MaxHeaderLen bounds the JSON header. Real adapter headers are a few hundred
// kilobytes at most; the reference implementation refuses more than 100 MB.
const MaxHeaderLen = 16 << 20

// MaxTensors bounds the number of tensors a header may describe.
const MaxTensors = 1 << 16

// maxRank bounds the number of dimensions of one tensor.
const maxRank = 8

// dtypeBytes is the size of one element of each dtype the format defines.
var dtypeBytes = map[string]uint64{
	"BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1,
	"I16": 2, "U16": 2, "F16": 2, "BF16": 2,
	"I32": 4, "U32": 4, "F32": 4,
	"I64": 8, "U64": 8, "F64": 8,
}

// Tensor is one entry of the header.
type Tensor struct {
	Name  string
	DType string
	Shape []uint64
	// Begin and End are byte offsets into the data section.
	Begin, End uint64
}

// Header is a validated header.
type Header struct {
	// HeaderLen is the length of the JSON header in bytes.
	HeaderLen uint64
	// DataLen is the length of the data section in bytes.
	DataLen uint64
	// Tensors are sorted by Begin.
	Tensors  []Tensor
	Metadata map[string]string
}

// Params is the number of elements across all tensors.
func (h Header) Params() uint64 {
	var n uint64
	for _, t := range h.Tensors {
		n += elements(t.Shape)
	}
	return n
}

// Error says what is wrong with a file.
type Error struct{ Reason string }

func (e *Error) Error() string { return "safetensors: " + e.Reason }

func bad(format string, args ...any) error { return &Error{Reason: fmt.Sprintf(format, args...)} }

// Read validates the header of a file of the given size.
func Read(r io.ReaderAt, size int64) (Header, error) {
	if size < 8 {
		return Header{}, bad("file is %d bytes, shorter than the 8-byte header length", size)
	}
	var prefix [8]byte
	if _, err := r.ReadAt(prefix[:], 0); err != nil {
		return Header{}, fmt.Errorf("safetensors: reading header length: %w", err)
	}
	n := binary.LittleEndian.Uint64(prefix[:])
	if n > MaxHeaderLen {
		return Header{}, bad("header length %d exceeds the %d-byte limit", n, MaxHeaderLen)
	}
	if n > uint64(size)-8 {
		return Header{}, bad("header length %d runs past the end of a %d-byte file (truncated?)", n, size)
	}
	buf := make([]byte, n)
	if _, err := r.ReadAt(buf, 8); err != nil {
		return Header{}, fmt.Errorf("safetensors: reading header: %w", err)
	}
	return Parse(buf, uint64(size)-8-n)
}

// Parse validates a JSON header that is followed by dataLen bytes of data.
func Parse(header []byte, dataLen uint64) (Header, error) {
	h := Header{HeaderLen: uint64(len(header)), DataLen: dataLen}
	if len(header) > MaxHeaderLen {
		return h, bad("header length %d exceeds the %d-byte limit", len(header), MaxHeaderLen)
	}
	if len(bytes.TrimSpace(header)) == 0 || header[0] != '{' {
		return h, bad("header is not a JSON object")
	}
	raw, err := decodeObject(header)
	if err != nil {
		return h, err
	}
	if len(raw) > MaxTensors+1 {
		return h, bad("header describes %d tensors, more than %d", len(raw), MaxTensors)
	}
	for _, e := range raw {
		if e.key == "__metadata__" {
			if err := json.Unmarshal(e.value, &h.Metadata); err != nil {
				return h, bad("__metadata__ must map strings to strings")
			}
			continue
		}
		t, err := parseTensor(e.key, e.value)
		if err != nil {
			return h, err
		}
		h.Tensors = append(h.Tensors, t)
	}
	sort.Slice(h.Tensors, func(i, j int) bool {
		a, b := h.Tensors[i], h.Tensors[j]
		if a.Begin != b.Begin {
			return a.Begin < b.Begin
		}
		return a.End < b.End
	})
	var next uint64
	for _, t := range h.Tensors {
		switch {
		case t.Begin < next:
			return h, bad("tensor %q [%d, %d) overlaps the tensor before it", t.Name, t.Begin, t.End)
		case t.Begin > next:
			return h, bad("gap of %d bytes before tensor %q: offsets must be contiguous from 0", t.Begin-next, t.Name)
		}
		if t.End > dataLen {
			return h, bad("tensor %q ends at %d, past the %d-byte data section", t.Name, t.End, dataLen)
		}
		next = t.End
	}
	if next != dataLen {
		return h, bad("%d trailing bytes after the last tensor", dataLen-next)
	}
	return h, nil
}

type entry struct {
	key   string
	value json.RawMessage
}

// decodeObject reads the top-level object key by key so that a duplicated key
// is an error rather than silently shadowed.
func decodeObject(b []byte) ([]entry, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	if _, err := dec.Token(); err != nil {
		return nil, bad("header is not JSON: %v", err)
	}
	seen := map[string]bool{}
	var out []entry
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, bad("header is not JSON: %v", err)
		}
		key, ok := tok.(string)
		if !ok {
			return nil, bad("header is not JSON: object key expected")
		}
		if seen[key] {
			return nil, bad("tensor %q appears twice", key)
		}
		seen[key] = true
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return nil, bad("header is not JSON: %v", err)
		}
		out = append(out, entry{key, v})
		if len(out) > MaxTensors+1 {
			return nil, bad("header describes more than %d tensors", MaxTensors)
		}
	}
	if _, err := dec.Token(); err != nil {
		return nil, bad("header is not JSON: %v", err)
	}
	if rest := bytes.TrimRight(b[dec.InputOffset():], " "); len(rest) != 0 {
		return nil, bad("unexpected bytes after the header's JSON object")
	}
	return out, nil
}

func parseTensor(name string, v json.RawMessage) (Tensor, error) {
	t := Tensor{Name: name}
	if name == "" || strings.ContainsRune(name, 0) {
		return t, bad("tensor name %q is not valid", name)
	}
	var j struct {
		DType   *string   `json:"dtype"`
		Shape   *[]uint64 `json:"shape"`
		Offsets *[]uint64 `json:"data_offsets"`
	}
	dec := json.NewDecoder(bytes.NewReader(v))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&j); err != nil {
		return t, bad("tensor %q: %v", name, err)
	}
	if j.DType == nil || j.Shape == nil || j.Offsets == nil {
		return t, bad("tensor %q needs dtype, shape and data_offsets", name)
	}
	size, ok := dtypeBytes[*j.DType]
	if !ok {
		return t, bad("tensor %q has unknown dtype %q", name, *j.DType)
	}
	if len(*j.Shape) > maxRank {
		return t, bad("tensor %q has %d dimensions, more than %d", name, len(*j.Shape), maxRank)
	}
	if len(*j.Offsets) != 2 {
		return t, bad("tensor %q: data_offsets must be [begin, end]", name)
	}
	t.DType, t.Shape, t.Begin, t.End = *j.DType, *j.Shape, (*j.Offsets)[0], (*j.Offsets)[1]
	if t.End < t.Begin {
		return t, bad("tensor %q ends (%d) before it begins (%d)", name, t.End, t.Begin)
	}
	want := size
	for _, d := range t.Shape {
		hi, lo := bits.Mul64(want, d)
		if hi != 0 || lo > math.MaxInt64 {
			return t, bad("tensor %q: shape %v overflows", name, t.Shape)
		}
		want = lo
	}
	if got := t.End - t.Begin; got != want {
		return t, bad("tensor %q: %s × %v is %d bytes but its offsets span %d", name, t.DType, t.Shape, want, got)
	}
	return t, nil
}

func elements(shape []uint64) uint64 {
	n := uint64(1)
	for _, d := range shape {
		n *= d
	}
	return n
}

// Encode writes a header for tensors laid out in order, followed by zeroed
// data, to w; it returns the bytes written. It exists to make valid files for
// tests and scaffolding.
func Encode(w io.Writer, tensors []Tensor, metadata map[string]string) (int64, error) {
	obj := map[string]any{}
	if metadata != nil {
		obj["__metadata__"] = metadata
	}
	var off uint64
	for _, t := range tensors {
		size, ok := dtypeBytes[t.DType]
		if !ok {
			return 0, errors.New("safetensors: unknown dtype " + t.DType)
		}
		n := size * elements(t.Shape)
		obj[t.Name] = map[string]any{"dtype": t.DType, "shape": t.Shape, "data_offsets": []uint64{off, off + n}}
		off += n
	}
	hdr, err := json.Marshal(obj)
	if err != nil {
		return 0, err
	}
	if pad := len(hdr) % 8; pad != 0 {
		hdr = append(hdr, bytes.Repeat([]byte(" "), 8-pad)...)
	}
	var prefix [8]byte
	binary.LittleEndian.PutUint64(prefix[:], uint64(len(hdr)))
	total := int64(0)
	for _, b := range [][]byte{prefix[:], hdr} {
		n, err := w.Write(b)
		total += int64(n)
		if err != nil {
			return total, err
		}
	}
	zero := make([]byte, 64<<10)
	for left := off; left > 0; {
		k := min(left, uint64(len(zero)))
		n, err := w.Write(zero[:k])
		total += int64(n)
		if err != nil {
			return total, err
		}
		left -= k
	}
	return total, nil
}
