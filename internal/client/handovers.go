package client

import (
	"context"
	"net/url"
	"time"
)

// Handover is a handover of a project to a new owner, as the API shows it
// to its host or its recipient (Role says which the caller is).
type Handover struct {
	ID         string    `json:"id"`
	Project    string    `json:"project"`
	Host       string    `json:"host"`
	Recipient  string    `json:"recipient"`
	State      string    `json:"state"`
	NewOwner   string    `json:"new_owner,omitempty"`
	NewProject string    `json:"new_project,omitempty"`
	Schedule   string    `json:"subscription_schedule,omitempty"`
	Reminders  int       `json:"reminders"`
	Failure    string    `json:"failure,omitempty"`
	CreatedAt  time.Time `json:"created_at"`
	ExpiresAt  time.Time `json:"expires_at"`
	Role       string    `json:"role"`
	// PaymentURL: where the new owner saves a payment method to start
	// their plan (to the new owner, while awaiting_payment).
	PaymentURL string `json:"payment_url,omitempty"`
}

// StartHandover hands a project the token's account owns over to the
// recipient's email address.
func (c *Client) StartHandover(ctx context.Context, project, to string) (Handover, error) {
	var h Handover
	return h, c.do(ctx, "POST", "/v1/handovers", map[string]string{"project": project, "to": to}, &h)
}

// Handovers lists the handovers the account hosts or is offered.
func (c *Client) Handovers(ctx context.Context) ([]Handover, error) {
	var out struct {
		Handovers []Handover `json:"handovers"`
	}
	return out.Handovers, c.do(ctx, "GET", "/v1/handovers", nil, &out)
}

// CancelHandover cancels a pending handover the account hosts.
func (c *Client) CancelHandover(ctx context.Context, id string) (Handover, error) {
	var h Handover
	return h, c.do(ctx, "POST", "/v1/handovers/"+url.PathEscape(id)+"/cancel", nil, &h)
}

// AnswerHandover accepts (as the token's account, which must be the
// recipient's) or declines the handover a link's token names. The request
// goes to this client's API, never to the host a link names.
func (c *Client) AnswerHandover(ctx context.Context, token, answer string) (Handover, error) {
	var h Handover
	return h, c.do(ctx, "POST", "/handover/"+url.PathEscape(token), map[string]string{"answer": answer}, &h)
}

// Joined is an accepted invite: a guest session. Secret is the session's
// secret (the si_guest cookie), shown once; SessionID is its handle.
type Joined struct {
	Secret    string    `json:"guest_session"`
	SessionID string    `json:"session_id"`
	Project   string    `json:"project"`
	Role      string    `json:"role"`
	Host      string    `json:"host"`
	Remaining int64     `json:"remaining_micros"`
	ExpiresAt time.Time `json:"expires_at"`
	PageURL   string    `json:"page_url"`
}

// Join accepts the invite a link's token names and opens a guest session.
// The invite token alone is the credential: no API token is sent.
func (c *Client) Join(ctx context.Context, token string) (Joined, error) {
	anon := *c
	anon.Token, anon.GuestSession = "", ""
	var j Joined
	return j, anon.do(ctx, "POST", "/join/"+url.PathEscape(token), map[string]string{}, &j)
}
