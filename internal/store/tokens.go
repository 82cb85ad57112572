package store

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"strings"

	"github.com/jackc/pgx/v5"
)

// TokenPrefix starts every API token.
const TokenPrefix = "si_"

// CreateAPIToken issues a token for account; only its hash is stored, so the
// returned token is the only copy.
func (s *Store) CreateAPIToken(ctx context.Context, account, name string) (string, error) {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	token := TokenPrefix + base64.RawURLEncoding.EncodeToString(b[:])
	sum := sha256.Sum256([]byte(token))
	_, err := s.Pool.Exec(ctx, `INSERT INTO api_tokens (hash, account_id, name) VALUES ($1, $2, $3)`, sum[:], account, name)
	if err != nil && strings.Contains(err.Error(), "api_tokens_account_id_fkey") {
		return "", ErrNotFound
	}
	return token, err
}

// AccountForToken returns the account a live token belongs to. The lookup is
// by the token's hash, so timing says nothing about stored tokens.
func (s *Store) AccountForToken(ctx context.Context, token string) (string, error) {
	if !strings.HasPrefix(token, TokenPrefix) || len(token) > 100 {
		return "", ErrNotFound
	}
	sum := sha256.Sum256([]byte(token))
	var account string
	err := s.Pool.QueryRow(ctx, `SELECT account_id FROM api_tokens WHERE hash = $1 AND revoked_at IS NULL`, sum[:]).Scan(&account)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", ErrNotFound
	}
	return account, err
}
