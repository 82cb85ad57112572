package bridge

import (
	"crypto/sha256"
	"sync"
	"time"

	"google.golang.org/protobuf/reflect/protoreflect"
)

// tokenBook remembers which device each activity task token was handed to.
// Temporal's task tokens are not signed: a hub that could answer any token
// it can build could complete another customer's activity. So a hub may
// answer only the tokens this bridge gave it, for as long as the task can
// be answered at all. Tokens are kept as hashes, at most limit per device.
type tokenBook struct {
	limit int
	mu    sync.Mutex
	devs  map[string]*deviceTokens
}

type deviceTokens struct {
	exp   map[[32]byte]time.Time
	order [][32]byte // insertion order, for eviction; may hold forgotten keys
}

func newTokenBook(limit int) *tokenBook {
	return &tokenBook{limit: limit, devs: map[string]*deviceTokens{}}
}

func (b *tokenBook) add(device string, tok []byte, until, now time.Time) {
	k := sha256.Sum256(tok)
	b.mu.Lock()
	defer b.mu.Unlock()
	d := b.devs[device]
	if d == nil {
		d = &deviceTokens{exp: map[[32]byte]time.Time{}}
		b.devs[device] = d
	}
	if _, ok := d.exp[k]; !ok && len(d.exp) >= b.limit {
		d.expire(now)
		for len(d.exp) >= b.limit && len(d.order) > 0 {
			delete(d.exp, d.order[0])
			d.order = d.order[1:]
		}
	}
	if _, ok := d.exp[k]; !ok {
		d.order = append(d.order, k)
	}
	d.exp[k] = until
	if len(d.order) > 2*b.limit {
		d.compact()
	}
}

func (b *tokenBook) owns(device string, tok []byte, now time.Time) bool {
	if len(tok) == 0 {
		return false
	}
	k := sha256.Sum256(tok)
	b.mu.Lock()
	defer b.mu.Unlock()
	d := b.devs[device]
	if d == nil {
		return false
	}
	until, ok := d.exp[k]
	return ok && now.Before(until)
}

func (b *tokenBook) forget(device string, tok []byte) {
	k := sha256.Sum256(tok)
	b.mu.Lock()
	defer b.mu.Unlock()
	d := b.devs[device]
	if d == nil {
		return
	}
	delete(d.exp, k)
	if len(d.exp) == 0 {
		delete(b.devs, device)
	}
}

func (b *tokenBook) size(device string) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	if d := b.devs[device]; d != nil {
		return len(d.exp)
	}
	return 0
}

func (d *deviceTokens) expire(now time.Time) {
	for k, until := range d.exp {
		if !now.Before(until) {
			delete(d.exp, k)
		}
	}
	d.compact()
}

// compact drops forgotten keys from the eviction order.
func (d *deviceTokens) compact() {
	kept := d.order[:0]
	seen := make(map[[32]byte]bool, len(d.exp))
	for _, k := range d.order {
		if _, ok := d.exp[k]; ok && !seen[k] {
			seen[k] = true
			kept = append(kept, k)
		}
	}
	d.order = kept
}

// dropUnknown clears unknown fields in m and every message inside it.
func dropUnknown(m protoreflect.Message) {
	if !m.IsValid() {
		return
	}
	if len(m.GetUnknown()) > 0 {
		m.SetUnknown(nil)
	}
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		switch {
		case fd.IsList() && fd.Message() != nil:
			l := v.List()
			for i := 0; i < l.Len(); i++ {
				dropUnknown(l.Get(i).Message())
			}
		case fd.IsMap() && fd.MapValue().Message() != nil:
			v.Map().Range(func(_ protoreflect.MapKey, mv protoreflect.Value) bool {
				dropUnknown(mv.Message())
				return true
			})
		case fd.Message() != nil && !fd.IsList() && !fd.IsMap():
			dropUnknown(v.Message())
		}
		return true
	})
}
