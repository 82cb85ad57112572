package cli

import (
	"bytes"
	"encoding"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"reflect"
	"regexp"
	"strings"
	"testing"

	"github.com/superinstance/mesh/internal/billing"
	"github.com/superinstance/mesh/internal/client"
	"github.com/superinstance/mesh/internal/runner"
	"github.com/superinstance/mesh/workflows"
)

var snakeCase = regexp.MustCompile(`^[a-z][a-z0-9]*(_[a-z0-9]+)*$`)

// jsonNames reports every field of t that --json would print under a name
// that is not snake_case (a Go field name without a json tag, or a tag in
// another case).
func jsonNames(t reflect.Type, path string, seen map[reflect.Type]bool, bad *[]string) {
	for t.Kind() == reflect.Pointer || t.Kind() == reflect.Slice || t.Kind() == reflect.Array || t.Kind() == reflect.Map {
		t = t.Elem()
	}
	if t.Kind() != reflect.Struct || seen[t] {
		return
	}
	seen[t] = true
	if t.Implements(reflect.TypeFor[json.Marshaler]()) || t.Implements(reflect.TypeFor[encoding.TextMarshaler]()) ||
		reflect.PointerTo(t).Implements(reflect.TypeFor[json.Marshaler]()) {
		return // time.Time and the like print as one value
	}
	for i := range t.NumField() {
		f := t.Field(i)
		if !f.IsExported() && !f.Anonymous {
			continue
		}
		tag, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if tag == "-" {
			continue
		}
		if f.Anonymous && tag == "" {
			jsonNames(f.Type, path, seen, bad) // its fields are printed inline
			continue
		}
		name := tag
		if name == "" {
			name = f.Name
		}
		if !snakeCase.MatchString(name) {
			*bad = append(*bad, path+"."+f.Name+" as "+name)
		}
		jsonNames(f.Type, path+"."+f.Name, seen, bad)
	}
}

// What the --json flags print, by command.
var printed = map[string]any{
	"ask":                   askJSON{},
	"account show/create":   accountJSON{},
	"billing flush":         flushJSON{},
	"billing flushes":       []flushRow{},
	"balance":               client.Balance{},
	"usage":                 []client.UsageEvent{},
	"handover":              client.Handover{},
	"handover stuck":        []runner.HandoverRow{},
	"hubs":                  []hubRow{},
	"invite":                client.Invite{},
	"invite ls":             inviteList{},
	"invite revoke":         revoked{},
	"join":                  client.Joined{},
	"whoami":                client.Me{},
	"lora ls/show":          client.Adapter{},
	"lora rm":               loraRemoved{},
	"lora new":              loraWritten{},
	"price":                 priceJSON{},
	"stats":                 Stats{},
	"ca init/device enroll": certJSON{},
	"consensus state":       workflows.ConsensusState{},
	"stripe setup":          billing.SetupResult{},
}

func TestJSONFieldsAreSnakeCase(t *testing.T) {
	for cmd, v := range printed {
		var bad []string
		jsonNames(reflect.TypeOf(v), reflect.TypeOf(v).String(), map[reflect.Type]bool{}, &bad)
		for _, b := range bad {
			t.Errorf("si %s --json prints %s", cmd, b)
		}
	}
}

// The --json added to invite ls, invite revoke, lora rm, lora new and
// logout prints snake_case JSON, money in micro-dollars.
func TestNewJSONOutputs(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("HOME", dir)
	t.Setenv("XDG_CONFIG_HOME", dir)
	t.Setenv("SI_TOKEN", "si_alice")
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer si_alice" {
			w.WriteHeader(401)
			return
		}
		switch r.Method + " " + r.URL.Path {
		case "GET /v1/invites":
			_, _ = w.Write([]byte(`{"invites":[{"id":"inv_1","project":"p1","role":"editor","quota_micros":2000000,"state":"accepted"}]}`))
		case "GET /v1/projects/p1/guests":
			_, _ = w.Write([]byte(`{"guests":[{"session":"gs_1","project":"p1","role":"editor","quota_micros":2000000,"remaining_micros":1500000}]}`))
		case "POST /v1/invites/inv_1/revoke":
			_, _ = w.Write([]byte(`{"id":"inv_1","state":"revoked"}`))
		case "POST /v1/guests/gs_1/revoke":
			_, _ = w.Write([]byte(`{"session":"gs_1","state":"revoked"}`))
		case "DELETE /v1/adapters/lora_1":
			w.WriteHeader(204)
		default:
			http.NotFound(w, r)
		}
	}))
	defer api.Close()
	t.Setenv("SI_API_URL", api.URL)
	for _, tc := range []struct {
		args string
		want map[string]any
	}{
		{"invite ls --json", map[string]any{"invites": []any{}, "guests": []any{}}},
		{"invite revoke inv_1 --json", map[string]any{"invite_id": "inv_1", "state": "revoked"}},
		{"invite revoke gs_1 --json", map[string]any{"guest_session_id": "gs_1", "state": "revoked"}},
		{"lora rm lora_1 --json", map[string]any{"id": "lora_1", "removed": true}},
		{"lora new demo --size 0.01 --json", map[string]any{"name": "demo", "rank": 8.0}},
		{"logout --json", map[string]any{"logged_out": false}},
	} {
		var out, errb bytes.Buffer
		if code := Main(strings.Fields(tc.args), &out, &errb); code != 0 {
			t.Errorf("si %s: exit %d: %s", tc.args, code, errb.String())
			continue
		}
		var got map[string]any
		if err := json.Unmarshal(out.Bytes(), &got); err != nil {
			t.Errorf("si %s printed no JSON object: %v\n%s", tc.args, err, out.String())
			continue
		}
		for k, v := range tc.want {
			if _, isList := v.([]any); isList {
				if _, ok := got[k].([]any); !ok {
					t.Errorf("si %s: %q is not a list: %s", tc.args, k, out.String())
				}
				continue
			}
			if got[k] != v {
				t.Errorf("si %s: %q = %v, want %v\n%s", tc.args, k, got[k], v, out.String())
			}
		}
		if tc.args == "invite ls --json" && !strings.Contains(out.String(), `"remaining_micros": 1500000`) {
			t.Errorf("si invite ls --json does not list the guest's remaining quota in micro-dollars:\n%s", out.String())
		}
	}
}
