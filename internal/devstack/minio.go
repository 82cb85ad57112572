package devstack

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"time"

	"github.com/superinstance/mesh/internal/blob"
)

// FindTool finds a helper binary on PATH, beside this executable, or in
// dir/bin for each dir given (a checkout's `make tools` output).
func FindTool(name string, dirs ...string) (string, error) {
	if bin, err := exec.LookPath(name); err == nil {
		return bin, nil
	}
	self, _ := os.Executable()
	for _, d := range append([]string{filepath.Dir(self)}, dirs...) {
		bin := filepath.Join(d, name)
		if st, err := os.Stat(bin); err == nil && !st.IsDir() {
			return bin, nil
		}
	}
	return "", fmt.Errorf("%s not found (make tools builds it)", name)
}

// MinIO is an S3-compatible store run as a child process.
type MinIO struct {
	Endpoint  string
	AccessKey string
	SecretKey string
	cmd       *exec.Cmd
	done      chan struct{}
}

// StartMinIO runs bin serving dataDir on listen ("127.0.0.1:0" picks a port).
func StartMinIO(bin, dataDir, listen string) (*MinIO, error) {
	host, port, err := splitListen(listen)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return nil, err
	}
	m := &MinIO{Endpoint: fmt.Sprintf("http://%s:%d", host, port), AccessKey: "si-dev-access", SecretKey: "si-dev-secret-key", done: make(chan struct{})}
	m.cmd = exec.Command(bin, "server", "--quiet", "--address", fmt.Sprintf("%s:%d", host, port), dataDir)
	m.cmd.Env = append(os.Environ(),
		"MINIO_ROOT_USER="+m.AccessKey, "MINIO_ROOT_PASSWORD="+m.SecretKey,
		"MINIO_BROWSER=off", "MINIO_UPDATE=off", "MINIO_CI_CD=on")
	logf, err := os.Create(filepath.Join(filepath.Dir(dataDir), "minio.log"))
	if err == nil {
		m.cmd.Stdout, m.cmd.Stderr = logf, logf
		defer logf.Close()
	}
	if err := m.cmd.Start(); err != nil {
		return nil, err
	}
	go func() { _ = m.cmd.Wait(); close(m.done) }()
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(m.Endpoint + "/minio/health/ready")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return m, nil
			}
		}
		select {
		case <-m.done:
			return nil, errors.New("minio exited while starting; see minio.log beside its data directory")
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			m.Stop()
			return nil, fmt.Errorf("minio did not become ready at %s", m.Endpoint)
		}
	}
}

// Config is a blob configuration for bucket on this server.
func (m *MinIO) Config(bucket string) blob.Config {
	return blob.Config{Endpoint: m.Endpoint, Region: "us-east-1", Bucket: bucket, AccessKey: m.AccessKey, SecretKey: m.SecretKey}
}

// Stop terminates the server and waits for it.
func (m *MinIO) Stop() {
	if m.cmd.Process != nil {
		_ = m.cmd.Process.Signal(os.Interrupt)
		select {
		case <-m.done:
		case <-time.After(5 * time.Second):
			_ = m.cmd.Process.Kill()
			<-m.done
		}
	}
}

func splitListen(listen string) (string, int, error) {
	host, port := "127.0.0.1", 0
	if listen != "" {
		h, p, err := net.SplitHostPort(listen)
		if err != nil {
			return "", 0, fmt.Errorf("minio address %q: %w", listen, err)
		}
		if port, err = strconv.Atoi(p); err != nil {
			return "", 0, fmt.Errorf("minio address %q: bad port", listen)
		}
		host = h
	}
	if port == 0 {
		p, err := FreePort(host)
		if err != nil {
			return "", 0, err
		}
		port = p
	}
	return host, port, nil
}
