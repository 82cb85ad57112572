package cli

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"
	"unicode"

	"golang.org/x/text/width"
)

// transferBar draws a bar for a long transfer: redrawn in place on a terminal,
// a line per tenth otherwise (logs, CI).
type transferBar struct {
	mu       sync.Mutex
	w        io.Writer
	label    string
	total    int64
	start    time.Time
	tty      bool
	lastDraw time.Time
	lastStep int64
	done     bool
}

func newTransferBar(w io.Writer, label string, total int64) *transferBar {
	tty := false
	if f, ok := w.(*os.File); ok {
		if st, err := f.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 {
			tty = true
		}
	}
	return &transferBar{w: w, label: label, total: total, start: time.Now(), tty: tty, lastStep: -1}
}

// Set reports n bytes done.
func (p *transferBar) Set(n int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.done {
		return
	}
	now := time.Now()
	if p.tty {
		if n < p.total && now.Sub(p.lastDraw) < 100*time.Millisecond {
			return
		}
		p.lastDraw = now
		fmt.Fprintf(p.w, "\r%s", p.line(n, now))
		if n >= p.total {
			fmt.Fprintln(p.w)
			p.done = true
		}
		return
	}
	step := int64(10)
	if p.total > 0 {
		step = n * 10 / p.total
	}
	if step != p.lastStep {
		p.lastStep = step
		fmt.Fprintln(p.w, p.line(n, now))
	}
	if n >= p.total {
		p.done = true
	}
}

func (p *transferBar) line(n int64, now time.Time) string {
	const width = 30
	frac := 1.0
	if p.total > 0 {
		frac = float64(n) / float64(p.total)
	}
	filled := int(frac * width)
	rate := float64(n) / max(now.Sub(p.start).Seconds(), 1e-3)
	return fmt.Sprintf("%s [%s%s] %3.0f%%  %s / %s  %s/s", p.label, strings.Repeat("#", filled), strings.Repeat(" ", width-filled),
		frac*100, humanBytes(n), humanBytes(p.total), humanBytes(int64(rate)))
}

func humanBytes(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.2f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}

// dropControl removes control characters (a model's answer could carry
// terminal escape sequences); whitespace stays for strings.Fields.
func dropControl(r rune) rune {
	if unicode.IsControl(r) && !unicode.IsSpace(r) {
		return -1
	}
	return r
}

// printable is a model's text without control characters, line breaks and
// tabs kept: what the terminal shows is what the model wrote.
func printable(s string) string { return strings.Map(dropControl, s) }

// runeWidth is how many terminal columns r takes: two for wide East Asian
// characters and most emoji, none for combining marks and zero-width ones.
func runeWidth(r rune) int {
	switch {
	case unicode.In(r, unicode.Mn, unicode.Me, unicode.Cf) || r == 0x200b:
		return 0
	}
	switch width.LookupRune(r).Kind() {
	case width.EastAsianWide, width.EastAsianFullwidth:
		return 2
	}
	return 1
}

func displayWidth(s string) int {
	n := 0
	for _, r := range s {
		n += runeWidth(r)
	}
	return n
}

// truncateWidth cuts s to at most n columns, between characters (a
// combining mark stays with its letter), and marks the cut with "...".
func truncateWidth(s string, n int) string {
	if displayWidth(s) <= n {
		return s
	}
	cols := 0
	for i, r := range s {
		w := runeWidth(r)
		if cols+w > n && w > 0 {
			return s[:i] + "..."
		}
		cols += w
	}
	return s
}
