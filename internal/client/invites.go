package client

import (
	"context"
	"net/url"
	"time"
)

// InviteRequest invites a guest to a project, billed to the token's account.
type InviteRequest struct {
	Project string `json:"project"`
	Role    string `json:"role"`
	Quota   string `json:"quota"`   // dollars, e.g. "1.00"
	Expires string `json:"expires"` // a duration, e.g. "24h"
}

// Invite is an invite; Link and Token only when it was just created.
type Invite struct {
	ID        string    `json:"id"`
	Project   string    `json:"project"`
	Role      string    `json:"role"`
	Quota     int64     `json:"quota_micros"`
	State     string    `json:"state"`
	ExpiresAt time.Time `json:"expires_at"`
	Link      string    `json:"link,omitempty"`
	Token     string    `json:"token,omitempty"`
}

// Guest is a guest session of a project, as its owners and editors see it.
type Guest struct {
	Session   string    `json:"session"`
	Project   string    `json:"project"`
	Role      string    `json:"role"`
	Host      string    `json:"host"`
	Quota     int64     `json:"quota_micros"`
	Remaining int64     `json:"remaining_micros"`
	Since     time.Time `json:"since"`
	ExpiresAt time.Time `json:"expires_at"`
	// State is active, revoked or expired.
	State string `json:"state"`
}

// CreateInvite creates an invite and returns it with its one-click link.
func (c *Client) CreateInvite(ctx context.Context, r InviteRequest) (Invite, error) {
	var inv Invite
	return inv, c.do(ctx, "POST", "/v1/invites", r, &inv)
}

// Invites lists the account's invites.
func (c *Client) Invites(ctx context.Context) ([]Invite, error) {
	var out struct {
		Invites []Invite `json:"invites"`
	}
	return out.Invites, c.do(ctx, "GET", "/v1/invites", nil, &out)
}

// RevokeInvite revokes a pending invite.
func (c *Client) RevokeInvite(ctx context.Context, id string) (Invite, error) {
	var inv Invite
	return inv, c.do(ctx, "POST", "/v1/invites/"+url.PathEscape(id)+"/revoke", nil, &inv)
}

// RevokeGuest ends a guest session (gs_...) at once.
func (c *Client) RevokeGuest(ctx context.Context, id string) (Guest, error) {
	var g Guest
	return g, c.do(ctx, "POST", "/v1/guests/"+url.PathEscape(id)+"/revoke", nil, &g)
}

// ProjectGuests lists a project's guest sessions.
func (c *Client) ProjectGuests(ctx context.Context, project string) ([]Guest, error) {
	var out struct {
		Guests []Guest `json:"guests"`
	}
	return out.Guests, c.do(ctx, "GET", "/v1/projects/"+url.PathEscape(project)+"/guests", nil, &out)
}
