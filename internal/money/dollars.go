package money

import (
	"fmt"
	"strings"
)

// Dollars formats a for people: dollars and cents when the sub-cent part is
// zero ("$30.00", "-$2.25"), else only the decimals it needs ("$0.0015",
// "$1.000001"). It is exact, never rounded; machines read micro-dollars.
func (a Micros) Dollars() string {
	sign := ""
	u := abs(int64(a))
	if a < 0 {
		sign = "-"
	}
	frac := fmt.Sprintf("%06d", u%1_000_000)
	if trimmed := strings.TrimRight(frac, "0"); len(trimmed) > 2 {
		frac = trimmed
	} else {
		frac = frac[:2]
	}
	return fmt.Sprintf("%s$%d.%s", sign, u/1_000_000, frac)
}
