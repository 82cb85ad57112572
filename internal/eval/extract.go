package eval

import (
	"regexp"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// numberRE is a number as FinalInteger reads it: digits with thousands
// separators in groups of three, or plain digits, each with an optional
// decimal part.
var numberRE = regexp.MustCompile(`\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?`)

// FinalInteger reads the answer from a run's final text: the last number in
// it, which must be a whole number. Every data set is scored by this rule,
// the value compared exactly with the question's answer:
//
//   - numbers are read left to right: digits, optionally grouped in
//     thousands ("1,015" is 1015; "3,4" is 3 and then 4), optionally with
//     a decimal part ("16.0" is 16; a full stop after the digits ends a
//     sentence: "is 16." is 16);
//   - a minus sign ('-' or U+2212) right before the digits makes the number
//     negative unless a letter, a digit or a closing bracket stands right
//     before the sign: "x = -7" and "(-7)" are -7, "12-7" ends in 7;
//   - the last number decides: when it has a non-zero decimal part
//     ("3.5"), does not fit in 64 bits, or there is no number at all, ok
//     is false and the question scores wrong.
func FinalInteger(text string) (value int64, ok bool) {
	all := numberRE.FindAllStringIndex(text, -1)
	if len(all) == 0 {
		return 0, false
	}
	start, end := all[len(all)-1][0], all[len(all)-1][1]
	tok := text[start:end]
	intPart, frac, _ := strings.Cut(tok, ".")
	if strings.Trim(frac, "0") != "" {
		return 0, false
	}
	digits := strings.ReplaceAll(intPart, ",", "")
	negative := isSign(text[:start])
	if negative {
		digits = "-" + digits
	}
	v, err := strconv.ParseInt(digits, 10, 64)
	if err != nil {
		return 0, false
	}
	return v, true
}

// isSign reports whether before ends in a minus sign that is a sign, not a
// subtraction.
func isSign(before string) bool {
	r, size := utf8.DecodeLastRuneInString(before)
	if r != '-' && r != '\u2212' {
		return false
	}
	if size == len(before) {
		return true
	}
	p, _ := utf8.DecodeLastRuneInString(before[:len(before)-size])
	return !(unicode.IsLetter(p) || unicode.IsDigit(p) || p == ')' || p == ']' || p == '}')
}
