package cli

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

// temporalAccess reports whether a flag or SI_ variable name would hand a
// hub Temporal's address or a credential for it.
func temporalAccess(name string) bool {
	n := strings.ReplaceAll(strings.ToLower(strings.TrimPrefix(strings.TrimLeft(name, "-"), "SI_")), "_", "-")
	n, _, _ = strings.Cut(n, "=")
	return strings.HasPrefix(n, "temporal") || n == "api-key" || strings.HasPrefix(n, "tls-")
}

// TestHubHoldsNoTemporalAccess: si hub takes no Temporal address or
// credential, and no hub deploy file hands it one (its worker goes through
// the bridge with the device certificate).
func TestHubHoldsNoTemporalAccess(t *testing.T) {
	for _, name := range []string{"temporal-address", "api-key", "tls", "tls-cert-path", "tls-key-path", "tls-ca-path", "tls-server-name"} {
		if flagsOf(t, []string{"hub"}).Lookup(name) != nil {
			t.Errorf("si hub has a --%s flag", name)
		}
	}
	read := func(parts ...string) []byte {
		b, err := os.ReadFile(filepath.Join(append([]string{"..", "..", "deploy"}, parts...)...))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	check := func(where string, names []string) {
		for _, n := range names {
			if temporalAccess(n) {
				t.Errorf("%s hands the hub %s", where, n)
			}
		}
	}

	var compose struct {
		Services map[string]struct {
			Command     []string          `yaml:"command"`
			Environment map[string]string `yaml:"environment"`
		} `yaml:"services"`
	}
	if err := yaml.Unmarshal(read("compose.yaml"), &compose); err != nil {
		t.Fatal(err)
	}
	hub, ok := compose.Services["hub"]
	if !ok {
		t.Fatal("compose.yaml has no hub service")
	}
	names := append([]string{}, hub.Command...)
	for k := range hub.Environment {
		names = append(names, k)
	}
	check("compose.yaml's hub service", names)

	dec := yaml.NewDecoder(strings.NewReader(string(read("k8s", "hub.yaml"))))
	found := false
	for {
		var doc struct {
			Kind string `yaml:"kind"`
			Spec struct {
				Template struct {
					Spec struct {
						Containers []struct {
							Args []string `yaml:"args"`
							Env  []struct {
								Name string `yaml:"name"`
							} `yaml:"env"`
						} `yaml:"containers"`
					} `yaml:"spec"`
				} `yaml:"template"`
			} `yaml:"spec"`
		}
		if dec.Decode(&doc) != nil {
			break
		}
		for _, c := range doc.Spec.Template.Spec.Containers {
			if len(c.Args) == 0 || c.Args[0] != "hub" {
				continue
			}
			found = true
			names := append([]string{}, c.Args...)
			for _, e := range c.Env {
				names = append(names, e.Name)
			}
			check("deploy/k8s/hub.yaml's hub container", names)
		}
	}
	if !found {
		t.Fatal("deploy/k8s/hub.yaml runs no si hub container")
	}

	var unit []string
	for _, line := range strings.Split(string(read("systemd", "si-hub.service")), "\n") {
		line = strings.TrimSpace(line)
		if v, ok := strings.CutPrefix(line, "ExecStart="); ok {
			unit = append(unit, strings.Fields(v)...)
		}
		if v, ok := strings.CutPrefix(line, "#   SI_"); ok {
			unit = append(unit, "SI_"+strings.SplitN(v, "=", 2)[0])
		}
		if v, ok := strings.CutPrefix(line, "Environment="); ok {
			unit = append(unit, strings.SplitN(v, "=", 2)[0])
		}
	}
	check("deploy/systemd/si-hub.service", unit)
}
