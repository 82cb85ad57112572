// Package money is the mesh's only arithmetic on money. Amounts are integer
// micro-dollars; multipliers are integer parts per million. There are no
// floats here, and rounding happens in one place, Apply (and Per, a mean for
// reports, rounds the same way and never enters the books). The ledger's
// database function prices with a copy of Apply, mesh_money_apply (store
// migration 0016), which store's TestSQLApplyMatchesApply holds to it.
//
// The rounding rule: a product of an amount and a multiplier is rounded to
// the nearest micro-dollar, halves away from zero. Stripe receives whole
// cents: Cents truncates, and the sub-cent remainder stays unbilled.
package money

import (
	"errors"
	"fmt"
	"math"
	"math/bits"
	"strconv"
	"strings"
)

// Micros is an amount in millionths of a US dollar.
type Micros int64

// Common amounts.
const (
	Microdollar Micros = 1
	Cent        Micros = 10_000
	Dollar      Micros = 1_000_000
)

// PPM is a multiplier in parts per million: 1.03 is 1_030_000.
type PPM int64

// One is the multiplier 1.
const One PPM = 1_000_000

// ErrOverflow is returned when a result does not fit in 64 bits.
var ErrOverflow = errors.New("money: amount out of range")

// Apply multiplies a by m, rounding to the nearest micro-dollar with halves
// away from zero.
func Apply(a Micros, m PPM) (Micros, error) {
	neg := (a < 0) != (m < 0)
	ua, um := abs(int64(a)), abs(int64(m))
	hi, lo := bits.Mul64(ua, um)
	// Add half the divisor, then divide by one million.
	lo, carry := bits.Add64(lo, uint64(One)/2, 0)
	hi += carry
	if hi >= uint64(One) {
		return 0, ErrOverflow
	}
	q, _ := bits.Div64(hi, lo, uint64(One))
	if q > math.MaxInt64 {
		return 0, ErrOverflow
	}
	if neg {
		return -Micros(q), nil
	}
	return Micros(q), nil
}

// Add returns a+b or ErrOverflow.
func Add(a, b Micros) (Micros, error) {
	s := a + b
	if (b > 0 && s < a) || (b < 0 && s > a) {
		return 0, ErrOverflow
	}
	return s, nil
}

// Cents splits a non-negative amount into whole cents and the remainder.
func Cents(a Micros) (cents int64, rest Micros) {
	if a <= 0 {
		return 0, a
	}
	return int64(a / Cent), a % Cent
}

func abs(x int64) uint64 {
	if x < 0 {
		return uint64(-x)
	}
	return uint64(x)
}

// Parse reads a decimal dollar amount such as "1", "1.5", "$0.000001",
// "-2.25" or "-$2.25" exactly. More than six decimal places is an error, not a rounding.
func Parse(s string) (Micros, error) {
	t := strings.TrimSpace(s)
	sign := ""
	if rest, ok := strings.CutPrefix(t, "-"); ok {
		sign, t = "-", rest
	}
	v, err := parseFixed(sign+strings.TrimPrefix(t, "$"), 6)
	if err != nil {
		return 0, fmt.Errorf("invalid amount %q: %w", s, err)
	}
	return Micros(v), nil
}

// ParsePPM reads a decimal multiplier such as "1.03" exactly.
func ParsePPM(s string) (PPM, error) {
	v, err := parseFixed(strings.TrimSpace(s), 6)
	if err != nil {
		return 0, fmt.Errorf("invalid multiplier %q: %w", s, err)
	}
	return PPM(v), nil
}

func parseFixed(s string, places int) (int64, error) {
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	whole, frac, _ := strings.Cut(s, ".")
	if whole == "" && frac == "" {
		return 0, errors.New("empty")
	}
	if len(frac) > places {
		return 0, fmt.Errorf("more than %d decimal places", places)
	}
	for _, part := range []string{whole, frac} {
		for _, c := range part {
			if c < '0' || c > '9' {
				return 0, errors.New("not a decimal number")
			}
		}
	}
	if whole == "" {
		whole = "0"
	}
	w, err := strconv.ParseInt(whole, 10, 64)
	if err != nil {
		return 0, ErrOverflow
	}
	f := int64(0)
	if frac != "" {
		f, _ = strconv.ParseInt(frac+strings.Repeat("0", places-len(frac)), 10, 64)
	}
	scale := int64(math.Pow10(places))
	if w > (math.MaxInt64-f)/scale {
		return 0, ErrOverflow
	}
	v := w*scale + f
	if neg {
		v = -v
	}
	return v, nil
}

// String formats a as dollars with six decimals: "$1.030000", "-$0.000001".
func (a Micros) String() string {
	sign := ""
	u := abs(int64(a))
	if a < 0 {
		sign = "-"
	}
	return fmt.Sprintf("%s$%d.%06d", sign, u/1_000_000, u%1_000_000)
}

// String formats m as a decimal: "1.03".
func (m PPM) String() string {
	sign := ""
	if m < 0 {
		sign = "-"
	}
	s := fmt.Sprintf("%s%d.%06d", sign, abs(int64(m))/1_000_000, abs(int64(m))%1_000_000)
	s = strings.TrimRight(s, "0")
	return strings.TrimSuffix(s, ".")
}
