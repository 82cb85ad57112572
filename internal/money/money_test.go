package money

import (
	"errors"
	"math"
	"math/big"
	"math/rand/v2"
	"testing"
)

func TestApply(t *testing.T) {
	cases := []struct {
		a    Micros
		m    PPM
		want Micros
	}{
		{1_000_000, 1_030_000, 1_030_000},
		{1, 1_030_000, 1},     // 1.03 rounds down
		{1, 1_500_000, 2},     // 1.5 rounds away from zero
		{1, 1_300_000, 1},     // 1.3
		{5, 1_300_000, 7},     // 6.5 -> 7
		{-5, 1_300_000, -7},   // -6.5 -> -7
		{333, 1_030_000, 343}, // 342.99 -> 343
		{0, 1_300_000, 0},     // nothing
		{12_345, One, 12_345}, // identity
	}
	for _, tc := range cases {
		got, err := Apply(tc.a, tc.m)
		if err != nil || got != tc.want {
			t.Errorf("Apply(%d, %d) = %d, %v; want %d", tc.a, tc.m, got, err, tc.want)
		}
	}
	if _, err := Apply(math.MaxInt64, 2*One); !errors.Is(err, ErrOverflow) {
		t.Fatalf("overflow: %v", err)
	}
}

// TestApplyAgainstExactArithmetic checks the rounding rule on random inputs
// against big.Rat.
func TestApplyAgainstExactArithmetic(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for range 100_000 {
		a := Micros(r.Int64N(1e12) - 5e11)
		m := PPM(r.Int64N(5e6))
		got, err := Apply(a, m)
		if err != nil {
			t.Fatal(err)
		}
		exact := new(big.Rat).SetFrac(new(big.Int).Mul(big.NewInt(int64(a)), big.NewInt(int64(m))), big.NewInt(int64(One)))
		// Round half away from zero.
		num, den := new(big.Int).Abs(exact.Num()), exact.Denom()
		q, rem := new(big.Int).QuoRem(num, den, new(big.Int))
		if new(big.Int).Mul(rem, big.NewInt(2)).Cmp(den) >= 0 {
			q.Add(q, big.NewInt(1))
		}
		if exact.Sign() < 0 {
			q.Neg(q)
		}
		if int64(got) != q.Int64() {
			t.Fatalf("Apply(%d, %d) = %d, exact rounding %s", a, m, got, q)
		}
	}
}

func TestCents(t *testing.T) {
	for _, tc := range []struct {
		a     Micros
		cents int64
		rest  Micros
	}{{1_234_567, 123, 4_567}, {9_999, 0, 9_999}, {10_000, 1, 0}, {0, 0, 0}, {-5, 0, -5}} {
		c, r := Cents(tc.a)
		if c != tc.cents || r != tc.rest || (tc.a > 0 && Micros(c)*Cent+r != tc.a) {
			t.Errorf("Cents(%d) = %d, %d", tc.a, c, r)
		}
	}
}

func TestParseAndString(t *testing.T) {
	good := map[string]Micros{"1": Dollar, "1.00": Dollar, "$0.000001": 1, "-2.25": -2_250_000, ".5": 500_000, "30": 30 * Dollar}
	for s, want := range good {
		got, err := Parse(s)
		if err != nil || got != want {
			t.Errorf("Parse(%q) = %d, %v", s, got, err)
		}
		back, err := Parse(got.String())
		if err != nil || back != got {
			t.Errorf("round trip of %q through %q: %d %v", s, got.String(), back, err)
		}
	}
	for _, s := range []string{"", "1.0000001", "abc", "1e3", "1.2.3", "--1", "99999999999999999999"} {
		if _, err := Parse(s); err == nil {
			t.Errorf("Parse(%q) accepted", s)
		}
	}
	if m, _ := ParsePPM("1.03"); m != 1_030_000 || m.String() != "1.03" {
		t.Fatalf("PPM %d %s", m, m)
	}
	if (-Micros(1)).String() != "-$0.000001" {
		t.Fatal((-Micros(1)).String())
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{"1.03", "$5", "-0.000001", "9223372036854.775807", ".", "1.", "0x10"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		v, err := Parse(s)
		if err != nil {
			return
		}
		back, err := Parse(v.String())
		if err != nil || back != v {
			t.Fatalf("%q parsed to %d, which formats as %q and parses back to %d (%v)", s, v, v.String(), back, err)
		}
	})
}
