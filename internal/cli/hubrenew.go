package cli

import (
	"os"
	"path/filepath"

	"github.com/superinstance/mesh/hub/agent"
	"github.com/superinstance/mesh/internal/pki"
)

// hubCerts holds the device certificate hubTLS loaded, so that the agent
// renews it over the link and writes the renewed one where it was read.
func hubCerts(id, certPath, keyPath, caPath string) (*agent.Certs, error) {
	def := func(p *string, file string) {
		if *p == "" {
			*p = filepath.Join(deviceDir(id), file)
		}
	}
	def(&certPath, pki.CertFile)
	def(&keyPath, pki.KeyFile)
	def(&caPath, pki.CACertFile)
	var pems [3][]byte
	for i, p := range []string{caPath, certPath, keyPath} {
		b, err := os.ReadFile(p)
		if err != nil {
			return nil, err
		}
		pems[i] = b
	}
	return agent.NewCerts(pems[0], pems[1], pems[2], certPath, keyPath)
}
