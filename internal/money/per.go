package money

// Per is total shared evenly among n items (a mean, such as the cost per
// question of an evaluation), rounded to the nearest micro-dollar with
// halves away from zero, as Apply rounds. It is a figure for people: the
// books keep the total. n <= 0 gives 0.
func Per(total Micros, n int64) Micros {
	if n <= 0 {
		return 0
	}
	q, r := int64(total)/n, int64(total)%n
	// |r| >= n/2, compared without overflow: 2|r| >= n.
	if ar := abs(r); ar >= uint64(n)-ar {
		if total < 0 {
			q--
		} else {
			q++
		}
	}
	return Micros(q)
}
