package api_test

import (
	"context"
	"encoding/json"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/superinstance/mesh/internal/api"
	"github.com/superinstance/mesh/internal/money"
	"github.com/superinstance/mesh/internal/store"
	"github.com/superinstance/mesh/test/harness"
)

// TestTokensEndpoints: an account lists its own API tokens (never their
// values) and revokes one by its id, the one in use too, which is refused
// from the next request; another account sees none of them and cannot
// revoke them, a guest may do neither, a token is never taken in the URL,
// and a page on another origin cannot revoke with the browser's cookie.
func TestTokensEndpoints(t *testing.T) {
	st := harness.Store(t)
	ctx := context.Background()
	harness.EnsureAccount(t, st, "tk-alice")
	harness.EnsureAccount(t, st, "tk-bob")
	token := func(account, name string) string {
		t.Helper()
		tok, err := st.CreateAPIToken(ctx, account, name)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	laptop, ci, bob := token("tk-alice", "laptop"), token("tk-alice", "ci"), token("tk-bob", "")
	_, session, err := st.CreateBrowserSession(ctx, ci)
	if err != nil {
		t.Fatal(err)
	}
	// A guest of alice's, accepted straight in the store.
	_, invHash := store.NewSecret("si_inv_")
	if _, err := st.CreateInvite(ctx, store.Invite{ID: "inv_tk", TokenHash: invHash, Project: "tk-crew", Host: "tk-alice",
		Role: store.RoleEditor, Quota: money.Micros(1_000_000), ExpiresAt: time.Now().Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	guestSecret, guestHash := store.NewSecret(store.GuestSecretPrefix)
	if _, err := st.AcceptInvite(ctx, "inv_tk", "gs_tk", guestHash, time.Now()); err != nil {
		t.Fatal(err)
	}

	h := (&api.Server{Store: st, PublicURL: "https://mesh.example"}).Handler()
	do := func(method, path, token, cookie, origin string) *httptest.ResponseRecorder {
		req := httptest.NewRequest(method, path, nil)
		req.RemoteAddr = "10.2.0.1:1234"
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		if cookie != "" {
			req.Header.Set("Cookie", cookie)
		}
		if origin != "" {
			req.Header.Set("Origin", origin)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec
	}
	list := func(token string) []api.TokenInfo {
		t.Helper()
		rec := do("GET", "/v1/tokens", token, "", "")
		var out struct {
			Tokens []api.TokenInfo `json:"tokens"`
		}
		if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil || rec.Code != 200 {
			t.Fatalf("GET /v1/tokens: %d %s", rec.Code, rec.Body.String())
		}
		return out.Tokens
	}

	mine := list(laptop)
	if len(mine) != 2 || mine[0].Name != "laptop" || !mine[0].Current || mine[1].Current || mine[0].RevokedAt != nil {
		t.Fatalf("alice's tokens: %+v", mine)
	}
	rec := do("GET", "/v1/tokens", laptop, "", "")
	if body := rec.Body.String(); strings.Contains(body, laptop) || strings.Contains(body, ci) {
		t.Errorf("GET /v1/tokens shows a token: %s", body)
	}
	theirs := list(bob)
	if len(theirs) != 1 || theirs[0].ID == mine[0].ID || theirs[0].ID == mine[1].ID {
		t.Errorf("bob's tokens: %+v", theirs)
	}

	// Bob, a guest, a token in the URL, a page on another origin.
	if rec := do("POST", "/v1/tokens/"+mine[0].ID+"/revoke", bob, "", ""); rec.Code != 404 || errorCode(t, rec) != "not_found" {
		t.Errorf("bob revokes alice's token: %d %s", rec.Code, rec.Body.String())
	}
	guest := api.GuestCookie + "=" + guestSecret
	if rec := do("GET", "/v1/tokens", "", guest, ""); rec.Code != 403 {
		t.Errorf("a guest lists the host's tokens: %d %s", rec.Code, rec.Body.String())
	}
	if rec := do("POST", "/v1/tokens/"+mine[0].ID+"/revoke", "", guest, "https://mesh.example"); rec.Code != 403 || errorCode(t, rec) != "forbidden" {
		t.Errorf("a guest revokes the host's token: %d %s", rec.Code, rec.Body.String())
	}
	if rec := do("POST", "/v1/tokens/"+laptop+"/revoke", laptop, "", ""); rec.Code != 400 || errorCode(t, rec) != "invalid_request" {
		t.Errorf("a token in the URL: %d %s", rec.Code, rec.Body.String())
	}
	if rec := do("POST", "/v1/tokens/not-an-id/revoke", laptop, "", ""); rec.Code != 400 || errorCode(t, rec) != "invalid_request" {
		t.Errorf("a malformed id: %d %s", rec.Code, rec.Body.String())
	}
	// Through the browser session the ci token opened, that token is current.
	rec = do("GET", "/v1/tokens", "", api.SessionCookie+"="+session, "")
	if rec.Code != 200 {
		t.Fatalf("GET /v1/tokens with a cookie: %d %s", rec.Code, rec.Body.String())
	}
	var viaCookie struct {
		Tokens []api.TokenInfo `json:"tokens"`
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &viaCookie); err != nil || len(viaCookie.Tokens) != 2 || viaCookie.Tokens[0].Current || !viaCookie.Tokens[1].Current {
		t.Errorf("GET /v1/tokens with the ci token's session: %s", rec.Body.String())
	}
	browser := api.SessionCookie + "=" + session
	if rec := do("POST", "/v1/tokens/"+mine[0].ID+"/revoke", "", browser, "https://evil.example"); rec.Code != 403 || errorCode(t, rec) != "cross_origin" {
		t.Errorf("another origin revokes with alice's cookie: %d %s", rec.Code, rec.Body.String())
	}
	if rec := do("GET", "/v1/me", laptop, "", ""); rec.Code != 200 {
		t.Fatalf("after the refused revocations alice's token: %d %s", rec.Code, rec.Body.String())
	}

	// Alice revokes the token she is using, from her own token.
	rec = do("POST", "/v1/tokens/"+mine[0].ID+"/revoke", laptop, "", "")
	var got api.TokenInfo
	if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil || rec.Code != 200 || got.ID != mine[0].ID || !got.Current || got.RevokedAt == nil {
		t.Fatalf("alice revokes her token: %d %s", rec.Code, rec.Body.String())
	}
	if rec := do("GET", "/v1/me", laptop, "", ""); rec.Code != 401 {
		t.Errorf("a revoked token: %d %s", rec.Code, rec.Body.String())
	}
	rec = do("POST", "/v1/tokens/"+mine[0].ID+"/revoke", ci, "", "")
	var again api.TokenInfo
	if err := json.Unmarshal(rec.Body.Bytes(), &again); err != nil || rec.Code != 200 || again.RevokedAt == nil || !again.RevokedAt.Equal(*got.RevokedAt) || again.Current {
		t.Errorf("revoking it again: %d %s; want 200 with the first revocation's time", rec.Code, rec.Body.String())
	}
	after := list(ci)
	if len(after) != 2 || after[0].RevokedAt == nil || after[1].RevokedAt != nil || !after[1].Current {
		t.Errorf("after the revocation: %+v", after)
	}
	// From her own page, with the session the other token opened.
	if rec := do("POST", "/v1/tokens/"+mine[1].ID+"/revoke", "", browser, "https://mesh.example"); rec.Code != 200 {
		t.Fatalf("alice revokes from her own page: %d %s", rec.Code, rec.Body.String())
	}
	if rec := do("GET", "/v1/me", "", browser, ""); rec.Code != 401 {
		t.Errorf("the session of a revoked token: %d %s", rec.Code, rec.Body.String())
	}
	if rec := do("GET", "/v1/me", bob, "", ""); rec.Code != 200 {
		t.Errorf("bob's token after alice's were revoked: %d %s", rec.Code, rec.Body.String())
	}
}
