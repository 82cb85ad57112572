package mail

import (
	"bytes"
	"context"
	"net/mail"
	"strings"
	"testing"
	"time"
)

func headerLines(msg []byte) []string {
	head, _, _ := bytes.Cut(msg, []byte("\r\n\r\n"))
	return strings.Split(string(head), "\r\n")
}

func TestRender(t *testing.T) {
	from := &mail.Address{Name: "SuperInstance", Address: "mesh@example.com"}
	to := &mail.Address{Address: "ada@example.com"}
	msg := Render(from, to, Message{Subject: "Projekt über", Body: "line one\nline two", ID: "ho_x.offer"}, time.Unix(0, 0))
	lines := headerLines(msg)
	want := map[string]string{
		"From":       `"SuperInstance" <mesh@example.com>`,
		"To":         "<ada@example.com>",
		"Subject":    "=?utf-8?q?Projekt_=C3=BCber?=",
		"Message-ID": "<ho_x.offer@example.com>",
	}
	for _, l := range lines {
		k, v, _ := strings.Cut(l, ": ")
		if w, ok := want[k]; ok {
			if v != w {
				t.Errorf("%s: %q, want %q", k, v, w)
			}
			delete(want, k)
		}
	}
	if len(want) != 0 {
		t.Fatalf("headers missing: %v in\n%s", want, msg)
	}
	if !bytes.HasSuffix(msg, []byte("line one\r\nline two")) {
		t.Fatalf("body: %q", msg)
	}
}

func TestSendRefusesBadAddresses(t *testing.T) {
	m := &Mailer{Addr: "127.0.0.1:1", From: "mesh@example.com"}
	if err := m.Send(context.Background(), Message{To: "not an address"}); err == nil || !strings.Contains(err.Error(), "recipient") {
		t.Fatalf("bad recipient: %v", err)
	}
	if err := (&Mailer{}).Send(context.Background(), Message{To: "a@b.c"}); err == nil || !strings.Contains(err.Error(), "--smtp-addr") {
		t.Fatalf("no server: %v", err)
	}
	if err := m.Send(context.Background(), Message{To: "a@b.c"}); err == nil || !strings.Contains(err.Error(), "127.0.0.1:1") {
		t.Fatalf("unreachable server: %v", err)
	}
}

// No subject or message id can add a header line or end the headers early.
func FuzzRenderHeaders(f *testing.F) {
	f.Add("hello", "id")
	f.Add("a\r\nBcc: eve@example.com", "x\r\n\r\nbody")
	f.Add("\n\n\r", "über")
	from := &mail.Address{Address: "mesh@example.com"}
	to := &mail.Address{Address: "ada@example.com"}
	f.Fuzz(func(t *testing.T, subject, id string) {
		msg := Render(from, to, Message{Subject: subject, ID: id, Body: "b"}, time.Unix(0, 0))
		lines := headerLines(msg)
		want := 7
		if strings.ContainsFunc(id, func(r rune) bool { return !strings.ContainsRune("\r\n<>", r) }) {
			want++
		}
		if len(lines) != want {
			t.Fatalf("%d header lines:\n%q", len(lines), lines)
		}
		for _, l := range lines {
			if strings.ContainsAny(l, "\r\n") {
				t.Fatalf("header line %q", l)
			}
		}
	})
}
