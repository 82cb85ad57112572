package cli

import (
	"bufio"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
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

// checkSI checks one si command line (without "si") and the SI_ variables
// it is given: the command and each flag exist, each variable names a flag.
func checkSI(t *testing.T, where string, args, env []string) {
	t.Helper()
	var path []string
	i := 0
	for ; i < len(args) && !strings.HasPrefix(args[i], "-"); i++ {
		path = append(path, args[i])
	}
	c := Root()
	for _, name := range path {
		if c = c.find(name); c == nil {
			t.Errorf("%s: no command si %s", where, strings.Join(path, " "))
			return
		}
	}
	fs := flagsOf(t, path)
	for ; i < len(args); i++ {
		if !strings.HasPrefix(args[i], "-") {
			continue
		}
		name, _, _ := strings.Cut(strings.TrimLeft(args[i], "-"), "=")
		if fs.Lookup(name) == nil {
			t.Errorf("%s: si %s has no flag --%s", where, strings.Join(path, " "), name)
		}
	}
	for _, v := range env {
		name := strings.ReplaceAll(strings.ToLower(strings.TrimPrefix(v, "SI_")), "_", "-")
		if fs.Lookup(name) == nil {
			t.Errorf("%s: %s names no flag of si %s", where, v, strings.Join(path, " "))
		}
	}
}

// shellSI returns the si command lines in a shell script.
func shellSI(script string) [][]string {
	var out [][]string
	for _, part := range strings.FieldsFunc(script, func(r rune) bool { return r == ';' || r == '\n' }) {
		for _, seg := range strings.Split(strings.ReplaceAll(part, "&&", "||"), "||") {
			f := strings.Fields(seg)
			if len(f) > 0 && f[0] == "si" {
				out = append(out, f[1:])
			}
		}
	}
	return out
}

func siEnv(env map[string]string) []string {
	var out []string
	for k := range env {
		if strings.HasPrefix(k, "SI_") {
			out = append(out, k)
		}
	}
	return out
}

// The compose file: every si service's command and SI_ settings exist.
func TestComposeUsesRealFlags(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "..", "deploy", "compose.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var compose struct {
		Services map[string]struct {
			Image       string            `yaml:"image"`
			Entrypoint  []string          `yaml:"entrypoint"`
			Command     []string          `yaml:"command"`
			Environment map[string]string `yaml:"environment"`
		} `yaml:"services"`
	}
	if err := yaml.Unmarshal(b, &compose); err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{"postgres": false, "temporal": false, "minio": false, "api": false, "bridge": false, "worker": false, "hub": false}
	roles := map[string]bool{}
	for name, svc := range compose.Services {
		if _, ok := want[name]; ok {
			want[name] = true
		}
		if !strings.HasPrefix(svc.Image, "superinstance/si") {
			continue
		}
		where := "compose service " + name
		if len(svc.Entrypoint) > 0 {
			lines := shellSI(strings.Join(svc.Command, "\n"))
			if len(lines) == 0 {
				t.Errorf("%s runs no si command", where)
			}
			// Each variable must be a flag of some command the script runs.
			for _, v := range siEnv(svc.Environment) {
				used := false
				for _, l := range lines {
					var path []string
					for _, a := range l {
						if strings.HasPrefix(a, "-") {
							break
						}
						path = append(path, a)
					}
					if flagsOf(t, path).Lookup(strings.ReplaceAll(strings.ToLower(strings.TrimPrefix(v, "SI_")), "_", "-")) != nil {
						used = true
					}
				}
				if !used {
					t.Errorf("%s: %s names no flag of its commands", where, v)
				}
			}
			for _, l := range lines {
				checkSI(t, where, l, nil)
			}
			continue
		}
		checkSI(t, where, svc.Command, siEnv(svc.Environment))
		for i, a := range svc.Command {
			if a == "--roles" && i+1 < len(svc.Command) {
				roles[svc.Command[i+1]] = true
			}
		}
	}
	for name, found := range want {
		if !found {
			t.Errorf("compose.yaml has no %s service", name)
		}
	}
	for _, r := range []string{"api", "bridge", "worker"} {
		if !roles[r] {
			t.Errorf("compose.yaml runs no server with --roles %s alone", r)
		}
	}
}

// The Kubernetes manifests: every si container's args and SI_ settings
// exist, the configuration keys are flags of si server, and the hub
// DaemonSet asks for a GPU.
func TestKubernetesManifestsUseRealFlags(t *testing.T) {
	files, _ := filepath.Glob(filepath.Join("..", "..", "deploy", "k8s", "*.yaml"))
	if len(files) == 0 {
		t.Fatal("no manifests in deploy/k8s")
	}
	type container struct {
		Name  string   `yaml:"name"`
		Image string   `yaml:"image"`
		Args  []string `yaml:"args"`
		Env   []struct {
			Name string `yaml:"name"`
		} `yaml:"env"`
		Resources struct {
			Limits map[string]any `yaml:"limits"`
		} `yaml:"resources"`
	}
	kinds := map[string]int{}
	gpu := false
	serverFlags := flagsOf(t, []string{"server"})
	for _, f := range files {
		fh, err := os.Open(f)
		if err != nil {
			t.Fatal(err)
		}
		dec := yaml.NewDecoder(fh)
		for {
			var doc struct {
				Kind     string                `yaml:"kind"`
				Metadata struct{ Name string } `yaml:"metadata"`
				Data     map[string]string     `yaml:"data"`
				Spec     struct {
					Template struct {
						Spec struct {
							InitContainers []container `yaml:"initContainers"`
							Containers     []container `yaml:"containers"`
						} `yaml:"spec"`
					} `yaml:"template"`
				} `yaml:"spec"`
			}
			if err := dec.Decode(&doc); err != nil {
				if err.Error() != "EOF" {
					t.Fatalf("%s: %v", f, err)
				}
				break
			}
			kinds[doc.Kind]++
			if doc.Kind == "ConfigMap" {
				for k := range doc.Data {
					if serverFlags.Lookup(strings.ReplaceAll(strings.ToLower(strings.TrimPrefix(k, "SI_")), "_", "-")) == nil {
						t.Errorf("%s: ConfigMap key %s names no flag of si server", f, k)
					}
				}
			}
			for _, c := range append(doc.Spec.Template.Spec.InitContainers, doc.Spec.Template.Spec.Containers...) {
				if !strings.HasPrefix(c.Image, "superinstance/si") {
					continue
				}
				var env []string
				for _, e := range c.Env {
					if strings.HasPrefix(e.Name, "SI_") {
						env = append(env, e.Name)
					}
				}
				checkSI(t, fmt.Sprintf("%s %s/%s", f, doc.Metadata.Name, c.Name), c.Args, env)
				if doc.Kind == "DaemonSet" && len(c.Args) > 0 && c.Args[0] == "hub" && c.Resources.Limits["nvidia.com/gpu"] != nil {
					gpu = true
				}
			}
		}
		fh.Close()
	}
	if kinds["Deployment"] < 3 || kinds["DaemonSet"] < 1 || kinds["Service"] < 2 {
		t.Errorf("manifests hold %v; want the three server roles, their Services and the hub DaemonSet", kinds)
	}
	if !gpu {
		t.Error("the hub DaemonSet does not ask for nvidia.com/gpu")
	}
}
