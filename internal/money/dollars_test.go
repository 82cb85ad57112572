package money

import (
	"math"
	"testing"
)

func TestDollarsReadsBack(t *testing.T) {
	for _, c := range []struct {
		in   Micros
		want string
	}{
		{0, "$0.00"},
		{30 * Dollar, "$30.00"},
		{60 * Dollar, "$60.00"},
		{1_230_000, "$1.23"},
		{-50_000, "-$0.05"},
		{1_500, "$0.0015"},
		{1_000_001, "$1.000001"},
		{-1, "-$0.000001"},
		{math.MinInt64 + 1, "-$9223372036854.775807"},
	} {
		if got := c.in.Dollars(); got != c.want {
			t.Errorf("%d.Dollars() = %q, want %q", int64(c.in), got, c.want)
		}
		// Nothing is lost: the text reads back to the same amount.
		if back, err := Parse(c.in.Dollars()); err != nil || back != c.in {
			t.Errorf("Parse(%q) = %d, %v", c.in.Dollars(), int64(back), err)
		}
	}
}
