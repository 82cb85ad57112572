package cli

import (
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/superinstance/mesh/internal/synapse"
	"github.com/superinstance/mesh/workflows"
)

// A progress line shortens an answer between characters, never inside one,
// and counts a wide character as two columns.
func TestOneLineCutsBetweenCharacters(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   string
		max  int // the most columns the text may take before "..."
	}{
		{"accent at the cut", strings.Repeat("a", 99) + "éééé", 100},
		{"all accents", strings.Repeat("é", 150), 100},
		{"chinese", strings.Repeat("漢字", 80), 100},
		{"emoji", strings.Repeat("🙂", 80), 100},
		{"combining marks", strings.Repeat("e\u0301", 150), 100},
	} {
		got := oneLine(tc.in, 100)
		if !utf8.ValidString(got) {
			t.Errorf("%s: %q is not valid UTF-8", tc.name, got)
		}
		body := strings.TrimSuffix(got, "...")
		if body == got {
			t.Errorf("%s: %q was not shortened", tc.name, got)
		}
		if w := displayWidth(body); w > tc.max || w < tc.max-2 {
			t.Errorf("%s: %d columns before the ellipsis, want %d (or one wide character less)", tc.name, w, tc.max)
		}
		if !strings.HasPrefix(tc.in, body) {
			t.Errorf("%s: %q is not a prefix of the text", tc.name, body)
		}
	}
	if got := oneLine("short  answer\nover lines", 100); got != "short answer over lines" {
		t.Errorf("whitespace: %q", got)
	}
	// A model's answer cannot move the cursor or recolour the terminal.
	if got := oneLine("ok\x1b[2J\x1b]0;owned\x07 done", 100); strings.ContainsAny(got, "\x1b\x07") {
		t.Errorf("control characters reach the terminal: %q", got)
	}
}

// A long intent (Pathos often restates the prompt) is one progress line.
func TestProgressLinesStayOneLine(t *testing.T) {
	var b strings.Builder
	p := &progress{w: &b}
	st := workflows.ConsensusState{Manifest: &synapse.Manifest{Intent: strings.Repeat("Почему небо голубое? ", 20) + "\x1b[31m", Domain: "физика"}}
	p.show(st)
	line := strings.TrimSuffix(b.String(), "\n")
	if strings.Contains(line, "\n") || strings.Contains(line, "\x1b") || !utf8.ValidString(line) || displayWidth(line) > 200 {
		t.Fatalf("pathos line %q", line)
	}
	if got := printable("line one\n\tline two\x1b[2J"); got != "line one\n\tline two[2J" {
		t.Fatalf("printable: %q", got)
	}
}
