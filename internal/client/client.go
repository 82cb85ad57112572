// Package client is the only way a customer's `si` reaches the mesh: the
// HTTP API with an API token (or a guest session), and the object store
// only through URLs the API presigned. It holds no Temporal, PostgreSQL or
// S3 credentials.
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// Client talks to one mesh's API as one account (or one guest).
type Client struct {
	// BaseURL is the API's base, e.g. http://127.0.0.1:9464.
	BaseURL string
	// Token is the account's API token (si_...).
	Token string
	// GuestSession, when set, is sent instead of Token: the caller is that
	// session's guest and its host pays.
	GuestSession string
	// HTTP sends API requests; nil means a client with no overall timeout
	// (event streams and registrations are long), bounded per call by ctx.
	HTTP *http.Client
	// Storage sends the upload's parts to the presigned URLs; it never
	// carries the token. Nil means a client tuned for parallel parts.
	Storage *http.Client
}

// Error is an answer of the API's error shape.
type Error struct {
	Status  int
	Code    string
	Message string
}

func (e *Error) Error() string {
	if e.Message == "" {
		return fmt.Sprintf("the API answered %d %s", e.Status, http.StatusText(e.Status))
	}
	return e.Message
}

// NotFound reports whether err is the API's 404.
func NotFound(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.Status == http.StatusNotFound
}

// New returns a client for the credential; empty fields of c are taken from
// the stored credentials (si login, or the running si dev's): a token given
// alone talks to the stored API, else to DefaultAPIURL.
func New(c Credentials) (*Client, error) {
	if c.Token == "" || c.APIURL == "" {
		stored, err := LoadCredentials()
		switch {
		case err == nil && c.Token == "" && c.APIURL != "" && !sameAPI(c.APIURL, stored.APIURL):
			// The stored token is for another mesh: it never leaves for
			// an API it was not issued by.
			return nil, fmt.Errorf("the token si login stored is for %s, not %s: run si login --api-url %s, or set SI_TOKEN",
				stored.APIURL, c.APIURL, c.APIURL)
		case err == nil && c.Token == "":
			c.Token = stored.Token
			if c.APIURL == "" {
				c.APIURL = stored.APIURL
			}
		case err == nil:
			c.APIURL = stored.APIURL // a token of its own, for the same mesh
		case c.Token == "":
			return nil, err
		}
	}
	if c.APIURL == "" {
		c.APIURL = DefaultAPIURL
	}
	u, err := url.Parse(c.APIURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("API URL %q is not an http(s) URL: pass --api-url https://mesh.example.com", c.APIURL)
	}
	return &Client{BaseURL: strings.TrimRight(c.APIURL, "/"), Token: c.Token}, nil
}

// sameAPI reports whether two API URLs name the same server: scheme and
// host compared without case, path without a trailing slash.
func sameAPI(a, b string) bool {
	ua, err1 := url.Parse(strings.TrimRight(a, "/"))
	ub, err2 := url.Parse(strings.TrimRight(b, "/"))
	if err1 != nil || err2 != nil {
		return false
	}
	return strings.EqualFold(ua.Scheme, ub.Scheme) && strings.EqualFold(ua.Host, ub.Host) && ua.Path == ub.Path
}

// NewGuest returns a client that acts as a guest session (si join opens
// one): its host pays, and it sees only the session's project. An empty
// apiURL is the stored credentials' API, else DefaultAPIURL.
func NewGuest(apiURL, session string) (*Client, error) {
	if apiURL == "" {
		if stored, err := LoadCredentials(); err == nil {
			apiURL = stored.APIURL
		}
	}
	c, err := New(Credentials{APIURL: apiURL, Token: "-"})
	if err != nil {
		return nil, err
	}
	c.Token, c.GuestSession = "", session
	return c, nil
}

func (c *Client) httpClient() *http.Client {
	if c.HTTP != nil {
		return c.HTTP
	}
	return http.DefaultClient
}

func (c *Client) request(ctx context.Context, method, path string, body any) (*http.Request, error) {
	var r io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		r = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.BaseURL+path, r)
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	switch {
	case c.GuestSession != "":
		req.AddCookie(&http.Cookie{Name: "si_guest", Value: c.GuestSession})
	case c.Token != "":
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	return req, nil
}

// maxAnswer bounds an API answer (not an event stream).
const maxAnswer = 32 << 20

func (c *Client) send(req *http.Request) (*http.Response, error) {
	resp, err := c.httpClient().Do(req)
	if err != nil {
		if req.Context().Err() != nil {
			return nil, req.Context().Err()
		}
		return nil, fmt.Errorf("cannot reach the mesh API at %s (is it running? `si dev` serves one; `si login --api-url` points elsewhere): %w", c.BaseURL, err)
	}
	if resp.StatusCode >= 400 {
		defer resp.Body.Close()
		return nil, decodeError(resp)
	}
	return resp, nil
}

func decodeError(resp *http.Response) error {
	var e struct {
		Error struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	_ = json.Unmarshal(b, &e)
	out := &Error{Status: resp.StatusCode, Code: e.Error.Code, Message: e.Error.Message}
	if out.Status == http.StatusUnauthorized && out.Message != "" {
		// A guest has no token to log in with: its way back is a new invite.
		if resp.Request != nil && hasCookie(resp.Request, "si_guest") {
			out.Message += ": ask the host for a new invite link and run si join with it"
		} else {
			out.Message += ": run `si login` with a valid token"
		}
	}
	return out
}

func hasCookie(r *http.Request, name string) bool {
	_, err := r.Cookie(name)
	return err == nil
}

// do sends a JSON request and decodes a JSON answer into out (if not nil).
func (c *Client) do(ctx context.Context, method, path string, body, out any) error {
	req, err := c.request(ctx, method, path, body)
	if err != nil {
		return err
	}
	resp, err := c.send(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if out == nil || resp.StatusCode == http.StatusNoContent {
		return nil
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxAnswer)).Decode(out); err != nil {
		return fmt.Errorf("the API's answer to %s %s is not valid: %w", method, path, err)
	}
	return nil
}

// Me is who the credential names.
type Me struct {
	Kind    string `json:"kind"`
	Account string `json:"account,omitempty"`
	Guest   *struct {
		Project string `json:"project"`
		Role    string `json:"role"`
		Host    string `json:"host"`
	} `json:"guest,omitempty"`
}

// Me asks the API who the credential names.
func (c *Client) Me(ctx context.Context) (Me, error) {
	var m Me
	return m, c.do(ctx, "GET", "/v1/me", nil, &m)
}

// Balance is the account's standing.
type Balance struct {
	Account         string `json:"account"`
	Status          string `json:"status"`
	SuspendedReason string `json:"suspended_reason,omitempty"`
	Credits         int64  `json:"credits_micros"`
	Unbilled        int64  `json:"unbilled_micros"`
	CreditCeiling   int64  `json:"credit_ceiling_micros"`
	Tier            string `json:"tier"`
}

// Balance reads the account's balance.
func (c *Client) Balance(ctx context.Context) (Balance, error) {
	var b Balance
	return b, c.do(ctx, "GET", "/v1/balance", nil, &b)
}

// UsageEvent is one charged inference call.
type UsageEvent struct {
	EventID          string    `json:"event_id"`
	Project          string    `json:"project"`
	GuestSession     string    `json:"guest_session,omitempty"`
	Model            string    `json:"model"`
	PromptTokens     int64     `json:"prompt_tokens"`
	CompletionTokens int64     `json:"completion_tokens"`
	Charged          int64     `json:"charged_micros"`
	CreditsApplied   int64     `json:"credits_applied_micros"`
	At               time.Time `json:"at"`
}

// Usage lists the account's usage events since the given duration ago, newest first.
func (c *Client) Usage(ctx context.Context, since time.Duration, limit int) ([]UsageEvent, error) {
	var out struct {
		Events []UsageEvent `json:"events"`
	}
	q := url.Values{"since": {since.String()}, "limit": {fmt.Sprint(limit)}}
	return out.Events, c.do(ctx, "GET", "/v1/usage?"+q.Encode(), nil, &out)
}
