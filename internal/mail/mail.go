// Package mail sends the mesh's emails over SMTP: STARTTLS when the server
// offers it, PLAIN authentication when a user is configured (which net/smtp
// allows only over TLS or to localhost).
package mail

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"mime"
	"mime/quotedprintable"
	"net"
	"net/mail"
	"net/smtp"
	"strings"
	"time"
)

// Mailer sends messages through one SMTP server.
type Mailer struct {
	// Addr is the server's host:port.
	Addr string
	// From is the sender address.
	From string
	// User and Password authenticate when User is set.
	User, Password string
	// Timeout bounds one message's delivery. Default 30s.
	Timeout time.Duration
}

// Message is one plain-text email.
type Message struct {
	To      string
	Subject string
	Body    string
	// ID is the Message-ID's local part, so that a resent message is
	// recognisably the same one.
	ID string
}

// Send delivers m.
func (c *Mailer) Send(ctx context.Context, m Message) error {
	if c.Addr == "" {
		return errors.New("no SMTP server configured (--smtp-addr)")
	}
	from, err := mail.ParseAddress(c.From)
	if err != nil {
		return fmt.Errorf("sender %q: %w", c.From, err)
	}
	to, err := mail.ParseAddress(m.To)
	if err != nil {
		return fmt.Errorf("recipient %q: %w", m.To, err)
	}
	timeout := c.Timeout
	if timeout <= 0 {
		timeout = 30 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	host, _, err := net.SplitHostPort(c.Addr)
	if err != nil {
		return fmt.Errorf("SMTP address %q: %w", c.Addr, err)
	}
	conn, err := (&net.Dialer{}).DialContext(ctx, "tcp", c.Addr)
	if err != nil {
		return fmt.Errorf("SMTP server %s: %w", c.Addr, err)
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	sc, err := smtp.NewClient(conn, host)
	if err != nil {
		return fmt.Errorf("SMTP server %s: %w", c.Addr, err)
	}
	defer sc.Close()
	if ok, _ := sc.Extension("STARTTLS"); ok {
		if err := sc.StartTLS(&tls.Config{ServerName: host, MinVersion: tls.VersionTLS12}); err != nil {
			return fmt.Errorf("SMTP STARTTLS: %w", err)
		}
	}
	if c.User != "" {
		if err := sc.Auth(smtp.PlainAuth("", c.User, c.Password, host)); err != nil {
			return fmt.Errorf("SMTP authentication: %w", err)
		}
	}
	if err := sc.Mail(from.Address); err != nil {
		return fmt.Errorf("SMTP MAIL FROM: %w", err)
	}
	if err := sc.Rcpt(to.Address); err != nil {
		return fmt.Errorf("SMTP RCPT TO %s: %w", to.Address, err)
	}
	w, err := sc.Data()
	if err != nil {
		return fmt.Errorf("SMTP DATA: %w", err)
	}
	if _, err := w.Write(Render(from, to, m, time.Now())); err != nil {
		return err
	}
	if err := w.Close(); err != nil {
		return fmt.Errorf("SMTP DATA: %w", err)
	}
	return sc.Quit()
}

// Render builds the RFC 5322 message: headers and a quoted-printable body.
func Render(from, to *mail.Address, m Message, at time.Time) []byte {
	var b bytes.Buffer
	header := func(k, v string) { fmt.Fprintf(&b, "%s: %s\r\n", k, v) }
	header("From", from.String())
	header("To", to.String())
	header("Subject", encodeHeader(m.Subject))
	header("Date", at.Format(time.RFC1123Z))
	if id := strings.NewReplacer("\r", "", "\n", "", "<", "", ">", "").Replace(m.ID); id != "" {
		domain := "si.local"
		if i := strings.LastIndex(from.Address, "@"); i >= 0 {
			domain = from.Address[i+1:]
		}
		header("Message-ID", "<"+id+"@"+domain+">")
	}
	header("MIME-Version", "1.0")
	header("Content-Type", `text/plain; charset="utf-8"`)
	header("Content-Transfer-Encoding", "quoted-printable")
	b.WriteString("\r\n")
	qp := quotedprintable.NewWriter(&b)
	_, _ = qp.Write([]byte(strings.ReplaceAll(m.Body, "\n", "\r\n")))
	_ = qp.Close()
	return b.Bytes()
}

// encodeHeader keeps a header value on one line and encodes non-ASCII text.
func encodeHeader(s string) string {
	return mime.QEncoding.Encode("utf-8", strings.NewReplacer("\r", " ", "\n", " ").Replace(s))
}
