package store

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
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

// APIToken is an API token as the store keeps it: never the token itself.
type APIToken struct {
	// ID names the token: the first 12 hex digits of its SHA-256.
	ID        string
	Name      string
	CreatedAt time.Time
	RevokedAt *time.Time
}

// tokenIDLen is how many hex digits of a token's hash name it.
const tokenIDLen = 12

// TokenID is the id APITokens lists for token.
func TokenID(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])[:tokenIDLen]
}

// ErrTokenNotFound is a token id (or token) that names none of the
// account's tokens.
var ErrTokenNotFound = errors.New("no such token")

// ErrBadTokenID is a token id that is not 12 hex digits.
var ErrBadTokenID = errors.New("a token id is 12 hex digits")

// ErrAmbiguousTokenID is a token id that names more than one of the
// account's tokens (their hashes share 48 bits); the token itself names one.
var ErrAmbiguousTokenID = errors.New("the token id names more than one token")

// APITokens lists an account's API tokens, oldest first, revoked ones too.
// An unknown account is ErrNotFound.
func (s *Store) APITokens(ctx context.Context, account string) ([]APIToken, error) {
	rows, err := s.Pool.Query(ctx, `SELECT left(encode(t.hash, 'hex'), $2), t.name, t.created_at, t.revoked_at
		FROM accounts a LEFT JOIN api_tokens t ON t.account_id = a.id WHERE a.id = $1 ORDER BY t.created_at, t.hash`, account, tokenIDLen)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	found := false
	var out []APIToken
	for rows.Next() {
		found = true
		var id, name *string
		var created *time.Time
		var t APIToken
		if err := rows.Scan(&id, &name, &created, &t.RevokedAt); err != nil {
			return nil, err
		}
		if id == nil { // the account, with no token
			continue
		}
		t.ID, t.Name, t.CreatedAt = *id, *name, *created
		out = append(out, t)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	if !found {
		return nil, ErrNotFound
	}
	return out, nil
}

// RevokeAPIToken revokes one of account's API tokens, named by its ID (as
// APITokens lists it) or by the token itself, and returns it; the browser
// sessions opened with it end with it. Revoking a revoked token changes
// nothing. A token of another account is ErrTokenNotFound; an id that is
// not 12 hex digits is ErrBadTokenID, one that names more than one of the
// account's tokens ErrAmbiguousTokenID (and revokes none).
func (s *Store) RevokeAPIToken(ctx context.Context, account, idOrToken string) (APIToken, error) {
	var t APIToken
	where := `left(encode(hash, 'hex'), $3) = $2`
	arg := any(strings.ToLower(idOrToken))
	if strings.HasPrefix(idOrToken, TokenPrefix) {
		if len(idOrToken) > 100 {
			return t, ErrTokenNotFound
		}
		sum := sha256.Sum256([]byte(idOrToken))
		where, arg = `hash = $2`, sum[:]
	} else if len(idOrToken) != tokenIDLen || strings.Trim(strings.ToLower(idOrToken), "0123456789abcdef") != "" {
		return t, ErrBadTokenID
	}
	tx, err := s.Pool.Begin(ctx)
	if err != nil {
		return t, err
	}
	defer func() { _ = tx.Rollback(ctx) }()
	rows, err := tx.Query(ctx, `UPDATE api_tokens SET revoked_at = coalesce(revoked_at, now())
		WHERE account_id = $1 AND `+where+` RETURNING left(encode(hash, 'hex'), $3), name, created_at, revoked_at`, account, arg, tokenIDLen)
	if err != nil {
		return t, err
	}
	n := 0
	for rows.Next() {
		n++
		if err := rows.Scan(&t.ID, &t.Name, &t.CreatedAt, &t.RevokedAt); err != nil {
			rows.Close()
			return APIToken{}, err
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return APIToken{}, err
	}
	switch {
	case n == 0:
		return APIToken{}, ErrTokenNotFound
	case n > 1:
		return APIToken{}, ErrAmbiguousTokenID
	}
	return t, tx.Commit(ctx)
}

// AccountForToken returns the account a live token belongs to. The lookup is
// by the token's hash, so timing says nothing about stored tokens.
func (s *Store) AccountForToken(ctx context.Context, token string) (string, error) {
	return s.tokenAccount(ctx, token, `AND revoked_at IS NULL`)
}

// TokenAccount returns the account a token belongs to, live or revoked.
func (s *Store) TokenAccount(ctx context.Context, token string) (string, error) {
	return s.tokenAccount(ctx, token, ``)
}

// tokenAccount looks token up by its hash, the row also meeting and.
func (s *Store) tokenAccount(ctx context.Context, token, and string) (string, error) {
	if !strings.HasPrefix(token, TokenPrefix) || len(token) > 100 {
		return "", ErrNotFound
	}
	sum := sha256.Sum256([]byte(token))
	var account string
	err := s.Pool.QueryRow(ctx, `SELECT account_id FROM api_tokens WHERE hash = $1 `+and, sum[:]).Scan(&account)
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

// AccountForBrowserSession returns the account of a live browser session
// and the id of the API token it was opened with (as APITokens lists it);
// an unknown, malformed, revoked or expired id, or one whose API token was
// revoked, is ErrNotFound.
func (s *Store) AccountForBrowserSession(ctx context.Context, id string) (account, tokenID string, err error) {
	h, ok := linkTokenHash(id, BrowserSessionPrefix)
	if !ok {
		return "", "", ErrNotFound
	}
	err = s.Pool.QueryRow(ctx, `SELECT b.account_id, left(encode(t.hash, 'hex'), $2) FROM browser_sessions b JOIN api_tokens t ON t.hash = b.token_hash
		WHERE b.hash = $1 AND b.revoked_at IS NULL AND b.expires_at > now() AND t.revoked_at IS NULL`, h, tokenIDLen).Scan(&account, &tokenID)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", "", ErrNotFound
	}
	return account, tokenID, err
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
