package agent

import (
	"math/rand/v2"
	"time"
)

// Backoff spaces reconnection attempts: exponential from Min to Max with
// equal jitter, so attempt n waits between half and all of min(Max, Min·2ⁿ).
// The zero value uses 200ms and 3s: capped at a few seconds, a hub is back
// within a few seconds of the network, however long it was down.
type Backoff struct {
	Min, Max time.Duration
	// Rand returns a number in [0, 1); nil uses math/rand.
	Rand    func() float64
	attempt int
}

// Next is the wait before the next attempt.
func (b *Backoff) Next() time.Duration {
	lo, hi := b.Min, b.Max
	if lo <= 0 {
		lo = 200 * time.Millisecond
	}
	if hi <= 0 {
		hi = 3 * time.Second
	}
	d := hi
	if b.attempt < 30 {
		if x := lo << b.attempt; x < hi {
			d = x
		}
	}
	b.attempt++
	r := rand.Float64
	if b.Rand != nil {
		r = b.Rand
	}
	return d/2 + time.Duration(r()*float64(d/2))
}

// Bound is the longest wait the next attempt can have.
func (b *Backoff) Bound() time.Duration {
	c := *b
	c.Rand = func() float64 { return 1 }
	return c.Next()
}

// Reset starts over after a successful connection.
func (b *Backoff) Reset() { b.attempt = 0 }
