package activities

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"go.temporal.io/sdk/temporal"

	"github.com/superinstance/mesh/internal/store"
)

// deadStore is a store whose PostgreSQL does not answer: a port where
// nothing listens, with a user, password and database name that must never
// reach an error text.
func deadStore(t *testing.T) (*store.Store, []string) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().(*net.TCPAddr)
	l.Close()
	url := fmt.Sprintf("postgres://meshuser:s3cretpw@127.0.0.1:%d/meshdb?connect_timeout=2", addr.Port)
	pool, err := pgxpool.New(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return &store.Store{Pool: pool}, []string{"meshuser", "s3cretpw", "meshdb", "127.0.0.1", fmt.Sprint(addr.Port)}
}

// The account, guest and project checks say the ledger is unreachable, in a
// typed error a workflow can fail with, bounded in time, and without the
// database's address or credentials.
func TestChecksSayTheLedgerIsUnreachable(t *testing.T) {
	st, secrets := deadStore(t)
	r := &Records{Store: st}
	checks := map[string]func(context.Context) error{
		"account": func(ctx context.Context) error { return r.CheckAccount(ctx, "acme") },
		"guest":   func(ctx context.Context) error { _, err := r.CheckGuest(ctx, "gs_1", "acme"); return err },
		"project": func(ctx context.Context) error { return r.CheckProject(ctx, "acme", "proj") },
	}
	for name, check := range checks {
		t.Run(name, func(t *testing.T) {
			start := time.Now()
			err := check(context.Background())
			var ae *temporal.ApplicationError
			if !errors.As(err, &ae) || ae.Type() != ErrLedgerUnreachable || !strings.Contains(ae.Message(), "the ledger is unreachable") {
				t.Fatalf("error %v, want type %s saying the ledger is unreachable", err, ErrLedgerUnreachable)
			}
			if ae.NonRetryable() {
				t.Fatal("unreachable is final at once; want a short retry first")
			}
			if d := time.Since(start); d > 4*time.Second {
				t.Fatalf("the check took %s, over its bound %s", d, 3*time.Second)
			}
			for _, s := range secrets {
				if strings.Contains(ae.Message(), s) {
					t.Fatalf("the error names %q: %s", s, ae.Message())
				}
			}
		})
	}
}
