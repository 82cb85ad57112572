package api_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/superinstance/mesh/internal/api"
	"github.com/superinstance/mesh/internal/simulator"
	"github.com/superinstance/mesh/test/harness"
)

// Uploads are bounded and checked before anything is signed; guests and
// callers without a token get nothing.
func TestAdapterUploadRequestsAreValidated(t *testing.T) {
	m := harness.StartMesh(t, simulator.Options{}, harness.WithAdapters(t, 2))
	m.Account(t, "alice")
	tok, err := m.Store.CreateAPIToken(context.Background(), "alice", "test")
	if err != nil {
		t.Fatal(err)
	}
	h := (&api.Server{Store: m.Store, Temporal: m.Client, Blob: m.Blob}).Handler()
	sum := strings.Repeat("0", 64)
	for name, tc := range map[string]struct {
		path, token, body string
		status            int
	}{
		"no token":           {"/v1/adapters/uploads", "", `{"sha256":"` + sum + `","size_bytes":10}`, http.StatusUnauthorized},
		"a path as checksum": {"/v1/adapters/uploads", tok, `{"sha256":"../../bob/x","size_bytes":10}`, http.StatusBadRequest},
		"upper-case hex":     {"/v1/adapters/uploads", tok, `{"sha256":"` + strings.Repeat("A", 64) + `","size_bytes":10}`, http.StatusBadRequest},
		"empty":              {"/v1/adapters/uploads", tok, `{"sha256":"` + sum + `","size_bytes":0}`, http.StatusBadRequest},
		"too large":          {"/v1/adapters/uploads", tok, fmt.Sprintf(`{"sha256":"%s","size_bytes":%d}`, sum, int64(api.MaxAdapterBytes)+1), http.StatusBadRequest},
		"tiny parts":         {"/v1/adapters/uploads", tok, `{"sha256":"` + sum + `","size_bytes":10,"part_size_bytes":1024}`, http.StatusBadRequest},
		"too many parts":     {"/v1/adapters/uploads", tok, fmt.Sprintf(`{"sha256":"%s","size_bytes":%d,"part_size_bytes":%d}`, sum, int64(10001)*(5<<20), 5<<20), http.StatusBadRequest},
		"unknown field":      {"/v1/adapters/uploads", tok, `{"sha256":"` + sum + `","size_bytes":10,"key":"adapters/bob/x"}`, http.StatusBadRequest},
		"owner in the body":  {"/v1/adapters", tok, `{"sha256":"` + sum + `","size_bytes":10,"name":"x","config":{},"owner":"bob"}`, http.StatusBadRequest},
		"bad config":         {"/v1/adapters", tok, `{"sha256":"` + sum + `","size_bytes":10,"name":"x","config":{"r":0}}`, http.StatusBadRequest},
		"control in a name":  {"/v1/adapters", tok, `{"sha256":"` + sum + `","size_bytes":10,"name":"a\u0007","config":{}}`, http.StatusBadRequest},
	} {
		if code, r := call(t, h, "POST", tc.path, tc.token, tc.body); code != tc.status {
			t.Errorf("%s: %d %+v, want %d", name, code, r.Error, tc.status)
		}
	}
	// Without an object store the routes say so.
	off := (&api.Server{Store: m.Store, Temporal: m.Client}).Handler()
	if code, r := call(t, off, "POST", "/v1/adapters/uploads", tok, `{"sha256":"`+sum+`","size_bytes":10}`); code != http.StatusServiceUnavailable || r.Error.Code != "adapters_off" {
		t.Errorf("no object store: %d %+v", code, r.Error)
	}
}
