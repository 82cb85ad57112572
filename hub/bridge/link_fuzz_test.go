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
