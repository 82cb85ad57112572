package client

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/superinstance/mesh/workflows"
)

func TestReadEvents(t *testing.T) {
	in := ": ping\n\nevent: state\ndata: {\"a\":1}\n\nevent: state\r\ndata: x\r\ndata: y\r\n\r\ndata: plain\n\nid: 3\nretry: 10\n\nevent: end\ndata: {}\n\nevent: cut\ndata: half"
	var got []string
	if err := ReadEvents(strings.NewReader(in), func(e Event) error {
		got = append(got, e.Name+"="+string(e.Data))
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	want := []string{`state={"a":1}`, "state=x\ny", "message=plain", "end={}"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("events %q, want %q", got, want)
	}
}

func TestReadEventsBoundsAnEvent(t *testing.T) {
	big := "data: " + strings.Repeat("x", MaxEventBytes) + "\n\n"
	err := ReadEvents(strings.NewReader(big), func(Event) error { t.Fatal("an oversized event was delivered"); return nil })
	if !errors.Is(err, ErrEventTooLarge) {
		t.Fatalf("err = %v, want ErrEventTooLarge", err)
	}
	// Many data lines add up too.
	many := strings.Repeat("data: "+strings.Repeat("y", 1<<20)+"\n", 9) + "\n"
	if err := ReadEvents(strings.NewReader(many), func(Event) error { return nil }); !errors.Is(err, ErrEventTooLarge) {
		t.Fatalf("9 MiB in lines: err = %v", err)
	}
}

func FuzzReadEvents(f *testing.F) {
	f.Add([]byte("event: state\ndata: {}\n\n"))
	f.Add([]byte("data\n\n:\r\n\rdata: a\r\rx"))
	f.Fuzz(func(t *testing.T, b []byte) {
		_ = ReadEvents(strings.NewReader(string(b)), func(e Event) error {
			if len(e.Data) > MaxEventBytes {
				t.Fatalf("event of %d bytes", len(e.Data))
			}
			return nil
		})
	})
}

// A stream cut before the end is opened again; the API's 404 is not.
func TestFollowReconnectsAfterACut(t *testing.T) {
	calls := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls++
		if r.Header.Get("Authorization") != "Bearer si_t" {
			w.WriteHeader(401)
			return
		}
		if strings.Contains(r.URL.Path, "other") {
			w.WriteHeader(404)
			_, _ = w.Write([]byte(`{"error":{"code":"not_found","message":"no consensus other"}}`))
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		if calls == 1 {
			_, _ = w.Write([]byte("event: state\ndata: {\"status\":\"running\",\"steps\":1}\n\n"))
			return // cut
		}
		_, _ = w.Write([]byte("event: state\ndata: {\"status\":\"consensus\",\"steps\":3}\n\nevent: end\ndata: {}\n\n"))
	}))
	defer srv.Close()
	c, err := New(Credentials{APIURL: srv.URL, Token: "si_t"})
	if err != nil {
		t.Fatal(err)
	}
	var seen []int
	st, err := c.Follow(context.Background(), "consensus-1", func(s workflows.ConsensusState) { seen = append(seen, s.Steps) })
	if err != nil || st.Status != "consensus" || fmt.Sprint(seen) != "[1 3]" || calls != 2 {
		t.Fatalf("follow: %+v %v, seen %v after %d calls", st, err, seen, calls)
	}
	calls = 0
	if _, err := c.Follow(context.Background(), "other", func(workflows.ConsensusState) {}); !NotFound(err) || calls != 1 {
		t.Fatalf("follow of a hidden run: %v after %d calls", err, calls)
	}
}

// The token goes to the API only, never to the object store's URLs.
func TestPartsCarryNoToken(t *testing.T) {
	store := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "" || r.Header.Get("Cookie") != "" {
			t.Errorf("the object store got credentials: %v", r.Header)
		}
		w.Header().Set("ETag", `"e"`)
	}))
	defer store.Close()
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, `{"upload_id":"u","part_size_bytes":5242880,"parts":[{"number":1,"offset":0,"size_bytes":3,"url":"%s/k?partNumber=1"}]}`, store.URL)
	}))
	defer api.Close()
	c, _ := New(Credentials{APIURL: api.URL, Token: "si_secret"})
	up, err := c.UploadAdapter(context.Background(), strings.NewReader("abc"), 3, strings.Repeat("0", 64), UploadOptions{})
	if err != nil || len(up.Parts) != 1 || up.Parts[0].ETag != `"e"` {
		t.Fatalf("upload %+v, %v", up, err)
	}
	// A plan that does not cover the file is refused before any byte is sent.
	if _, err := c.UploadAdapter(context.Background(), strings.NewReader("abcd"), 4, strings.Repeat("0", 64), UploadOptions{}); err == nil {
		t.Fatal("a plan covering 3 of 4 bytes was accepted")
	}
}

// A guest whose session ended holds no token: the hint sends it back to its
// host for a new invite, never to si login; an account's client keeps the
// si login hint.
func TestUnauthorizedHintFitsTheCaller(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusUnauthorized)
		fmt.Fprint(w, `{"error":{"code":"unauthenticated","message":"your session has ended"}}`)
	}))
	defer srv.Close()
	guest, err := NewGuest(srv.URL, "si_gs_x")
	if err != nil {
		t.Fatal(err)
	}
	_, err = guest.Me(context.Background())
	if err == nil || strings.Contains(err.Error(), "si login") || !strings.Contains(err.Error(), "ask the host for a new invite") {
		t.Errorf("guest: %v", err)
	}
	account, err := New(Credentials{APIURL: srv.URL, Token: "si_x"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err = account.Me(context.Background()); err == nil || !strings.Contains(err.Error(), "run `si login` with a valid token") {
		t.Errorf("account: %v", err)
	}
}
