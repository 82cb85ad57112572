package cli

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/superinstance/mesh/hub/hubcmd"
)

// si hub exec holds Temporal credentials: it is the operator's; si hub
// commands reads only the hub's own files.
func TestHubExecIsAnOperatorCommand(t *testing.T) {
	if !find(t, []string{"hub", "exec"}).Operator {
		t.Fatal("si hub exec is not marked an operator command")
	}
	if !find(t, []string{"hub", "audit"}).Operator {
		t.Fatal("si hub audit is not marked an operator command")
	}
	if find(t, []string{"hub", "commands"}).Operator {
		t.Fatal("si hub commands is marked an operator command")
	}
}

func TestHubExecRefusesBadRequestsBeforeDialling(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"hub", "exec", "--", "echo"}, "--device is required"},
		{[]string{"hub", "exec", "--device", "gpu-1"}, "name the command after --"},
		{[]string{"hub", "exec", "--device", "gpu-1", "--", "/bin/sh", "-c", "id"}, "command name"},
		{[]string{"hub", "exec", "--device", "gpu-1", "--timeout", "2h", "--", "echo"}, "--timeout"},
	} {
		var out, errb strings.Builder
		// An address nothing listens on: a request that got as far as dialling would say so.
		code := Main(append(tc.args, "--temporal-address", "127.0.0.1:9"), &out, &errb)
		if code == 0 || !strings.Contains(errb.String(), tc.want) {
			t.Errorf("%v: exit %d %q, want %q", tc.args, code, errb.String(), tc.want)
		}
	}
}

func TestHubCommandsShowsWhatTheHubReads(t *testing.T) {
	dir := t.TempDir()
	list := filepath.Join(dir, "commands.json")
	var out, errb strings.Builder
	if code := Main([]string{"hub", "commands", "--commands", list}, &out, &errb); code != 0 || !strings.HasPrefix(out.String(), "nothing runs: no allow-list") {
		t.Fatalf("no file: exit %d %q %q", code, out.String(), errb.String())
	}
	if err := os.WriteFile(list, []byte(`{"commands": [{"name": "up", "path": "/usr/bin/uptime"}], "shell": true}`), 0o600); err != nil {
		t.Fatal(err)
	}
	out.Reset()
	if code := Main([]string{"hub", "commands", "--commands", list}, &out, &errb); code != 0 || !strings.Contains(out.String(), `unknown field "shell"`) {
		t.Fatalf("bad file: exit %d %q", code, out.String())
	}
	if err := os.WriteFile(list, []byte(`{"commands": [{"name": "up", "path": "/usr/bin/uptime"}]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	out.Reset()
	if code := Main([]string{"hub", "commands", "--commands", list}, &out, &errb); code != 0 || !strings.Contains(out.String(), "/usr/bin/uptime") ||
		!strings.Contains(out.String(), "no request yet") {
		t.Fatalf("a file: exit %d %q", code, out.String())
	}
}

// Arguments a requester chose reach the hub owner's terminal without their
// escape sequences.
func TestHubCommandsPrintsNoEscapeSequences(t *testing.T) {
	dir := t.TempDir()
	list := filepath.Join(dir, "commands.json")
	a := hubcmd.NewAudit(filepath.Join(dir, hubcmd.AuditFile))
	if err := a.Append(hubcmd.AuditLine{Event: hubcmd.EventRefused, Command: "x", Args: []string{"\x1b]0;pwned\x07\x1b[2J"},
		AskedBy: "evil\x1b[31m", Refused: "no\ttab\nline"}); err != nil {
		t.Fatal(err)
	}
	var out, errb strings.Builder
	if code := Main([]string{"hub", "commands", "--commands", list}, &out, &errb); code != 0 {
		t.Fatalf("exit %d %s", code, errb.String())
	}
	if strings.ContainsAny(out.String(), "\x1b\x07") || !strings.Contains(out.String(), "]0;pwned") || !strings.Contains(out.String(), "no tab line") {
		t.Fatalf("%q", out.String())
	}
}
