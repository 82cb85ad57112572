package hubcmd

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.temporal.io/api/serviceerror"
	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/testsuite"
	"go.temporal.io/sdk/worker"
)

// hubWith returns a hub of account "acme" whose allow-list holds list
// (no file when list is ""), and its audit log.
func hubWith(t *testing.T, list string) *Hub {
	t.Helper()
	dir := t.TempDir()
	h := &Hub{Device: "gpu-1", Account: "acme", AllowList: filepath.Join(dir, AllowListFile), Audit: NewAudit(filepath.Join(dir, AuditFile))}
	if list != "" {
		if err := os.WriteFile(h.AllowList, []byte(list), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return h
}

var asked = Caller{WorkflowID: "hubcmd-test", RunID: "run-1", WorkflowType: WorkflowType}

func audit(t *testing.T, h *Hub) []AuditLine {
	t.Helper()
	lines, err := Recent(h.Audit.Path(), 100)
	if err != nil {
		t.Fatal(err)
	}
	return lines
}

// refused asserts that in was refused with a reason containing want,
// that nothing ran, and that the refusal is the audit log's last line.
func refused(t *testing.T, h *Hub, c Caller, in RunInput, want string) {
	t.Helper()
	before := len(audit(t, h))
	res, err := h.handle(context.Background(), c, in)
	if err != nil {
		t.Fatal(err)
	}
	if res.Refused == "" || !strings.Contains(res.Refused, want) {
		t.Fatalf("%+v: refused %q, want it refused with %q", in, res.Refused, want)
	}
	if len(res.Stdout)+len(res.Stderr) > 0 || res.BytesOut != 0 {
		t.Fatalf("a refused request produced output: %+v", res)
	}
	lines := audit(t, h)
	if len(lines) != before+1 {
		t.Fatalf("the refusal wrote %d audit lines, want 1", len(lines)-before)
	}
	last := lines[len(lines)-1]
	if last.Event != EventRefused || last.Refused != res.Refused || last.Command != trunc(in.Command, 64) || last.WorkflowID != c.WorkflowID || last.Account != in.Account {
		t.Fatalf("audit line %+v for refusal %q", last, res.Refused)
	}
}

// TestNothingRunsWithoutAnAllowList: no file, no command, however it is asked.
func TestNothingRunsWithoutAnAllowList(t *testing.T) {
	h := hubWith(t, "")
	marker := filepath.Join(t.TempDir(), "ran")
	refused(t, h, asked, RunInput{Account: "acme", AskedBy: "operator", Command: "touch", Args: []string{marker}}, "no allow-list")
	if _, err := os.Stat(marker); err == nil {
		t.Fatal("the command ran without an allow-list")
	}
	h.AllowList = ""
	refused(t, h, asked, RunInput{Account: "acme", Command: "touch", Args: []string{marker}}, "no allow-list")
}

const list = `{"commands": [
	{"name": "touch", "path": "/usr/bin/touch", "args": [["<word>"]], "dir": "DIR"},
	{"name": "head", "path": "/usr/bin/head", "args": [["-c", "<uint>", "/dev/zero"], ["--bytes=<uint>", "/dev/zero"]], "max_output_bytes": 4096},
	{"name": "sleep", "path": "/usr/bin/sleep", "args": [["<uint>"]], "timeout": "300ms"},
	{"name": "env", "path": "/usr/bin/env"},
	{"name": "family", "path": "/bin/sh", "args": [["-c", "sleep 30 & echo $!; wait"]], "timeout": "300ms"},
	{"name": "false", "path": "/usr/bin/false"}
]}`

func listIn(t *testing.T) (string, string) {
	dir := t.TempDir()
	return strings.ReplaceAll(list, "DIR", dir), dir
}

// TestRefusals: what an attacker who can start the workflow might send.
func TestRefusals(t *testing.T) {
	l, dir := listIn(t)
	h := hubWith(t, l)
	for _, tc := range []struct {
		name string
		c    Caller
		in   RunInput
		want string
	}{
		{"another account", asked, RunInput{Account: "mallory", Command: "touch", Args: []string{"x"}}, "not this hub's"},
		{"no account", asked, RunInput{Command: "touch", Args: []string{"x"}}, "not this hub's"},
		{"another workflow", Caller{WorkflowID: "c1", WorkflowType: "ConsensusWorkflow"}, RunInput{Account: "acme", Command: "touch", Args: []string{"x"}}, "may not run commands"},
		{"not in the list", asked, RunInput{Account: "acme", Command: "rm", Args: []string{"-rf", "/"}}, "not in the hub's allow-list"},
		{"a path for a name", asked, RunInput{Account: "acme", Command: "/usr/bin/touch", Args: []string{"x"}}, "command name"},
		{"shell metacharacters", asked, RunInput{Account: "acme", Command: "touch", Args: []string{"x; rm -rf /"}}, "match none"},
		{"a flag for a word", asked, RunInput{Account: "acme", Command: "touch", Args: []string{"-r"}}, "match none"},
		{"dot-dot", asked, RunInput{Account: "acme", Command: "touch", Args: []string{".."}}, "match none"},
		{"a path for a word", asked, RunInput{Account: "acme", Command: "touch", Args: []string{"../../etc/x"}}, "match none"},
		{"an extra argument", asked, RunInput{Account: "acme", Command: "touch", Args: []string{"a", "b"}}, "match none"},
		{"too few", asked, RunInput{Account: "acme", Command: "touch"}, "match none"},
		{"not a number", asked, RunInput{Account: "acme", Command: "head", Args: []string{"-c", "1x", "/dev/zero"}}, "match none"},
		{"a negative uint", asked, RunInput{Account: "acme", Command: "head", Args: []string{"-c", "-1", "/dev/zero"}}, "match none"},
		{"suffix smuggled", asked, RunInput{Account: "acme", Command: "head", Args: []string{"--bytes=1", "/etc/shadow"}}, "match none"},
		{"prefix smuggled", asked, RunInput{Account: "acme", Command: "head", Args: []string{"--bytes=1 /etc/shadow", "/dev/zero"}}, "match none"},
		{"args to a command that takes none", asked, RunInput{Account: "acme", Command: "env", Args: []string{"sh"}}, "takes no arguments"},
		{"too many args", asked, RunInput{Account: "acme", Command: "touch", Args: make([]string, MaxArgs+1)}, "at most"},
		{"a negative timeout", asked, RunInput{Account: "acme", Command: "env", Timeout: -time.Second}, "negative"},
	} {
		t.Run(tc.name, func(t *testing.T) { refused(t, h, tc.c, tc.in, tc.want) })
	}
	if ents, _ := os.ReadDir(dir); len(ents) > 0 {
		t.Fatalf("a refused touch ran: %v", ents)
	}
}

// TestAdmittedCommandRunsAndIsAudited: the audit log has the started and
// finished lines, with who asked, the exit code and the bytes.
func TestAdmittedCommandRunsAndIsAudited(t *testing.T) {
	l, dir := listIn(t)
	h := hubWith(t, l)
	res, err := h.handle(context.Background(), asked, RunInput{Account: "acme", AskedBy: "operator alice", Command: "touch", Args: []string{"made"}})
	if err != nil || res.Refused != "" || res.ExitCode != 0 {
		t.Fatalf("%+v %v", res, err)
	}
	if _, err := os.Stat(filepath.Join(dir, "made")); err != nil {
		t.Fatalf("touch did not run in its dir: %v", err)
	}
	res, err = h.handle(context.Background(), asked, RunInput{Account: "acme", Command: "false"})
	if err != nil || res.Refused != "" || res.ExitCode != 1 {
		t.Fatalf("false: %+v %v", res, err)
	}
	lines := audit(t, h)
	if len(lines) != 4 {
		t.Fatalf("audit: %+v", lines)
	}
	s, f := lines[0], lines[1]
	if s.Event != EventStarted || s.AskedBy != "operator alice" || s.Path != "/usr/bin/touch" || s.WorkflowID != "hubcmd-test" || s.Args[0] != "made" {
		t.Fatalf("started line %+v", s)
	}
	if f.Event != EventFinished || f.ExitCode == nil || *f.ExitCode != 0 {
		t.Fatalf("finished line %+v", f)
	}
	if lines[3].ExitCode == nil || *lines[3].ExitCode != 1 {
		t.Fatalf("false's finished line %+v", lines[3])
	}
	if fi, err := os.Stat(h.Audit.Path()); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("audit log mode: %v %v", fi.Mode(), err)
	}
}

// TestTenMegabytesAreBounded: a command that prints 10 MB returns the
// first max_output_bytes, a marker, and the count of every byte.
func TestTenMegabytesAreBounded(t *testing.T) {
	l, _ := listIn(t)
	h := hubWith(t, l)
	for _, args := range [][]string{{"-c", "10485760", "/dev/zero"}, {"--bytes=10485760", "/dev/zero"}} {
		res, err := h.handle(context.Background(), asked, RunInput{Account: "acme", Command: "head", Args: args})
		if err != nil || res.Refused != "" {
			t.Fatalf("%+v %v", res, err)
		}
		if res.BytesOut != 10<<20 || !res.Truncated || res.ExitCode != 0 {
			t.Fatalf("bytes %d truncated %v exit %d", res.BytesOut, res.Truncated, res.ExitCode)
		}
		if len(res.Stdout) != 4096+len(TruncatedMarker) || !strings.HasSuffix(string(res.Stdout), TruncatedMarker) {
			t.Fatalf("kept %d bytes", len(res.Stdout))
		}
	}
	last := audit(t, h)
	if l := last[len(last)-1]; l.BytesOut != 10<<20 || !l.Truncated {
		t.Fatalf("audit %+v", l)
	}
}

// TestTimeoutKillsTheProcessGroup: past the timeout the command and what it
// started are killed, and the exit is reported.
func TestTimeoutKillsTheProcessGroup(t *testing.T) {
	l, _ := listIn(t)
	h := hubWith(t, l)
	start := time.Now()
	res, err := h.handle(context.Background(), asked, RunInput{Account: "acme", Command: "sleep", Args: []string{"30"}})
	if err != nil || res.Refused != "" {
		t.Fatalf("%+v %v", res, err)
	}
	if !res.TimedOut || res.ExitCode != -1 || time.Since(start) > 10*time.Second {
		t.Fatalf("sleep 30 with a 300ms timeout: %+v after %s", res, time.Since(start))
	}
	// A shorter timeout from the request wins; a longer one does not.
	res, _ = h.handle(context.Background(), asked, RunInput{Account: "acme", Command: "sleep", Args: []string{"30"}, Timeout: 50 * time.Millisecond})
	if !res.TimedOut || res.Duration > 250*time.Millisecond+killGrace {
		t.Fatalf("request timeout: %+v", res)
	}
	res, err = h.handle(context.Background(), asked, RunInput{Account: "acme", Command: "family", Args: []string{"-c", "sleep 30 & echo $!; wait"}})
	if err != nil || !res.TimedOut {
		t.Fatalf("family: %+v %v", res, err)
	}
	childGone(t, res.Stdout, "the timeout")
	lines := audit(t, h)
	if l := lines[len(lines)-1]; !l.TimedOut || l.ExitCode == nil || *l.ExitCode != -1 {
		t.Fatalf("audit %+v", l)
	}
}

// childGone fails t unless the process whose pid a command printed (its
// output out) is gone within 5 s of what should have killed it.
func childGone(t *testing.T, out []byte, what string) {
	t.Helper()
	pid, err := strconv.Atoi(strings.TrimSpace(string(out)))
	if err != nil {
		t.Fatalf("the command printed %q, not a pid", out)
	}
	deadline := time.Now().Add(5 * time.Second)
	for alive(pid) {
		if time.Now().After(deadline) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
			t.Fatalf("the command's child %d outlived %s", pid, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestACancelledRequestKillsTheProcessGroup: the request's context ends
// (the workflow cancelled, delivered in a heartbeat's answer) while its
// command runs: the command and what it started are killed at once, long
// before the entry's timeout, and the answer and the audit say cancelled.
func TestACancelledRequestKillsTheProcessGroup(t *testing.T) {
	h := hubWith(t, `{"commands": [{"name": "family", "path": "/bin/sh", "args": [["-c", "sleep 30 & echo $!; wait"]], "timeout": "1m"}]}`)
	ctx, cancel := context.WithCancelCause(context.Background())
	// As the SDK ends an activity's context when a heartbeat's answer
	// says the workflow cancelled it.
	time.AfterFunc(300*time.Millisecond, func() { cancel(temporal.NewCanceledError()) })
	start := time.Now()
	res, err := h.handle(ctx, asked, RunInput{Account: "acme", Command: "family", Args: []string{"-c", "sleep 30 & echo $!; wait"}})
	if err != nil || res.Refused != "" {
		t.Fatalf("%+v %v", res, err)
	}
	if !res.Cancelled || res.TimedOut || res.ExitCode != -1 || time.Since(start) > 10*time.Second {
		t.Fatalf("cancelled after 300ms: %+v after %s", res, time.Since(start))
	}
	childGone(t, res.Stdout, "the cancellation")
	lines := audit(t, h)
	if l := lines[len(lines)-1]; l.Event != EventFinished || !l.Cancelled || l.TimedOut || l.ExitCode == nil || *l.ExitCode != -1 {
		t.Fatalf("audit %+v", l)
	}
}

// TestEnvironmentIsEmptyByDefault: the hub's own environment (its secrets)
// does not reach a command.
func TestEnvironmentIsEmptyByDefault(t *testing.T) {
	t.Setenv("SI_SECRET_FOR_TEST", "hunter2")
	l, _ := listIn(t)
	h := hubWith(t, l)
	res, err := h.handle(context.Background(), asked, RunInput{Account: "acme", Command: "env"})
	if err != nil || res.ExitCode != 0 {
		t.Fatalf("%+v %v", res, err)
	}
	if len(res.Stdout) != 0 {
		t.Fatalf("env printed %q", res.Stdout)
	}
}

// TestAnEditTakesEffectAtTheNextRequest: no restart, no signal.
func TestAnEditTakesEffectAtTheNextRequest(t *testing.T) {
	h := hubWith(t, `{"commands": []}`)
	in := RunInput{Account: "acme", Command: "env"}
	refused(t, h, asked, in, "not in the hub's allow-list")
	if err := os.WriteFile(h.AllowList, []byte(`{"commands": [{"name": "env", "path": "/usr/bin/env"}]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if res, err := h.handle(context.Background(), asked, in); err != nil || res.Refused != "" {
		t.Fatalf("after the edit: %+v %v", res, err)
	}
	if err := os.WriteFile(h.AllowList, []byte(`{"commands": [{"name": "env", "path": "/usr/bin/env", "shell": true}]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	refused(t, h, asked, in, "unknown field")
}

// TestAllowListWritableByOthersIsRefused: another user who could edit it
// could run anything as the hub.
func TestAllowListWritableByOthersIsRefused(t *testing.T) {
	h := hubWith(t, `{"commands": [{"name": "env", "path": "/usr/bin/env"}]}`)
	if err := os.Chmod(h.AllowList, 0o666); err != nil {
		t.Fatal(err)
	}
	refused(t, h, asked, RunInput{Account: "acme", Command: "env"}, "writable by others")
}

// TestRunCommandTakesTheCallerFromTemporal: the activity itself, in the
// SDK's activity environment (whose workflow is not a HubCommandWorkflow):
// refused and audited.
func TestRunCommandTakesTheCallerFromTemporal(t *testing.T) {
	var s testsuite.WorkflowTestSuite
	env := s.NewTestActivityEnvironment()
	h := hubWith(t, `{"commands": [{"name": "env", "path": "/usr/bin/env"}]}`)
	env.RegisterActivity(h)
	v, err := env.ExecuteActivity(h.RunCommand, RunInput{Account: "acme", Command: "env"})
	if err != nil {
		t.Fatal(err)
	}
	var res RunResult
	if err := v.Get(&res); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(res.Refused, "may not run commands") {
		t.Fatalf("%+v", res)
	}
}

func TestParseRefuses(t *testing.T) {
	for name, in := range map[string]string{
		"unknown field":       `{"commands": [{"name": "a", "path": "/bin/a", "shell": "sh -c"}]}`,
		"unknown top field":   `{"commands": [], "default": "allow"}`,
		"relative path":       `{"commands": [{"name": "a", "path": "bin/a"}]}`,
		"unclean path":        `{"commands": [{"name": "a", "path": "/bin/../tmp/a"}]}`,
		"no path":             `{"commands": [{"name": "a"}]}`,
		"bad name":            `{"commands": [{"name": "A B", "path": "/bin/a"}]}`,
		"twice":               `{"commands": [{"name": "a", "path": "/bin/a"}, {"name": "a", "path": "/bin/b"}]}`,
		"unknown placeholder": `{"commands": [{"name": "a", "path": "/bin/a", "args": [["<any>"]]}]}`,
		"two placeholders":    `{"commands": [{"name": "a", "path": "/bin/a", "args": [["<int><int>"]]}]}`,
		"stray bracket":       `{"commands": [{"name": "a", "path": "/bin/a", "args": [["a>b"]]}]}`,
		"long timeout":        `{"commands": [{"name": "a", "path": "/bin/a", "timeout": "2h"}]}`,
		"bad timeout":         `{"commands": [{"name": "a", "path": "/bin/a", "timeout": "soon"}]}`,
		"big output":          `{"commands": [{"name": "a", "path": "/bin/a", "max_output_bytes": 1073741824}]}`,
		"bad env":             `{"commands": [{"name": "a", "path": "/bin/a", "env": {"LD_PRELOAD=x": "y"}}]}`,
		"trailing":            `{"commands": []} {"commands": []}`,
		"not an object":       `[]`,
		"relative dir":        `{"commands": [{"name": "a", "path": "/bin/a", "dir": "tmp"}]}`,
		"too big":             `{"commands": []}` + strings.Repeat(" ", MaxAllowListBytes),
	} {
		if _, err := Parse([]byte(in)); err == nil {
			t.Errorf("%s: parsed", name)
		}
	}
}

func TestMatchArg(t *testing.T) {
	for _, tc := range []struct {
		p, arg string
		ok     bool
	}{
		{"-c", "-c", true}, {"-c", "-C", false}, {"<int>", "-5", true}, {"<int>", "5x", false},
		{"<uint>", "5", true}, {"<uint>", "", false}, {"<uint>", "99999999999999999999", false},
		{"<word>", "gpu0", true}, {"<word>", "-rf", false}, {"<word>", "a/b", false}, {"<word>", ".", false},
		{"--n=<uint>", "--n=3", true}, {"--n=<uint>", "--n=", false}, {"--n=<uint>", "--m=3", false},
		{"<word>.log", "x.log", true}, {"<word>.log", ".log", false}, {"<word>.log", "x.log.sh", false},
	} {
		if got := matchArg(tc.p, tc.arg); got != tc.ok {
			t.Errorf("matchArg(%q, %q) = %v", tc.p, tc.arg, got)
		}
	}
}

// FuzzParse: any bytes either fail or give entries that are all valid and
// that parse again the same.
func FuzzParse(f *testing.F) {
	f.Add([]byte(list))
	f.Add([]byte(`{"commands": [{"name": "a", "path": "/bin/a", "args": [["--x=<int>", "<word>"]], "env": {"A": "b"}}]}`))
	f.Add([]byte(`{"commands": null}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		l, err := Parse(b)
		if err != nil {
			return
		}
		for _, e := range l.Commands {
			if !filepath.IsAbs(e.Path) || !nameRE.MatchString(e.Name) || e.MaxOutputBytes <= 0 || e.MaxOutputBytes > MaxOutputBytes ||
				e.EffectiveTimeout() <= 0 || e.EffectiveTimeout() > MaxTimeout {
				t.Fatalf("accepted an invalid entry %+v", e)
			}
			for _, form := range e.Args {
				for _, p := range form {
					_ = matchArg(p, p)
				}
			}
		}
		again, err := json.Marshal(l)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := Parse(again); err != nil {
			t.Fatalf("re-encoded list refused: %v\n%s", err, again)
		}
	})
}

// alive reports whether pid runs (a zombie, killed and not yet reaped, does not).
func alive(pid int) bool {
	if syscall.Kill(pid, 0) != nil {
		return false
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return true
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] != 'Z'
}

// TestAReplaceableExecutableIsRefused: a command file someone else could
// rewrite (or whose directory they could write) is not run.
func TestAReplaceableExecutableIsRefused(t *testing.T) {
	dir := t.TempDir()
	exe := filepath.Join(dir, "tool")
	b, err := os.ReadFile("/usr/bin/true")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(exe, b, 0o755); err != nil {
		t.Fatal(err)
	}
	h := hubWith(t, `{"commands": [{"name": "tool", "path": "`+exe+`"}]}`)
	in := RunInput{Account: "acme", Command: "tool"}
	if res, err := h.handle(context.Background(), asked, in); err != nil || res.Refused != "" {
		t.Fatalf("0755 in a 0700 directory: %+v %v", res, err)
	}
	if err := os.Chmod(exe, 0o777); err != nil {
		t.Fatal(err)
	}
	refused(t, h, asked, in, "writable by others")
	if err := os.Chmod(exe, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.Chmod(dir, 0o700) })
	refused(t, h, asked, in, "in a directory others")
}

// TestRunningCommandsAreBounded: past MaxRunning a request is refused, not queued.
func TestRunningCommandsAreBounded(t *testing.T) {
	l, _ := listIn(t)
	h := hubWith(t, l)
	h.MaxRunning = 1
	done := make(chan RunResult)
	go func() {
		res, _ := h.handle(context.Background(), asked, RunInput{Account: "acme", Command: "sleep", Args: []string{"30"}})
		done <- res
	}()
	deadline := time.Now().Add(5 * time.Second)
	for {
		lines := audit(t, h)
		if len(lines) > 0 && lines[len(lines)-1].Event == EventStarted {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the first command did not start")
		}
		time.Sleep(10 * time.Millisecond)
	}
	refused(t, h, asked, RunInput{Account: "acme", Command: "env"}, "running on this hub already")
	if res := <-done; !res.TimedOut {
		t.Fatalf("first: %+v", res)
	}
	if res, err := h.handle(context.Background(), asked, RunInput{Account: "acme", Command: "env"}); err != nil || res.Refused != "" {
		t.Fatalf("after the first ended: %+v %v", res, err)
	}
}

// TestAuditLogIsRotated: a flood of requests keeps the log near its bound,
// with the previous file kept beside it.
func TestAuditLogIsRotated(t *testing.T) {
	h := hubWith(t, "")
	h.Audit.MaxBytes = 4096
	for range 100 {
		res, err := h.handle(context.Background(), asked, RunInput{Account: "acme", Command: "env", Args: []string{strings.Repeat("a", 200)}})
		if err != nil || res.Refused == "" {
			t.Fatalf("%+v %v", res, err)
		}
	}
	if lines := audit(t, h); len(lines) == 0 || lines[len(lines)-1].Event != EventRefused {
		t.Fatalf("the current log: %+v", lines)
	}
	for _, p := range []string{h.Audit.Path(), h.Audit.Path() + ".1"} {
		fi, err := os.Stat(p)
		if err != nil || fi.Size() > 4096 {
			t.Fatalf("%s: %v %v", p, fi, err)
		}
	}
}

// copyTrue writes an executable copy of /usr/bin/true at path.
func copyTrue(t *testing.T, path string, mode os.FileMode) {
	t.Helper()
	b, err := os.ReadFile("/usr/bin/true")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, mode); err != nil {
		t.Fatal(err)
	}
}

// TestASymlinkedOrForeignExecutableIsRefused is the attacker's test: the
// allow-list's path is a link, in a private directory, to a file in a
// directory anyone may write; or the file (or a directory above it) belongs
// to another user. Neither runs: the link is resolved and the file and
// every directory above it must be root's or the hub's own, and writable
// by their owner alone.
func TestASymlinkedOrForeignExecutableIsRefused(t *testing.T) {
	private, open := t.TempDir(), t.TempDir()
	if err := os.Chmod(open, 0o777); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.Chmod(open, 0o700) })
	copyTrue(t, filepath.Join(open, "tool"), 0o755)
	link := filepath.Join(private, "tool")
	if err := os.Symlink(filepath.Join(open, "tool"), link); err != nil {
		t.Fatal(err)
	}
	h := hubWith(t, `{"commands": [{"name": "tool", "path": "`+link+`"}]}`)
	refused(t, h, asked, RunInput{Account: "acme", Command: "tool"}, "in a directory others")

	if os.Getuid() != 0 {
		t.Log("not root: the owner checks need a file of another user and are not exercised")
		return
	}
	exe := filepath.Join(private, "theirs")
	copyTrue(t, exe, 0o755)
	h = hubWith(t, `{"commands": [{"name": "tool", "path": "`+exe+`"}]}`)
	if res, err := h.handle(context.Background(), asked, RunInput{Account: "acme", Command: "tool"}); err != nil || res.Refused != "" {
		t.Fatalf("the hub's own file: %+v %v", res, err)
	}
	if err := os.Chown(exe, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	refused(t, h, asked, RunInput{Account: "acme", Command: "tool"}, "owned by uid 65534")
	if err := os.Chown(exe, 0, 0); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(private, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.Chown(private, 0, 0) })
	refused(t, h, asked, RunInput{Account: "acme", Command: "tool"}, "owned by uid 65534")
}

// TestRefusalsDoNotRotateRunsAway is the auditor's test: a command runs,
// then a flood of refusals several times the log's bound follows; the
// run's lines are still in the kept generations, and no more than
// AuditGenerations old files are kept.
func TestRefusalsDoNotRotateRunsAway(t *testing.T) {
	l, _ := listIn(t)
	h := hubWith(t, l)
	h.Audit.MaxBytes = 4096
	if res, err := h.handle(context.Background(), asked, RunInput{Account: "acme", Command: "env"}); err != nil || res.Refused != "" {
		t.Fatalf("env: %+v %v", res, err)
	}
	for range 30 { // about 3 times MaxBytes
		if res, err := h.handle(context.Background(), asked, RunInput{Account: "acme", Command: "nope", Args: []string{strings.Repeat("a", 200)}}); err != nil || res.Refused == "" {
			t.Fatalf("%+v %v", res, err)
		}
	}
	var started, finished bool
	for g := range 7 {
		p := h.Audit.Path()
		if g > 0 {
			p += "." + strconv.Itoa(g)
		}
		lines, err := Recent(p, 1000)
		if err != nil {
			t.Fatal(err)
		}
		if g > 5 && len(lines) > 0 {
			t.Fatalf("generation %d kept", g)
		}
		for _, line := range lines {
			started = started || line.Event == EventStarted
			finished = finished || line.Event == EventFinished
		}
	}
	if !started || !finished {
		t.Fatalf("the run's lines were rotated away by refusals (started %v, finished %v)", started, finished)
	}
}

// TestALinkBlipDoesNotKillACommand: the SDK also ends an activity's
// context when a heartbeat cannot reach the server for a second (the
// hub's link to the bridge down a moment); the command runs on to its end.
// A cancellation, the activity gone on the server, the worker stopping or
// the run's own deadline do end it.
func TestALinkBlipDoesNotKillACommand(t *testing.T) {
	h := hubWith(t, `{"commands": [{"name": "nap", "path": "/bin/sh", "args": [["-c", "sleep 1; echo done"]]}]}`)
	ctx, cancel := context.WithCancelCause(context.Background())
	time.AfterFunc(100*time.Millisecond, func() { cancel(serviceerror.NewUnavailable("the link to the bridge is down")) })
	res, err := h.handle(ctx, asked, RunInput{Account: "acme", Command: "nap", Args: []string{"-c", "sleep 1; echo done"}})
	if err != nil || res.Cancelled || res.ExitCode != 0 || string(res.Stdout) != "done\n" {
		t.Fatalf("a heartbeat's failure killed the command: %+v %v", res, err)
	}
	past, stop := context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
	defer stop()
	future, stop2 := context.WithDeadline(context.Background(), time.Now().Add(time.Hour))
	defer stop2()
	for _, tc := range []struct {
		name   string
		parent context.Context
		cause  error
		want   bool
	}{
		{"cancelled by the workflow", context.Background(), temporal.NewCanceledError(), true},
		{"gone on the server", context.Background(), serviceerror.NewNotFound("no such activity"), true},
		{"the worker stopping", context.Background(), worker.ErrWorkerShutdown, true},
		{"reset on the server", context.Background(), activity.ErrActivityReset, true},
		{"paused on the server", context.Background(), activity.ErrActivityPaused, true},
		{"a caller outside Temporal", context.Background(), context.Canceled, true},
		{"its own deadline", past, context.DeadlineExceeded, true},
		{"a heartbeat call's deadline", future, context.DeadlineExceeded, false},
		{"the server unreachable", context.Background(), serviceerror.NewUnavailable("down"), false},
		{"a heartbeat call timed out", context.Background(), serviceerror.NewDeadlineExceeded("slow"), false},
	} {
		ctx, cancel := context.WithCancelCause(tc.parent)
		cancel(tc.cause)
		if got := ends(ctx); got != tc.want {
			t.Errorf("%s: ends %v, want %v", tc.name, got, tc.want)
		}
	}
}

// TestAScriptsInterpreterIsCheckedToo is the attacker's test: the
// allow-listed script is the owner's, in the owner's directory, but its
// "#!" line names a program in a directory anyone may write; whoever
// replaces that program runs what they like as the hub's user.
func TestAScriptsInterpreterIsCheckedToo(t *testing.T) {
	private, open := t.TempDir(), t.TempDir()
	sh, err := os.ReadFile("/bin/sh")
	if err != nil {
		t.Fatal(err)
	}
	interp := filepath.Join(open, "sh")
	if err := os.WriteFile(interp, sh, 0o755); err != nil {
		t.Fatal(err)
	}
	script := func(name, first string) string {
		p := filepath.Join(private, name)
		if err := os.WriteFile(p, []byte(first+"\necho ran\n"), 0o755); err != nil {
			t.Fatal(err)
		}
		return p
	}
	h := hubWith(t, `{"commands": [
		{"name": "tool", "path": "`+script("tool", "#!"+interp)+`"},
		{"name": "spaced", "path": "`+script("spaced", "#! \t"+interp+" -e")+`"},
		{"name": "relative", "path": "`+script("relative", "#!sh")+`"},
		{"name": "bare", "path": "`+script("bare", "#!   ")+`"},
		{"name": "deep", "path": "`+script("deep", "#!"+filepath.Join(private, "tool"))+`"}
	]}`)
	in := RunInput{Account: "acme", Command: "tool"}
	res, err := h.handle(context.Background(), asked, in)
	if err != nil || res.Refused != "" || string(res.Stdout) != "ran\n" {
		t.Fatalf("a script whose interpreter is the owner's, in the owner's directory: %+v %v", res, err)
	}
	if res, err := h.handle(context.Background(), asked, RunInput{Account: "acme", Command: "spaced"}); err != nil || res.Refused != "" {
		t.Fatalf("#! with blanks and an argument: %+v %v", res, err)
	}
	refused(t, h, asked, RunInput{Account: "acme", Command: "relative"}, "not an absolute path")
	refused(t, h, asked, RunInput{Account: "acme", Command: "bare"}, "names no interpreter")

	if err := os.Chmod(open, 0o777); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.Chmod(open, 0o700) })
	refused(t, h, asked, in, "interpreter "+interp+" is in a directory others")
	// A script that names such a script is refused for the same reason.
	refused(t, h, asked, RunInput{Account: "acme", Command: "deep"}, "in a directory others")
	if err := os.Chmod(open, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(interp, 0o777); err != nil {
		t.Fatal(err)
	}
	refused(t, h, asked, in, "writable by others")
}

// TestAScriptRunsOnItsCheckedInterpreter is the attacker's test of the
// links on the way: the "#!" line names a link in a directory anyone may
// write, to an interpreter that passes. The kernel would follow the link
// again at exec time, after whoever may write that directory pointed it
// elsewhere; the hub runs the interpreter it checked on the script it
// checked, as the kernel would have ([interpreter, argument, script,
// request's arguments]), so what the link names later does not run.
func TestAScriptRunsOnItsCheckedInterpreter(t *testing.T) {
	private, open := t.TempDir(), t.TempDir()
	sh, err := os.ReadFile("/bin/sh")
	if err != nil {
		t.Fatal(err)
	}
	real := filepath.Join(private, "sh")
	if err := os.WriteFile(real, sh, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(open, 0o777); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.Chmod(open, 0o700) })
	link := filepath.Join(open, "sh")
	if err := os.Symlink(real, link); err != nil {
		t.Fatal(err)
	}
	script := filepath.Join(private, "tool")
	if err := os.WriteFile(script, []byte("#!"+link+" -e\necho \"$0\" \"$@\"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	argv, err := checkExecutable(script)
	if err != nil || !slices.Equal(argv, []string{real, "-e", script}) {
		t.Fatalf("checked %v %v, want the resolved interpreter, its argument and the script", argv, err)
	}
	h := hubWith(t, `{"commands": [{"name": "tool", "path": "`+script+`", "args": [["<word>"]]}]}`)
	res, err := h.handle(context.Background(), asked, RunInput{Account: "acme", Command: "tool", Args: []string{"arg"}})
	if err != nil || res.Refused != "" || string(res.Stdout) != script+" arg\n" {
		t.Fatalf("the script on its checked interpreter: %+v %v", res, err)
	}
	// Checked, then the link is pointed elsewhere before the run starts.
	evil := filepath.Join(open, "evil")
	if err := os.WriteFile(evil, []byte("#!/bin/sh\necho pwned\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(link); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(evil, link); err != nil {
		t.Fatal(err)
	}
	o, err := Run(context.Background(), Entry{Path: script, argv: argv}, []string{"arg"}, time.Second)
	if err != nil || string(o.Stdout) != script+" arg\n" {
		t.Fatalf("the link retargeted after the check: %q %v, want the checked interpreter to have run", o.Stdout, err)
	}
	for name, first := range map[string]string{"cr": "#!/bin/sh\r", "long": "#!/bin/sh " + strings.Repeat("x", 300)} {
		p := filepath.Join(private, name)
		if err := os.WriteFile(p, []byte(first+"\n"), 0o755); err != nil {
			t.Fatal(err)
		}
		if _, err := checkExecutable(p); err == nil || !strings.Contains(err.Error(), "#!") {
			t.Fatalf("%s: %v, want the #! line refused", name, err)
		}
	}
}

// TestInterpretersNestAtMostFourDeep: a chain of "#!" scripts longer than
// the kernel follows is refused before it runs.
func TestInterpretersNestAtMostFourDeep(t *testing.T) {
	dir := t.TempDir()
	prev := "/bin/sh"
	for i := range maxInterpreters + 1 {
		p := filepath.Join(dir, "s"+strconv.Itoa(i))
		if err := os.WriteFile(p, []byte("#!"+prev+"\n"), 0o755); err != nil {
			t.Fatal(err)
		}
		prev = p
	}
	h := hubWith(t, `{"commands": [{"name": "tool", "path": "`+prev+`"},
		{"name": "four", "path": "`+filepath.Join(dir, "s"+strconv.Itoa(maxInterpreters-1))+`"}]}`)
	refused(t, h, asked, RunInput{Account: "acme", Command: "tool"}, "interpreters lead to its program")
	if res, err := h.handle(context.Background(), asked, RunInput{Account: "acme", Command: "four"}); err != nil || res.Refused != "" || res.ExitCode != 0 {
		t.Fatalf("four interpreters deep: %+v %v", res, err)
	}
}
