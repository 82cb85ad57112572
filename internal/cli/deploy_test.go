package cli

import (
	"bufio"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// flagsOf returns the flags of the command at path ("hub", "server", ...).
func flagsOf(t *testing.T, path []string) *flag.FlagSet {
	t.Helper()
	c := Root()
	for _, name := range path {
		c = c.find(name)
		if c == nil {
			t.Fatalf("no command si %s", strings.Join(path, " "))
		}
	}
	fs := flag.NewFlagSet(strings.Join(path, " "), flag.ContinueOnError)
	if c.Flags != nil {
		c.Flags(fs)
	}
	return fs
}

// TestDeployFilesUseRealFlags parses each `si` command line in deploy/ and
// checks the command and every flag exist, and that every SI_ variable a
// unit sets names a flag of its command.
func TestDeployFilesUseRealFlags(t *testing.T) {
	units, _ := filepath.Glob(filepath.Join("..", "..", "deploy", "systemd", "*.service"))
	if len(units) == 0 {
		t.Fatal("no systemd units found")
	}
	for _, u := range units {
		f, err := os.Open(u)
		if err != nil {
			t.Fatal(err)
		}
		var envVars []string
		var cmd []string
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			line := strings.TrimSpace(sc.Text())
			if v, ok := strings.CutPrefix(line, "#   SI_"); ok {
				envVars = append(envVars, "SI_"+strings.SplitN(v, "=", 2)[0])
			}
			if v, ok := strings.CutPrefix(line, "ExecStart="); ok {
				cmd = strings.Fields(v)
			}
		}
		f.Close()
		if len(cmd) < 2 || filepath.Base(cmd[0]) != "si" {
			t.Fatalf("%s: ExecStart is not an si command: %v", u, cmd)
		}
		var path []string
		i := 1
		for ; i < len(cmd) && !strings.HasPrefix(cmd[i], "-"); i++ {
			path = append(path, cmd[i])
		}
		fs := flagsOf(t, path)
		for ; i < len(cmd); i++ {
			name, _, _ := strings.Cut(strings.TrimLeft(cmd[i], "-"), "=")
			if strings.HasPrefix(cmd[i], "-") && fs.Lookup(name) == nil {
				t.Errorf("%s: si %s has no flag --%s", u, strings.Join(path, " "), name)
			}
		}
		for _, env := range envVars {
			name := strings.ReplaceAll(strings.ToLower(strings.TrimPrefix(env, "SI_")), "_", "-")
			if fs.Lookup(name) == nil {
				t.Errorf("%s: %s names no flag of si %s", u, env, strings.Join(path, " "))
			}
		}
	}
}
