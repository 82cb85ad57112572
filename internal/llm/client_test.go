package llm

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestErrors(t *testing.T) {
	cases := []struct {
		status    int
		body      string
		msg       string
		temporary bool
	}{
		{400, `{"error":{"message":"bad model"}}`, "bad model", false},
		{404, `{"error":"no such model"}`, "no such model", false},
		{429, `{"message":"slow down"}`, "slow down", true},
		{503, `upstream down`, "upstream down", true},
	}
	for _, tc := range cases {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(tc.status)
			_, _ = w.Write([]byte(tc.body))
		}))
		_, err := (&Client{BaseURL: srv.URL}).Chat(context.Background(), Request{Model: "m"})
		srv.Close()
		var he *HTTPError
		if !errors.As(err, &he) || he.Status != tc.status || he.Message != tc.msg || he.Temporary() != tc.temporary {
			t.Errorf("%d: %v", tc.status, err)
		}
	}
}

func TestRequestShapeAndBounds(t *testing.T) {
	var auth, body string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		auth = r.Header.Get("Authorization")
		b := make([]byte, 4096)
		n, _ := r.Body.Read(b)
		body = string(b[:n])
		if r.URL.Path == "/v1/big/chat/completions" {
			_, _ = w.Write([]byte(`{"choices":[{"message":{"content":"` + strings.Repeat("x", MaxResponseBytes) + `"}}]}`))
			return
		}
		_, _ = w.Write([]byte(`{"model":"m","choices":[{"message":{"role":"assistant","content":"hi"}}],"usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4}}`))
	}))
	defer srv.Close()
	c := &Client{BaseURL: srv.URL + "/v1/", APIKey: "k"}
	r, err := c.Chat(context.Background(), Request{Model: "m", JSON: true, Messages: []Message{{Role: "user", Content: "q"}}})
	if err != nil || r.Text != "hi" || r.Usage.TotalTokens != 4 {
		t.Fatalf("%+v %v", r, err)
	}
	if auth != "Bearer k" || !strings.Contains(body, `"response_format":{"type":"json_object"}`) {
		t.Fatalf("auth %q body %s", auth, body)
	}
	if _, err := (&Client{BaseURL: srv.URL + "/v1/big"}).Chat(context.Background(), Request{Model: "m"}); err == nil ||
		!strings.Contains(err.Error(), "exceeds") {
		t.Fatalf("oversized response: %v", err)
	}
	if _, err := c.Chat(context.Background(), Request{}); err == nil {
		t.Fatal("a request without a model must fail")
	}
}

// A sampled call sends its temperature and seed; a call without a seed
// sends none, so servers that reject unknown fields see today's body.
func TestSeedAndTemperature(t *testing.T) {
	var bodies []map[string]any
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var b map[string]any
		_ = json.NewDecoder(r.Body).Decode(&b)
		bodies = append(bodies, b)
		_, _ = w.Write([]byte(`{"choices":[{"message":{"content":"hi"}}]}`))
	}))
	defer srv.Close()
	c := &Client{BaseURL: srv.URL + "/v1"}
	seed := int64(3)
	for _, req := range []Request{{Model: "m", Temperature: 0.7, Seed: &seed}, {Model: "m"}} {
		if _, err := c.Chat(context.Background(), req); err != nil {
			t.Fatal(err)
		}
	}
	if bodies[0]["seed"] != float64(3) || bodies[0]["temperature"] != 0.7 {
		t.Fatalf("sampled body %v", bodies[0])
	}
	if _, ok := bodies[1]["seed"]; ok || bodies[1]["temperature"] != float64(0) {
		t.Fatalf("unseeded body %v", bodies[1])
	}
}
