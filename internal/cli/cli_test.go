package cli

import (
	"bytes"
	"strings"
	"testing"
)

func walk(c *Command, path []string, fn func(*Command, []string)) {
	fn(c, path)
	for _, s := range c.Sub {
		walk(s, append(append([]string(nil), path...), s.Name), fn)
	}
}

func TestEveryCommandHasHelp(t *testing.T) {
	walk(Root(), nil, func(c *Command, path []string) {
		if c.Short == "" {
			t.Errorf("si %s has no short description", strings.Join(path, " "))
		}
		var out, errb bytes.Buffer
		code := Main(append(append([]string(nil), path...), "--help"), &out, &errb)
		if code != 0 || !strings.Contains(out.String(), "Usage: si") {
			t.Errorf("si %s --help: exit %d\n%s%s", strings.Join(path, " "), code, out.String(), errb.String())
		}
		if c.Run != nil && c.Flags != nil && !strings.Contains(out.String(), "[$SI_") {
			t.Errorf("si %s --help does not name the flags' environment variables", strings.Join(path, " "))
		}
	})
}

func TestUnknownCommandAndFlag(t *testing.T) {
	var out, errb bytes.Buffer
	if code := Main([]string{"frobnicate"}, &out, &errb); code == 0 || !strings.Contains(errb.String(), `unknown command "frobnicate"`) {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	errb.Reset()
	if code := Main([]string{"ask", "--no-such-flag", "q"}, &out, &errb); code == 0 || !strings.Contains(errb.String(), "no-such-flag") {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
}

func TestAskValidatesBeforeDialling(t *testing.T) {
	for args, want := range map[string]string{
		"ask":                    "a prompt is required",
		"ask --placement moon q": "invalid placement",
		"ask --threshold 2 q":    "threshold 2 is outside",
		"ask --max-rounds 0 q":   "max rounds 0 is outside",
		"ask --project Nope! q":  "invalid project",
	} {
		var out, errb bytes.Buffer
		code := Main(strings.Fields(args), &out, &errb)
		if code == 0 || !strings.Contains(errb.String(), want) {
			t.Errorf("si %s: exit %d, stderr %q, want %q", args, code, errb.String(), want)
		}
	}
}

func TestFlushRetryFlagsValidate(t *testing.T) {
	for args, want := range map[string]string{
		"billing flush --send-attempts 0":   "--send-attempts \"0\": give a whole number from 1 to 100",
		"billing flush --send-attempts x":   "--send-attempts \"x\"",
		"billing flush --retry-every 10ms":  "--retry-every \"10ms\": give a duration of at least 1s",
		"billing flush --send-attempts 101": "from 1 to 100",
	} {
		var out, errb bytes.Buffer
		code := Main(strings.Fields(args), &out, &errb)
		if code == 0 || !strings.Contains(errb.String(), want) {
			t.Errorf("si %s: exit %d, stderr %q, want %q", args, code, errb.String(), want)
		}
	}
	t.Setenv("SI_SEND_ATTEMPTS", "0")
	var out, errb bytes.Buffer
	if code := Main([]string{"billing", "flush"}, &out, &errb); code == 0 || !strings.Contains(errb.String(), "--send-attempts") {
		t.Errorf("SI_SEND_ATTEMPTS=0: exit %d, stderr %q", code, errb.String())
	}
}
