// Package token makes unguessable identifiers and secrets: a prefix and
// random bytes in lower-case base32, safe in URLs, file names and SQL ids.
package token

import (
	"crypto/rand"
	"encoding/base32"
)

var encoding = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// New returns prefix followed by n random bytes, encoded.
func New(prefix string, n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err) // crypto/rand does not fail on supported platforms
	}
	return prefix + encoding.EncodeToString(b)
}
