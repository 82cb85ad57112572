package store_test

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/superinstance/mesh/internal/money"
	"github.com/superinstance/mesh/internal/store"
	"github.com/superinstance/mesh/test/harness"
)

// TestLogUsageBatchMatchesLogUsage feeds the same random batches (guests,
// holds real and made up, duplicates within and across batches, ceilings
// that suspend mid-batch) to two identical accounts, one event at a time
// to the first and as one batch to the second, and wants the same charges,
// the same refusals, and the same accounts, sessions, holds and books.
func TestLogUsageBatchMatchesLogUsage(t *testing.T) {
	s := harness.Store(t)
	ctx := context.Background()
	r := rand.New(rand.NewPCG(3, 5))
	for _, id := range []string{"one-by-one", "batched"} {
		harness.EnsureAccount(t, s, id)
		if err := s.SetCeiling(ctx, id, 40*money.Cent); err != nil {
			t.Fatal(err)
		}
		if _, err := s.AddCredits(ctx, id, 3*money.Cent, "grant"); err != nil {
			t.Fatal(err)
		}
		h := sha256.Sum256([]byte("batch-" + id))
		if _, err := s.CreateInvite(ctx, store.Invite{ID: "inv-" + id, TokenHash: h[:], Project: "p-" + id, Host: id, Role: store.RoleEditor,
			Quota: 10 * money.Cent, ExpiresAt: time.Now().Add(time.Hour)}); err != nil {
			t.Fatal(err)
		}
		if _, err := s.AcceptInvite(ctx, "inv-"+id, "gs-"+id, secretHash("gs-"+id), time.Now()); err != nil {
			t.Fatal(err)
		}
		for _, g := range []string{"", "gs-" + id} {
			hid := "h-" + id
			if g != "" {
				hid = "h-gs-" + id
			}
			if _, err := s.ReserveHold(ctx, store.HoldRequest{ID: hid, Account: id, GuestSession: g, Target: money.Cent, TTL: time.Hour}); err != nil {
				t.Fatal(err)
			}
		}
	}
	seq := 0
	seen := map[string]int{}
	defer func() { t.Logf("outcomes: %v", seen) }()
	for batch := range 60 {
		n := 1 + r.IntN(8)
		var one, many []store.Usage
		for range n {
			seq++
			ev := seq
			if seq > 3 && r.IntN(6) == 0 {
				ev = seq - 1 - r.IntN(3) // a copy of a recent event
			}
			guest := r.IntN(3) == 0
			hold := []string{"", "h-", "h-gs-", "h-none-"}[r.IntN(4)]
			model := []string{"si-simulator-small", "si-simulator-large", "llama-70b"}[r.IntN(3)]
			pt, ct := r.Int64N(20_000), r.Int64N(4_000)
			for _, acct := range []string{"one-by-one", "batched"} {
				u := store.Usage{EventID: fmt.Sprintf("%s/%d", acct, ev), Account: acct, Project: "p", Model: model, PromptTokens: pt, CompletionTokens: ct}
				if guest {
					u.GuestSession = "gs-" + acct
				}
				if hold != "" {
					u.Hold = hold + acct
				}
				if acct == "batched" {
					many = append(many, u)
				} else {
					one = append(one, u)
				}
			}
		}
		var want []store.Charge
		var wantErr error
		for _, u := range one {
			c, err := s.LogUsage(ctx, u)
			if err != nil {
				wantErr = err
				break
			}
			want = append(want, c)
		}
		got, err := s.LogUsageBatch(ctx, many)
		seen[fmt.Sprintf("%T", err)]++
		for _, c := range got {
			switch {
			case c.Duplicate:
				seen["duplicate"]++
			case c.GuestCapped:
				seen["capped"]++
			case c.Suspended:
				seen["suspended"]++
			}
		}
		if (err == nil) != (wantErr == nil) || (err != nil && err.Error() != wantErr.Error()) {
			// The messages name the account; compare their kinds.
			var se1, se2 *store.SuspendedError
			var qe1, qe2 *store.GuestQuotaError
			if !(errors.As(err, &se1) && errors.As(wantErr, &se2)) && !(errors.As(err, &qe1) && errors.As(wantErr, &qe2)) {
				t.Fatalf("batch %d: error %v, one by one %v", batch, err, wantErr)
			}
		}
		if len(got) != len(want) {
			t.Fatalf("batch %d: %d charges, one by one %d (%v)", batch, len(got), len(want), wantErr)
		}
		for i := range got {
			g, w := got[i], want[i]
			g.EventID, w.EventID = "", ""
			if g != w {
				t.Fatalf("batch %d event %d:\n batch      %+v\n one by one %+v", batch, i, got[i], want[i])
			}
		}
		a1, _ := s.AccountByID(ctx, "one-by-one")
		a2, _ := s.AccountByID(ctx, "batched")
		g1, _ := s.GuestSessionByID(ctx, "gs-one-by-one")
		g2, _ := s.GuestSessionByID(ctx, "gs-batched")
		b1, _ := s.Books(ctx, "one-by-one")
		b2, _ := s.Books(ctx, "batched")
		if a1.Credits != a2.Credits || a1.Unbilled != a2.Unbilled || a1.Status != a2.Status || a1.SuspendedReason != a2.SuspendedReason ||
			g1.Remaining != g2.Remaining || b1 != b2 || !b2.Balanced() {
			t.Fatalf("batch %d: accounts %+v / %+v, sessions %s / %s, books %+v / %+v", batch, a1, a2, g1.Remaining, g2.Remaining, b1, b2)
		}
		for _, h := range []string{"h-", "h-gs-"} {
			h1, _ := s.HoldByID(ctx, h+"one-by-one")
			h2, _ := s.HoldByID(ctx, h+"batched")
			if h1.Settled != h2.Settled {
				t.Fatalf("batch %d: hold %s settled %s / %s", batch, h, h1.Settled, h2.Settled)
			}
		}
		// Now and then a flush-like reprieve, so the runs go on past a suspension.
		if a1.Status == "suspended" && r.IntN(3) == 0 {
			for _, id := range []string{"one-by-one", "batched"} {
				if err := s.SetCeiling(ctx, id, a1.Unbilled+20*money.Cent); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
}

// TestLogUsageBatchErrorsLogNothing sends batches that fail after some of
// their reads (an unknown account, a guest session of another account,
// behind an event that would be billed) and wants nothing of them logged,
// the account not left locked and the pool's connections not left inside a
// transaction: the next batch on the same account is billed at once.
func TestLogUsageBatchErrorsLogNothing(t *testing.T) {
	s := harness.Store(t)
	ctx := context.Background()
	for _, id := range []string{"rb-host", "rb-other"} {
		harness.EnsureAccount(t, s, id)
	}
	h := sha256.Sum256([]byte("rb-other"))
	if _, err := s.CreateInvite(ctx, store.Invite{ID: "inv-rb-other", TokenHash: h[:], Project: "p-rb-other", Host: "rb-other", Role: store.RoleEditor,
		Quota: 10 * money.Cent, ExpiresAt: time.Now().Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.AcceptInvite(ctx, "inv-rb-other", "gs-rb-other", secretHash("gs-rb-other"), time.Now()); err != nil {
		t.Fatal(err)
	}
	ev := func(id, guest string) store.Usage {
		return store.Usage{EventID: id, Account: "rb-host", Project: "p", Model: "si-simulator-small", PromptTokens: 1000, CompletionTokens: 500,
			GuestSession: guest}
	}
	before, _ := s.GuestSessionByID(ctx, "gs-rb-other")
	for i := range 3 * int(s.Pool.Config().MaxConns) {
		_, err := s.LogUsageBatch(ctx, []store.Usage{ev(fmt.Sprintf("rb/%d", i), ""), ev(fmt.Sprintf("rb/%d-g", i), "gs-rb-other")})
		if !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("a batch naming another account's session: %v, want ErrNotFound", err)
		}
		u := ev(fmt.Sprintf("rb/none-%d", i), "")
		u.Account = "rb-nobody"
		if _, err := s.LogUsageBatch(ctx, []store.Usage{u}); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("a batch of an unknown account: %v, want ErrNotFound", err)
		}
	}
	if b, err := s.Books(ctx, "rb-host"); err != nil || b.Charged != 0 || b.JournalUnbill != 0 || b.JournalCredit != 0 {
		t.Fatalf("books after refused batches: %+v, %v", b, err)
	}
	if after, _ := s.GuestSessionByID(ctx, "gs-rb-other"); after.Remaining != before.Remaining {
		t.Fatalf("the other account's session went from %s to %s", before.Remaining, after.Remaining)
	}
	quick, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	cs, err := s.LogUsageBatch(quick, []store.Usage{ev("rb/0", ""), ev("rb/0", "")})
	if err != nil || len(cs) != 2 || cs[0].Duplicate || !cs[1].Duplicate || cs[0].Gross <= 0 {
		t.Fatalf("a batch after the refused ones: %+v, %v", cs, err)
	}
	if b, err := s.Books(ctx, "rb-host"); err != nil || b.Charged != cs[0].Charged || !b.Balanced() {
		t.Fatalf("books: %+v, %v", b, err)
	}
}

// TestSQLApplyMatchesApply holds the database's copy of the rounding rule
// (mesh_money_apply, which log_usage_batch prices with) to package money's
// Apply: the same micro-dollar for every amount and multiplier, halves and
// signs and the edges of int64 included, and an out-of-range error exactly
// where Apply reports ErrOverflow.
func TestSQLApplyMatchesApply(t *testing.T) {
	s := harness.Store(t)
	ctx := context.Background()
	r := rand.New(rand.NewPCG(13, 17))
	edges := []int64{0, 1, -1, 499_999, 500_000, 500_001, 999_999, 1_000_000, 1_030_000, 1_300_000, 1 << 31, 1<<62 + 1,
		math.MaxInt64, math.MinInt64, math.MaxInt64 / 1_000_000, -math.MaxInt64 / 999_999}
	var as, ms []int64
	for _, a := range edges {
		for _, m := range edges {
			as, ms = append(as, a), append(ms, m)
		}
	}
	for range 20_000 {
		a, m := r.Int64()>>r.IntN(64), r.Int64()>>r.IntN(64)
		if r.IntN(2) == 0 {
			a = -a
		}
		if r.IntN(4) == 0 {
			m = -m
		}
		// Halves: a times m ends in exactly 500,000.
		if r.IntN(8) == 0 {
			a, m = 2*r.Int64N(1<<40)+1, 500_000
		}
		as, ms = append(as, a), append(ms, m)
	}
	var okA, okM []int64
	var want []money.Micros
	overflows := 0
	for i := range as {
		w, err := money.Apply(money.Micros(as[i]), money.PPM(ms[i]))
		if errors.Is(err, money.ErrOverflow) {
			overflows++
			var got int64
			err := s.Pool.QueryRow(ctx, `SELECT mesh_money_apply($1, $2)`, as[i], ms[i]).Scan(&got)
			var pe *pgconn.PgError
			if !errors.As(err, &pe) || pe.Code != "22003" {
				t.Fatalf("mesh_money_apply(%d, %d) = %d, %v; Apply overflows", as[i], ms[i], got, err)
			}
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		okA, okM, want = append(okA, as[i]), append(okM, ms[i]), append(want, w)
	}
	rows, err := s.Pool.Query(ctx, `SELECT mesh_money_apply(a, m) FROM unnest($1::bigint[], $2::bigint[]) WITH ORDINALITY AS t(a, m, o) ORDER BY o`, okA, okM)
	if err != nil {
		t.Fatal(err)
	}
	got, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil || len(got) != len(want) {
		t.Fatalf("%d results for %d pairs: %v", len(got), len(want), err)
	}
	for i := range got {
		if money.Micros(got[i]) != want[i] {
			t.Fatalf("mesh_money_apply(%d, %d) = %d, Apply says %d", okA[i], okM[i], got[i], want[i])
		}
	}
	if overflows == 0 || len(want) < 10_000 {
		t.Fatalf("%d overflows, %d in range: the cases do not reach both sides", overflows, len(want))
	}
}
