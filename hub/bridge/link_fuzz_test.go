package bridge

import (
	"bytes"
	"encoding/binary"
	"testing"
	"unicode/utf8"
)

// FuzzCloseNotice: whatever a bridge (or a man in the middle who cannot
// be, under TLS) sends as a close notice, the hub's decoder never reads
// past the bound, never panics, and yields valid UTF-8.
func FuzzCloseNotice(f *testing.F) {
	ok := []byte{closeMagic, 0, 0, 0, 4, 0, 7}
	f.Add(append(ok, "revoked"...))
	f.Add([]byte{closeMagic, 0, 0, 0, 1, 0xff, 0xff})
	f.Add([]byte{0x00})
	f.Add(append([]byte{closeMagic, 1, 2, 3, 4, 0, 2}, 0xff, 0xfe))
	f.Fuzz(func(t *testing.T, b []byte) {
		ae, err := readCloseNotice(bytes.NewReader(b))
		if err != nil {
			return
		}
		n := int(binary.BigEndian.Uint16(b[5:7]))
		if n > maxCloseMsg || len(b) < 7+n {
			t.Fatalf("accepted a notice declaring %d bytes from %d", n, len(b))
		}
		if !utf8.ValidString(ae.ErrorMessage) || uint64(ae.ErrorCode) != uint64(binary.BigEndian.Uint32(b[1:5])) {
			t.Fatalf("decoded %+v from %x", ae, b)
		}
	})
}

// FuzzNotice: a bridge's first notice yields a stream bound within
// 1..maxNoticeBound or a close notice, never both, never a panic.
func FuzzNotice(f *testing.F) {
	f.Add([]byte{boundMagic, 0, 0, 0, 100})
	f.Add([]byte{boundMagic, 0, 0, 0, 0})
	f.Add([]byte{boundMagic, 0xff, 0xff, 0xff, 0xff})
	f.Add(append([]byte{closeMagic, 0, 0, 0, 4, 0, 7}, "revoked"...))
	f.Add([]byte{0x01})
	f.Fuzz(func(t *testing.T, b []byte) {
		n, ae, err := readNotice(bytes.NewReader(b))
		if err != nil {
			return
		}
		switch {
		case ae != nil && n != 0:
			t.Fatalf("both a bound %d and a close %+v from %x", n, ae, b)
		case ae == nil && (n < 1 || n > maxNoticeBound || b[0] != boundMagic):
			t.Fatalf("bound %d from %x", n, b)
		case ae != nil && !utf8.ValidString(ae.ErrorMessage):
			t.Fatalf("close %+v from %x", ae, b)
		}
	})
}
