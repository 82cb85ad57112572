package client

import (
	"context"
	"net/url"
	"time"
)

// Token is one of the account's API tokens as the API lists it: never the
// token itself. Current marks the one this client sends.
type Token struct {
	ID        string     `json:"id"`
	Name      string     `json:"name"`
	CreatedAt time.Time  `json:"created_at"`
	RevokedAt *time.Time `json:"revoked_at,omitempty"`
	Current   bool       `json:"current,omitempty"`
}

// Tokens lists the account's API tokens, revoked ones too.
func (c *Client) Tokens(ctx context.Context) ([]Token, error) {
	var out struct {
		Tokens []Token `json:"tokens"`
	}
	return out.Tokens, c.do(ctx, "GET", "/v1/tokens", nil, &out)
}

// RevokeToken revokes one of the account's API tokens by its id.
func (c *Client) RevokeToken(ctx context.Context, id string) (Token, error) {
	var t Token
	return t, c.do(ctx, "POST", "/v1/tokens/"+url.PathEscape(id)+"/revoke", nil, &t)
}
