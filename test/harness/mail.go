package harness

import (
	"encoding/json"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/superinstance/mesh/internal/devstack"
	"github.com/superinstance/mesh/internal/mail"
	"github.com/superinstance/mesh/workers"
)

// tool returns the path of a helper binary built by `make tools`, or the
// one the environment variable env names.
func tool(t testing.TB, name, env string) string {
	t.Helper()
	bin := os.Getenv(env)
	if bin == "" {
		_, file, _, _ := runtime.Caller(0)
		bin = filepath.Join(filepath.Dir(file), "..", "..", "bin", name)
	}
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("%s not found at %s: run `make tools` (or set %s)", name, bin, env)
	}
	return bin
}

// Mailbox is the shared Mailpit server: SMTP in, messages read back over
// its API. Tests tell their messages apart by recipient.
type Mailbox struct {
	SMTP string
	URL  string
}

// Mailpit returns the test binary's Mailpit (built by `make tools`;
// SI_MAILPIT names another binary), started on first use and stopped when
// the tests end.
func Mailpit(t testing.TB) *Mailbox {
	t.Helper()
	bin := tool(t, "mailpit", "SI_MAILPIT")
	shared.mu.Lock()
	if shared.mailpit == nil {
		mp, err := devstack.StartMailpit(bin, "", "127.0.0.1:0", "127.0.0.1:0")
		if err != nil {
			shared.mu.Unlock()
			t.Fatal(err)
		}
		shared.mailpit = mp
		shared.stops = append(shared.stops, mp.Stop)
	}
	mp := shared.mailpit
	shared.mu.Unlock()
	return &Mailbox{SMTP: mp.SMTP, URL: mp.URL}
}

// Mailer sends through the mailbox.
func (m *Mailbox) Mailer() *mail.Mailer {
	return &mail.Mailer{Addr: m.SMTP, From: "SuperInstance <mesh@test.local>"}
}

// MailMessage is a received message.
type MailMessage struct {
	ID      string
	Subject string
	Text    string
	To      string
}

// Messages returns the messages sent to address, oldest first.
func (m *Mailbox) Messages(t testing.TB, address string) []MailMessage {
	t.Helper()
	var list struct {
		Messages []struct {
			ID      string
			Subject string
		}
	}
	m.get(t, "/api/v1/search?limit=200&query="+url.QueryEscape("to:"+address), &list)
	out := make([]MailMessage, 0, len(list.Messages))
	for i := len(list.Messages) - 1; i >= 0; i-- {
		var full struct {
			ID      string
			Subject string
			Text    string
			To      []struct{ Address string }
		}
		m.get(t, "/api/v1/message/"+url.PathEscape(list.Messages[i].ID), &full)
		msg := MailMessage{ID: full.ID, Subject: full.Subject, Text: full.Text}
		if len(full.To) > 0 {
			msg.To = full.To[0].Address
		}
		out = append(out, msg)
	}
	return out
}

// WaitFor waits until address has received n messages and returns them.
func (m *Mailbox) WaitFor(t testing.TB, address string, n int, limit time.Duration) []MailMessage {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		msgs := m.Messages(t, address)
		if len(msgs) >= n {
			return msgs
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s received %d messages in %s, want %d", address, len(msgs), limit, n)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (m *Mailbox) get(t testing.TB, path string, v any) {
	t.Helper()
	resp, err := http.Get(m.URL + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("mailpit %s: %s", path, resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatalf("mailpit %s: %v", path, err)
	}
}

// Link returns the first URL in text whose path contains /path/.
func Link(t testing.TB, text, path string) string {
	t.Helper()
	for _, f := range strings.Fields(text) {
		if strings.HasPrefix(f, "http") && strings.Contains(f, "/"+path+"/") {
			return f
		}
	}
	t.Fatalf("no /%s/ link in %q", path, text)
	return ""
}

// WithHandovers gives the cloud worker's handovers the mailbox, the mesh's
// object store (set WithAdapters first) and Stripe (set WithStripe first).
func WithHandovers(mb *Mailbox) func(*Mesh, *workers.Cloud) {
	return func(m *Mesh, c *workers.Cloud) {
		c.Handovers.Mailer = mb.Mailer()
		c.Handovers.PublicURL = "http://mesh.test"
		c.Handovers.Blob = m.Blob
		c.Handovers.Stripe = m.Stripe
	}
}
