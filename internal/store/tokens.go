package store

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/superinstance/mesh/internal/token"
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

// NewSecret returns a fresh secret with prefix (256 random bits) and its
// SHA-256, the only form in which the mesh keeps it.
func NewSecret(prefix string) (string, []byte) {
	secret := token.New(prefix, 32)
	h := sha256.Sum256([]byte(secret))
	return secret, h[:]
}

// BrowserSessionPrefix starts every browser session id.
const BrowserSessionPrefix = "si_bs_"

// BrowserSessionLifetime is how long a browser session lasts.
const BrowserSessionLifetime = 7 * 24 * time.Hour

// CreateBrowserSession opens a browser session for the account of a live API
// token and returns the account and the session's id, the only copy (the
// store keeps its SHA-256). The session lasts no longer than the token: it
// ends when the token is revoked. An unknown or revoked token is
// ErrNotFound.
func (s *Store) CreateBrowserSession(ctx context.Context, token string) (account, id string, err error) {
	if !strings.HasPrefix(token, TokenPrefix) || len(token) > 100 {
		return "", "", ErrNotFound
	}
	sum := sha256.Sum256([]byte(token))
	id, h := NewSecret(BrowserSessionPrefix)
	err = s.Pool.QueryRow(ctx, `INSERT INTO browser_sessions (hash, account_id, expires_at, token_hash)
		SELECT $1, account_id, $2, hash FROM api_tokens WHERE hash = $3 AND revoked_at IS NULL
		RETURNING account_id`, h, time.Now().Add(BrowserSessionLifetime), sum[:]).Scan(&account)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", "", ErrNotFound
	}
	if err != nil {
		return "", "", err
	}
	return account, id, nil
}

// AccountForBrowserSession returns the account of a live browser session; an
// unknown, malformed, revoked or expired id, or one whose API token was
// revoked, is ErrNotFound.
func (s *Store) AccountForBrowserSession(ctx context.Context, id string) (string, error) {
	h, ok := linkTokenHash(id, BrowserSessionPrefix)
	if !ok {
		return "", ErrNotFound
	}
	var account string
	err := s.Pool.QueryRow(ctx, `SELECT b.account_id FROM browser_sessions b JOIN api_tokens t ON t.hash = b.token_hash
		WHERE b.hash = $1 AND b.revoked_at IS NULL AND b.expires_at > now() AND t.revoked_at IS NULL`, h).Scan(&account)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", ErrNotFound
	}
	return account, err
}

// RevokeBrowserSession ends a browser session (a malformed or unknown id is
// no error: there is nothing to end).
func (s *Store) RevokeBrowserSession(ctx context.Context, id string) error {
	h, ok := linkTokenHash(id, BrowserSessionPrefix)
	if !ok {
		return nil
	}
	_, err := s.Pool.Exec(ctx, `UPDATE browser_sessions SET revoked_at = now() WHERE hash = $1 AND revoked_at IS NULL`, h)
	return err
}

// AccountEmail returns an account's email, "" when it has none.
func (s *Store) AccountEmail(ctx context.Context, account string) (string, error) {
	var email string
	err := s.Pool.QueryRow(ctx, `SELECT coalesce(email, '') FROM accounts WHERE id = $1`, account).Scan(&email)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", ErrNotFound
	}
	return email, err
}
