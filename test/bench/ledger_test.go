package bench

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/superinstance/mesh/activities"
	"github.com/superinstance/mesh/internal/store"
	"github.com/superinstance/mesh/test/harness"
)

// ledgerClients is how many callers log usage (and, for the baseline,
// insert rows) at once: one consensus workflow's activity each, on its own
// account.
const ledgerClients = 4

// perClient is how many events (and inserts) each client makes per run.
const perClient = 600

// ledgerBatch is one round's usage as the consensus workflow bills it:
// Pathos, Logos and Ethos in one activities.Ledger.LogUsage call.
const ledgerBatch = 3

// BenchmarkLedger measures usage events logged per second through
// activities.Ledger.LogUsage (store.LogUsage, one transaction an event),
// a batch per round, against single-row INSERTs into a plain table on the
// same PostgreSQL with the same number of clients. Each side runs three
// times, alternating, and the median counts.
func BenchmarkLedger(b *testing.B) {
	st := harness.Store(b)
	ctx := context.Background()
	for i := range ledgerClients {
		id := fmt.Sprintf("bench-ledger-%d", i)
		harness.EnsureAccount(b, st, id)
		// Never suspended, never due for a flush that would not run here.
		if err := st.SetCeiling(ctx, id, 1<<60); err != nil {
			b.Fatal(err)
		}
		if _, err := st.SetFlushThreshold(ctx, id, 1<<60); err != nil {
			b.Fatal(err)
		}
	}
	if _, err := st.Pool.Exec(ctx, `CREATE TABLE bench_inserts (id text PRIMARY KEY, account_id text NOT NULL, amount bigint NOT NULL,
		created_at timestamptz NOT NULL DEFAULT now())`); err != nil {
		b.Fatal(err)
	}
	led := &activities.Ledger{Store: st}

	run := 0
	ledger := func() float64 {
		run++
		return parallel(b, func(client int) error {
			account := fmt.Sprintf("bench-ledger-%d", client)
			for n := 0; n < perClient; n += ledgerBatch {
				events := make([]store.Usage, ledgerBatch)
				for j := range events {
					events[j] = store.Usage{EventID: fmt.Sprintf("bench-%d-%d-%d/%d", run, client, n, j), Account: account,
						Project: "bench", Model: "si-simulator-small", PromptTokens: 900, CompletionTokens: 300}
				}
				if _, err := led.LogUsage(ctx, events); err != nil {
					return err
				}
			}
			return nil
		})
	}
	insert := func() float64 {
		run++
		return parallel(b, func(client int) error {
			for n := range perClient {
				if _, err := st.Pool.Exec(ctx, `INSERT INTO bench_inserts (id, account_id, amount) VALUES ($1, $2, $3)`,
					fmt.Sprintf("ins-%d-%d-%d", run, client, n), fmt.Sprintf("bench-ledger-%d", client), n); err != nil {
					return err
				}
			}
			return nil
		})
	}
	ledger() // warm up the pool and the caches
	insert()
	var l, p []float64
	for range 3 {
		l = append(l, ledger())
		p = append(p, insert())
	}
	le, pe := medianF(l), medianF(p)
	for i := range ledgerClients {
		bk, err := st.Books(ctx, fmt.Sprintf("bench-ledger-%d", i))
		if err != nil || !bk.Balanced() || bk.Charged <= 0 {
			b.Fatalf("books after the benchmark: %+v, %v", bk, err)
		}
	}
	record("ledger_events_per_s", le, fmt.Sprintf("usage events billed/s via Ledger.LogUsage, %d clients, %d events a call", ledgerClients, ledgerBatch))
	record("pg_insert_per_s", pe, fmt.Sprintf("single-row INSERTs/s into a plain table, same PostgreSQL, %d clients", ledgerClients))
	record("ledger_vs_insert_ratio", le/pe, "ledger events/s over plain inserts/s (target >= 0.5, goal >= 1.0)")
}

// parallel runs fn on ledgerClients goroutines and returns operations
// (perClient each) per second.
func parallel(b *testing.B, fn func(client int) error) float64 {
	b.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, ledgerClients)
	start := time.Now()
	for c := range ledgerClients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := fn(c); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
	return float64(ledgerClients*perClient) / elapsed.Seconds()
}

func medianF(v []float64) float64 {
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	return s[len(s)/2]
}
