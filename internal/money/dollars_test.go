package money

import (
	"math"
	"testing"
)

func TestDollars(t *testing.T) {
	for _, tc := range []struct {
		in   Micros
		want string
	}{
		{0, "$0.00"}, {30_000_000, "$30.00"}, {1_030_000, "$1.03"}, {-2_250_000, "-$2.25"},
		{1_500, "$0.0015"}, {1_000_001, "$1.000001"}, {10_000, "$0.01"}, {100_000, "$0.10"}, {-1, "-$0.000001"},
		{math.MinInt64, "-$9223372036854.775808"},
	} {
		if got := tc.in.Dollars(); got != tc.want {
			t.Errorf("%d.Dollars() = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// Dollars is exact: parsing what it prints gives the amount back.
func FuzzDollarsRoundTrip(f *testing.F) {
	f.Add(int64(1_234_567))
	f.Fuzz(func(t *testing.T, n int64) {
		if n == math.MinInt64 {
			return
		}
		got, err := Parse(Micros(n).Dollars())
		if err != nil || got != Micros(n) {
			t.Fatalf("%d -> %q -> %d, %v", n, Micros(n).Dollars(), got, err)
		}
	})
}
