package devstack

import (
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

// child is a helper server run as a child process.
type child struct {
	cmd  *exec.Cmd
	done chan struct{}
}

// startChild starts cmd with its output in logPath and waits until
// readyURL answers 200.
func startChild(name string, cmd *exec.Cmd, logPath, readyURL string) (*child, error) {
	c := &child{cmd: cmd, done: make(chan struct{})}
	if logf, err := os.Create(logPath); err == nil {
		cmd.Stdout, cmd.Stderr = logf, logf
		defer logf.Close()
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	go func() { _ = cmd.Wait(); close(c.done) }()
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(readyURL)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return c, nil
			}
		}
		select {
		case <-c.done:
			return nil, fmt.Errorf("%s exited while starting; see %s", name, logPath)
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			c.Stop()
			return nil, fmt.Errorf("%s did not become ready at %s", name, readyURL)
		}
	}
}

// Stop terminates the process and waits for it.
func (c *child) Stop() {
	if c.cmd.Process != nil {
		_ = c.cmd.Process.Signal(os.Interrupt)
		select {
		case <-c.done:
		case <-time.After(5 * time.Second):
			_ = c.cmd.Process.Kill()
			<-c.done
		}
	}
}

// MinIO is an S3-compatible store run as a child process.
type MinIO struct {
	*child
	Endpoint  string
	AccessKey string
	SecretKey string
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
	m := &MinIO{Endpoint: fmt.Sprintf("http://%s:%d", host, port), AccessKey: "si-dev-access", SecretKey: "si-dev-secret-key"}
	cmd := exec.Command(bin, "server", "--quiet", "--address", fmt.Sprintf("%s:%d", host, port), dataDir)
	cmd.Env = append(os.Environ(),
		"MINIO_ROOT_USER="+m.AccessKey, "MINIO_ROOT_PASSWORD="+m.SecretKey,
		"MINIO_BROWSER=off", "MINIO_UPDATE=off", "MINIO_CI_CD=on")
	if m.child, err = startChild("minio", cmd, filepath.Join(filepath.Dir(dataDir), "minio.log"), m.Endpoint+"/minio/health/ready"); err != nil {
		return nil, err
	}
	return m, nil
}

// Config is a blob configuration for bucket on this server.
func (m *MinIO) Config(bucket string) blob.Config {
	return blob.Config{Endpoint: m.Endpoint, Region: "us-east-1", Bucket: bucket, AccessKey: m.AccessKey, SecretKey: m.SecretKey}
}

// Mailpit is a local SMTP server that keeps the messages it receives and
// shows them on a web page and an API, run as a child process.
type Mailpit struct {
	*child
	// SMTP is the SMTP host:port; URL the web interface and API.
	SMTP string
	URL  string
}

// StartMailpit runs bin with SMTP on smtpListen and the web interface on
// httpListen ("127.0.0.1:0" picks a port); messages are kept in dataDir,
// or in memory when it is empty.
func StartMailpit(bin, dataDir, smtpListen, httpListen string) (*Mailpit, error) {
	sh, sp, err := splitListen(smtpListen)
	if err != nil {
		return nil, err
	}
	hh, hp, err := splitListen(httpListen)
	if err != nil {
		return nil, err
	}
	m := &Mailpit{SMTP: fmt.Sprintf("%s:%d", sh, sp), URL: fmt.Sprintf("http://%s:%d", hh, hp)}
	args := []string{"--smtp", m.SMTP, "--listen", fmt.Sprintf("%s:%d", hh, hp), "--smtp-auth-accept-any", "--smtp-auth-allow-insecure"}
	logPath := filepath.Join(os.TempDir(), fmt.Sprintf("si-mailpit-%d.log", sp))
	if dataDir != "" {
		if err := os.MkdirAll(dataDir, 0o700); err != nil {
			return nil, err
		}
		args = append(args, "--database", filepath.Join(dataDir, "mailpit.db"))
		logPath = filepath.Join(dataDir, "mailpit.log")
	}
	if m.child, err = startChild("mailpit", exec.Command(bin, args...), logPath, m.URL+"/readyz"); err != nil {
		return nil, err
	}
	return m, nil
}

func splitListen(listen string) (string, int, error) {
	host, port := "127.0.0.1", 0
	if listen != "" {
		h, p, err := net.SplitHostPort(listen)
		if err != nil {
			return "", 0, fmt.Errorf("address %q: %w", listen, err)
		}
		if port, err = strconv.Atoi(p); err != nil {
			return "", 0, fmt.Errorf("address %q: bad port", listen)
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
