package cli

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"

	"gopkg.in/yaml.v3"
)

// The worker puts adapters in --lora-cache-dir and tells the inference
// server to load them from that path: in the Kubernetes manifests the
// directory is a shared volume (a claim, not the worker's emptyDir) that
// the inference server mounts at the same path.
func TestKubernetesAdapterCacheIsSharedWithTheInferenceServer(t *testing.T) {
	files, _ := filepath.Glob(filepath.Join("..", "..", "deploy", "k8s", "*.yaml"))
	type mount struct {
		Name      string `yaml:"name"`
		MountPath string `yaml:"mountPath"`
	}
	type container struct {
		Name         string   `yaml:"name"`
		Image        string   `yaml:"image"`
		Args         []string `yaml:"args"`
		VolumeMounts []mount  `yaml:"volumeMounts"`
	}
	type volume struct {
		Name string `yaml:"name"`
		PVC  *struct {
			ClaimName string `yaml:"claimName"`
		} `yaml:"persistentVolumeClaim"`
	}
	type pod struct {
		name       string
		containers []container
		volumes    map[string]volume
	}
	var pods []pod
	for _, f := range files {
		fh, err := os.Open(f)
		if err != nil {
			t.Fatal(err)
		}
		dec := yaml.NewDecoder(fh)
		for {
			var doc struct {
				Metadata struct{ Name string } `yaml:"metadata"`
				Spec     struct {
					Template struct {
						Spec struct {
							Containers []container `yaml:"containers"`
							Volumes    []volume    `yaml:"volumes"`
						} `yaml:"spec"`
					} `yaml:"template"`
				} `yaml:"spec"`
			}
			if err := dec.Decode(&doc); errors.Is(err, io.EOF) {
				break
			} else if err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			p := pod{name: doc.Metadata.Name, containers: doc.Spec.Template.Spec.Containers, volumes: map[string]volume{}}
			for _, v := range doc.Spec.Template.Spec.Volumes {
				p.volumes[v.Name] = v
			}
			pods = append(pods, p)
		}
		fh.Close()
	}
	// claimAt is the claim mounted at path in c, or "".
	claimAt := func(p pod, c container, path string) string {
		for _, m := range c.VolumeMounts {
			if m.MountPath == path {
				if v := p.volumes[m.Name]; v.PVC != nil {
					return v.PVC.ClaimName
				}
			}
		}
		return ""
	}
	workers := 0
	for _, p := range pods {
		for _, c := range p.containers {
			dir := ""
			for i, a := range c.Args {
				if a == "--lora-cache-dir" && i+1 < len(c.Args) {
					dir = c.Args[i+1]
				}
			}
			if dir == "" {
				continue
			}
			workers++
			claim := claimAt(p, c, dir)
			if claim == "" {
				t.Fatalf("%s/%s keeps --lora-cache-dir %s on a volume of its own, which the inference server cannot read", p.name, c.Name, dir)
			}
			shared := false
			for _, q := range pods {
				for _, d := range q.containers {
					if q.name != p.name && claimAt(q, d, dir) == claim {
						shared = true
					}
				}
			}
			if !shared {
				t.Fatalf("no other pod (the inference server) mounts claim %s at %s", claim, dir)
			}
		}
	}
	if workers == 0 {
		t.Fatal("no container sets --lora-cache-dir")
	}
}
