package client

import (
	"net/http"
	"net/http/httptest"
	"testing"
)

// A token si login stored for one mesh is never sent to another API: a
// --api-url or SI_API_URL naming another server (a lookalike, a local
// process on si dev's port) gets no stored token.
func TestStoredTokenGoesOnlyToItsAPI(t *testing.T) {
	t.Setenv("XDG_CONFIG_HOME", t.TempDir())
	const stored = "si_storedtokenformeshA"
	var got []string
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got = append(got, r.Header.Get("Authorization"))
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"kind":"account","account":"x"}`))
	}))
	defer other.Close()
	if _, err := SaveCredentials(Credentials{APIURL: "https://mesh-a.example.com", Token: stored, Source: SourceLogin}); err != nil {
		t.Fatal(err)
	}
	c, err := New(Credentials{APIURL: other.URL})
	if err == nil {
		_, _ = c.Me(t.Context())
	}
	for _, h := range got {
		if h == "Bearer "+stored {
			t.Fatalf("the token stored for https://mesh-a.example.com was sent to %s", other.URL)
		}
	}
	if err == nil {
		t.Fatalf("New for another API with only a stored token for https://mesh-a.example.com succeeded")
	}
	// The same API, however its URL is spelt, still uses the stored token.
	for _, u := range []string{"", "https://mesh-a.example.com", "https://mesh-a.example.com/", "HTTPS://Mesh-A.example.com"} {
		c, err := New(Credentials{APIURL: u})
		if err != nil || c.Token != stored {
			t.Errorf("New(%q): %v, token %q", u, err, c.Token)
		}
	}
	// A token of one's own goes wherever one says.
	if c, err := New(Credentials{APIURL: other.URL, Token: "si_mine"}); err != nil || c.Token != "si_mine" || c.BaseURL != other.URL {
		t.Errorf("own token: %v %+v", err, c)
	}
}
