package cli

import (
	"bytes"
	"context"
	"flag"
	"strings"
	"testing"

	"github.com/spf13/cobra"
)

// A mistyped command line gets three lines on stderr: the error, what was
// probably meant, and where the help is; nothing on stdout.
func TestUsageErrorIsTheErrorThenASuggestionThenWhereHelpIs(t *testing.T) {
	for _, tc := range []struct {
		args string
		want []string
	}{
		{"ask --max-round 2 q", []string{"si ask: unknown flag --max-round", "did you mean --max-rounds?", "Run 'si ask --help' for usage."}},
		{"ask -json q", []string{"si ask: unknown flag -json", "did you mean --json?", "Run 'si ask --help' for usage."}},
		{"ak q", []string{`si: unknown command "ak" for "si"`, "did you mean `si ask`?", "Run 'si --help' for usage."}},
		{"lora lss", []string{`si lora: unknown command "lss" for "si lora"`, "did you mean `si lora ls`?", "Run 'si lora --help' for usage."}},
		{"handover acept x", []string{`si handover: unknown command "acept" for "si handover"`, "did you mean `si handover accept`?", "Run 'si handover --help' for usage."}},
		{"ask --max-rounds x q", []string{`si ask: invalid value "x" for --max-rounds: give a whole number`, "Run 'si ask --help' for usage."}},
		{"ask --threshold high q", []string{`si ask: invalid value "high" for --threshold: give a number, e.g. 0.8`, "Run 'si ask --help' for usage."}},
		{"usage --since soon", []string{`si usage: invalid value "soon" for --since: give a duration such as 30s, 5m or 2h`, "Run 'si usage --help' for usage."}},
		{"billing flush --send-attempts 0", []string{`si billing flush: --send-attempts "0": give a whole number from 1 to 100`, "Run 'si billing flush --help' for usage."}},
		{"hub vital", []string{`si hub: unexpected argument "vital"`, "did you mean `si hub vitals`?", "Run 'si hub --help' for usage."}},
		{"ask -token=si_secret q", []string{"si ask: unknown flag -token", "did you mean --token?", "Run 'si ask --help' for usage."}},
		{"ask --tokn=si_secret q", []string{"si ask: unknown flag --tokn", "did you mean --token?", "Run 'si ask --help' for usage."}},
		{"frobnicate", []string{`si: unknown command "frobnicate" for "si"`, "Run 'si --help' for usage."}},
		{"help lora nope", []string{`si lora: unknown command "nope" for "si lora"`, "Run 'si lora --help' for usage."}},
		{"completion bsh", []string{`si completion: unknown shell "bsh": give bash, zsh or fish`, "did you mean `si completion bash`?", "Run 'si completion --help' for usage."}},
	} {
		var out, errb bytes.Buffer
		code := Main(strings.Fields(tc.args), &out, &errb)
		got := strings.Split(strings.TrimRight(errb.String(), "\n"), "\n")
		if code != usageExitCode || out.Len() != 0 || strings.Join(got, "\n") != strings.Join(tc.want, "\n") {
			t.Errorf("si %s: exit %d, stdout %q, stderr:\n%s\nwant exit %d and:\n%s", tc.args, code, out.String(), errb.String(),
				usageExitCode, strings.Join(tc.want, "\n"))
		}
	}
}

// Flags may follow the positional arguments; "--" ends the flags.
func TestFlagsAfterArguments(t *testing.T) {
	var out, errb bytes.Buffer
	if code := Main([]string{"ask", "why", "--max-rounds", "0"}, &out, &errb); code == 0 || !strings.Contains(errb.String(), "max rounds 0 is outside") {
		t.Fatalf("a flag after the prompt was not parsed: exit %d, %s", code, errb.String())
	}
	errb.Reset()
	if code := Main([]string{"ask", "--placement", "moon", "--", "--max-round"}, &out, &errb); code == 0 || !strings.Contains(errb.String(), "invalid placement") {
		t.Fatalf("after --, a flag-like word is an argument: exit %d, %s", code, errb.String())
	}
}

func TestHelpGoesToStdout(t *testing.T) {
	for _, tc := range []struct {
		args string
		code int
		want string
	}{
		{"", usageExitCode, "Operator commands"},
		{"help", 0, "Operator commands"},
		{"--help", 0, "Operator commands"},
		{"help ask", 0, "Usage: si ask [flags] \"prompt\""},
		{"help lora ls", 0, "Usage: si lora ls [flags]"},
		{"lora help ls", 0, "Usage: si lora ls [flags]"},
		{"ask -h", 0, "--max-rounds int"},
		{"lora", usageExitCode, "Usage: si lora <command> [flags]"},
		{"invite --help", 0, "or: si invite <command> [flags]"},
	} {
		var out, errb bytes.Buffer
		code := Main(strings.Fields(tc.args), &out, &errb)
		if code != tc.code || !strings.Contains(out.String(), tc.want) || errb.Len() != 0 {
			t.Errorf("si %s: exit %d (want %d), stdout %q does not hold %q, stderr %q", tc.args, code, tc.code, out.String(), tc.want, errb.String())
		}
	}
	// The operator's commands are listed apart from the customer's.
	var out bytes.Buffer
	Main([]string{"help"}, &out, &out)
	cust, op, _ := strings.Cut(out.String(), "Operator commands (")
	if !strings.Contains(cust, "\n  ask ") || strings.Contains(cust, "\n  server ") || !strings.Contains(op, "\n  server ") || strings.Contains(op, "\n  ask ") {
		t.Errorf("si help does not list the customer and operator commands apart:\n%s", out.String())
	}
}

func TestCompletionScripts(t *testing.T) {
	for shell, want := range map[string]string{
		"bash": "__start_si",
		"zsh":  "#compdef si",
		"fish": "complete -c si",
	} {
		var out, errb bytes.Buffer
		if code := Main([]string{"completion", shell}, &out, &errb); code != 0 || !strings.Contains(out.String(), want) {
			t.Errorf("si completion %s: exit %d, %q does not hold %q; %s", shell, code, firstLine(out.String()), want, errb.String())
		}
	}
	var out, errb bytes.Buffer
	Main([]string{"completion", "--help"}, &out, &errb)
	for _, want := range []string{"source <(si completion bash)", "_si", "si.fish"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("si completion --help does not say how to install (%q):\n%s", want, out.String())
		}
	}
	// What the scripts ask si for: the commands and flags that match.
	for args, want := range map[string]string{
		"__complete as":               "ask\t",
		"__complete ask --max-r":      "--max-rounds\t",
		"__complete lora ":            "ls\t",
		"__complete completion ":      "zsh",
		"__complete help handover a":  "accept\t",
		"__complete ask --placement ": "cloud",
		"__complete invite --role e":  "editor",
		"__complete tier set ":        "byok",
	} {
		out.Reset()
		fields := strings.Fields(args)
		if strings.HasSuffix(args, " ") {
			fields = append(fields, "")
		}
		Main(fields, &out, &errb)
		if !strings.Contains(out.String(), want) {
			t.Errorf("si %s: %q does not offer %q", args, out.String(), want)
		}
	}
}

func firstLine(s string) string { l, _, _ := strings.Cut(s, "\n"); return l }

// noResult are the commands that print no result to take --json: services
// that run until stopped, and shell scripts.
var noResult = map[string]string{
	"dev":        "runs the mesh until Ctrl-C",
	"server":     "runs the cloud's roles until stopped",
	"hub":        "runs the hub agent until stopped",
	"simulator":  "serves the simulator until stopped",
	"completion": "prints a shell script",
}

// Every command that prints a result takes --json.
func TestEveryResultCommandTakesJSON(t *testing.T) {
	walk(Root(), nil, func(c *Command, path []string) {
		if c.Run == nil || len(path) == 0 {
			return
		}
		name := strings.Join(path, " ")
		if _, ok := noResult[name]; ok {
			return
		}
		fs := flag.NewFlagSet(name, flag.ContinueOnError)
		if c.Flags != nil {
			c.Flags(fs)
		}
		f := fs.Lookup("json")
		if f == nil {
			t.Errorf("si %s prints a result and has no --json", name)
			return
		}
		if b, ok := f.Value.(interface{ IsBoolFlag() bool }); !ok || !b.IsBoolFlag() {
			t.Errorf("si %s: --json is not a switch", name)
		}
	})
}

// Two commands that bind one variable each parse with their own default.
func TestSharedFlagVariableTakesTheRunningCommandsDefault(t *testing.T) {
	var account string
	var got []string
	run := func(_ context.Context, _ *Env, _ []string) error { got = append(got, account); return nil }
	root := &Command{Name: "si", Sub: []*Command{
		{Name: "a", Short: "a", Flags: func(fs *flag.FlagSet) { fs.StringVar(&account, "account", "alpha", "") }, Run: run},
		{Name: "b", Short: "b", Flags: func(fs *flag.FlagSet) { fs.StringVar(&account, "account", "beta", "") }, Run: run},
	}}
	for _, name := range []string{"a", "b"} {
		e := &Env{Stdout: &bytes.Buffer{}, Stderr: &bytes.Buffer{}}
		tr := &tree{env: e, src: map[*cobra.Command]*Command{}}
		cc := tr.build(root)
		cc.SetArgs([]string{name})
		tr.rebind(cc, []string{name})
		if err := cc.Execute(); err != nil {
			t.Fatal(err)
		}
	}
	if strings.Join(got, ",") != "alpha,beta" {
		t.Fatalf("defaults seen %v, want alpha then beta", got)
	}
}

// A bad strategy, sample count or temperature is told before any request.
func TestAskStrategyFlags(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"ask", "--strategy", "poll", "q"}, `invalid strategy "poll": use debate, vote or single`},
		{[]string{"ask", "--strategy", "vote", "--samples", "16", "q"}, "samples 16 is outside 1..15"},
		{[]string{"ask", "--strategy", "vote", "--temperature", "warm", "q"}, `--temperature "warm" is not a number`},
		{[]string{"ask", "--strategy", "single", "--temperature", "3", "q"}, "temperature 3 is outside 0..2"},
		{[]string{"ask", "--samples", "3", "q"}, "samples and temperature apply to the vote and single strategies"},
	} {
		var out, errb bytes.Buffer
		if code := Main(tc.args, &out, &errb); code == 0 || !strings.Contains(errb.String(), tc.want) {
			t.Errorf("si %q: exit %d, %s; want %q", tc.args, code, errb.String(), tc.want)
		}
	}
}
