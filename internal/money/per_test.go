package money

import (
	"math"
	"testing"
)

func TestPer(t *testing.T) {
	for _, c := range []struct {
		total Micros
		n     int64
		want  Micros
	}{
		{10, 3, 3}, {11, 3, 4}, {15, 10, 2}, {14, 10, 1}, {-15, 10, -2}, {-14, 10, -1},
		{0, 5, 0}, {7, 0, 0}, {7, -1, 0}, {1, 2, 1}, {-1, 2, -1}, {1, 3, 0},
		{math.MaxInt64, 1, math.MaxInt64}, {math.MaxInt64, 2, math.MaxInt64/2 + 1}, {math.MinInt64, 2, math.MinInt64 / 2},
	} {
		if got := Per(c.total, c.n); got != c.want {
			t.Errorf("Per(%d, %d) = %d, want %d", c.total, c.n, got, c.want)
		}
	}
}
