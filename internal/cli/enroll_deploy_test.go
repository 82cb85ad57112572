package cli

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

// caOrDatabase reports whether an argument, variable, volume or path would
// hand a hub the CA's key or the mesh's database.
func caOrDatabase(s string) bool {
	l := strings.ToLower(s)
	for _, bad := range []string{"ca-key", "ca-dir", "database", "postgres", "si-ca", "si-secrets"} {
		if strings.Contains(l, bad) {
			return true
		}
	}
	return false
}

// TestHubDeployHoldsNoCAKeyOrDatabase: on a GPU node nothing mounts the
// CA's key or is given the database URL: the hub's init container enrolls
// with a one-time token (si hub enroll) from a Secret of its own, so one
// compromised node cannot mint device certificates or read the ledger.
// The same holds for compose's hub and its enrollment.
func TestHubDeployHoldsNoCAKeyOrDatabase(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "..", "deploy", "k8s", "hub.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	type container struct {
		Name string   `yaml:"name"`
		Args []string `yaml:"args"`
		Env  []struct {
			Name      string `yaml:"name"`
			ValueFrom struct {
				SecretKeyRef struct{ Name, Key string } `yaml:"secretKeyRef"`
			} `yaml:"valueFrom"`
		} `yaml:"env"`
		VolumeMounts []struct {
			Name      string `yaml:"name"`
			MountPath string `yaml:"mountPath"`
		} `yaml:"volumeMounts"`
	}
	dec := yaml.NewDecoder(strings.NewReader(string(b)))
	enrolls := false
	for {
		var doc struct {
			Kind string `yaml:"kind"`
			Spec struct {
				Template struct {
					Spec struct {
						InitContainers []container `yaml:"initContainers"`
						Containers     []container `yaml:"containers"`
						Volumes        []struct {
							Name   string `yaml:"name"`
							Secret struct {
								SecretName string `yaml:"secretName"`
							} `yaml:"secret"`
						} `yaml:"volumes"`
					} `yaml:"spec"`
				} `yaml:"template"`
			} `yaml:"spec"`
		}
		if dec.Decode(&doc) != nil {
			break
		}
		for _, v := range doc.Spec.Template.Spec.Volumes {
			if caOrDatabase(v.Name) || caOrDatabase(v.Secret.SecretName) {
				t.Errorf("hub.yaml mounts volume %s (secret %q) on GPU nodes", v.Name, v.Secret.SecretName)
			}
		}
		for _, c := range append(doc.Spec.Template.Spec.InitContainers, doc.Spec.Template.Spec.Containers...) {
			if len(c.Args) > 1 && c.Args[0] == "hub" && c.Args[1] == "enroll" {
				enrolls = true
			}
			for _, a := range c.Args {
				if caOrDatabase(a) {
					t.Errorf("hub.yaml's %s container is given %s", c.Name, a)
				}
			}
			if len(c.Args) > 1 && c.Args[0] == "device" {
				t.Errorf("hub.yaml's %s container runs si device (an operator command)", c.Name)
			}
			for _, e := range c.Env {
				if caOrDatabase(e.Name) || caOrDatabase(e.ValueFrom.SecretKeyRef.Key) || caOrDatabase(e.ValueFrom.SecretKeyRef.Name) {
					t.Errorf("hub.yaml's %s container has %s", c.Name, e.Name)
				}
			}
			for _, m := range c.VolumeMounts {
				if caOrDatabase(m.Name) || strings.HasSuffix(m.MountPath, "/ca") {
					t.Errorf("hub.yaml's %s container mounts %s at %s", c.Name, m.Name, m.MountPath)
				}
			}
		}
	}
	if !enrolls {
		t.Error("hub.yaml does not enroll its hubs with si hub enroll")
	}

	cb, err := os.ReadFile(filepath.Join("..", "..", "deploy", "compose.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var compose struct {
		Services map[string]struct {
			Command     []string          `yaml:"command"`
			Environment map[string]string `yaml:"environment"`
			Volumes     []string          `yaml:"volumes"`
		} `yaml:"services"`
	}
	if err := yaml.Unmarshal(cb, &compose); err != nil {
		t.Fatal(err)
	}
	composeEnrolls := false
	for name, s := range compose.Services {
		if len(s.Command) == 0 || s.Command[0] != "hub" {
			continue
		}
		if len(s.Command) > 1 && s.Command[1] == "enroll" {
			composeEnrolls = true
		}
		for _, a := range s.Command {
			if caOrDatabase(a) {
				t.Errorf("compose's %s service is given %s", name, a)
			}
		}
		for k, v := range s.Environment {
			if caOrDatabase(k) || caOrDatabase(v) {
				t.Errorf("compose's %s service has %s", name, k)
			}
		}
		for _, v := range s.Volumes {
			if src, _, _ := strings.Cut(v, ":"); src == "ca" || caOrDatabase(src) {
				t.Errorf("compose's %s service mounts %s", name, v)
			}
		}
	}
	if !composeEnrolls {
		t.Error("compose.yaml does not enroll its hub with si hub enroll")
	}
}
