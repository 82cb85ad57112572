// Package pgcluster runs a private PostgreSQL cluster from the machine's own
// server binaries (initdb, pg_ctl). It backs `si dev` and the test harness.
//
// PostgreSQL refuses to run as root, so when the process is root the cluster
// is owned by and run as the `postgres` user (through runuser). A data
// directory that user cannot reach (anything under /root, for instance) is
// then relocated under /var/lib/si, keyed by a hash of the requested path so
// the same data directory always maps to the same cluster.
package pgcluster

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/superinstance/mesh/internal/netport"
)

// ErrBinariesMissing reports that initdb or pg_ctl could not be found.
var ErrBinariesMissing = errors.New("PostgreSQL server binaries (initdb, pg_ctl) not found: " +
	"install them (Debian/Ubuntu: apt-get install postgresql) or point at an existing server with --database-url")

// Options configures a cluster. The zero value is not usable: Dir is required.
type Options struct {
	// Dir is where the cluster's files live. Created if missing.
	Dir string
	// Port is the TCP port on 127.0.0.1. Zero picks a free port.
	Port int
	// Database is created on first start. Default "si".
	Database string
	// BinDir holds initdb and pg_ctl. Empty searches PATH and /usr/lib/postgresql/*/bin.
	BinDir string
	// Log receives progress lines. Nil discards them.
	Log func(format string, args ...any)
}

// Cluster is a running private PostgreSQL server.
type Cluster struct {
	opts    Options
	dataDir string
	runAs   string // "" or "postgres"
	port    int
	bin     string
}

// Start initialises the cluster if needed and starts it. A cluster left
// running by an earlier process (a crash, kill -9) is stopped and restarted so
// that its settings are this call's.
func Start(ctx context.Context, opts Options) (*Cluster, error) {
	if opts.Dir == "" {
		return nil, errors.New("pgcluster: Dir is required")
	}
	if opts.Database == "" {
		opts.Database = "si"
	}
	if opts.Log == nil {
		opts.Log = func(string, ...any) {}
	}
	bin, err := findBinaries(opts.BinDir)
	if err != nil {
		return nil, err
	}
	abs, err := filepath.Abs(opts.Dir)
	if err != nil {
		return nil, err
	}
	c := &Cluster{opts: opts, bin: bin, dataDir: abs}
	if os.Geteuid() == 0 {
		if _, err := user.Lookup("postgres"); err != nil {
			return nil, errors.New("running as root needs a 'postgres' system user to own the cluster " +
				"(apt-get install postgresql creates it), or pass --database-url")
		}
		c.runAs = "postgres"
		if d := DataDirFor(abs); d != abs {
			c.dataDir = d
			opts.Log("postgres: %s is not reachable by the postgres user; cluster kept in %s", abs, c.dataDir)
		}
	}
	c.port = opts.Port
	if c.port == 0 {
		if c.port, err = freePort(); err != nil {
			return nil, err
		}
	}
	if err := c.prepareDir(); err != nil {
		return nil, err
	}
	if _, err := os.Stat(filepath.Join(c.dataDir, "PG_VERSION")); err != nil {
		opts.Log("postgres: initdb %s", c.dataDir)
		if out, err := c.run(ctx, "initdb", "-D", c.dataDir, "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync"); err != nil {
			return nil, fmt.Errorf("initdb: %w: %s", err, out)
		}
	}
	// A stale server from an earlier run would hold the data directory.
	if _, err := os.Stat(filepath.Join(c.dataDir, "postmaster.pid")); err == nil {
		_, _ = c.run(ctx, "pg_ctl", "-D", c.dataDir, "-m", "immediate", "-w", "stop")
	}
	// TCP only: a Unix socket path inside a deep data directory can exceed the kernel's limit.
	serverOpts := fmt.Sprintf("-c listen_addresses=127.0.0.1 -p %d -k '' -c max_connections=200 -c shared_buffers=128MB", c.port)
	logFile := filepath.Join(c.dataDir, "server.log")
	if out, err := c.run(ctx, "pg_ctl", "-D", c.dataDir, "-l", logFile, "-o", serverOpts, "-w", "-t", "60", "start"); err != nil {
		tail, _ := os.ReadFile(logFile)
		return nil, fmt.Errorf("pg_ctl start: %w: %s\n%s", err, out, lastLines(string(tail), 10))
	}
	if err := c.ensureDatabase(ctx); err != nil {
		_ = c.Stop(context.Background())
		return nil, err
	}
	return c, nil
}

// URL is the connection string of the cluster's database.
func (c *Cluster) URL() string {
	return c.DatabaseURL(c.opts.Database)
}

// DatabaseURL is the connection string for another database on this cluster.
func (c *Cluster) DatabaseURL(db string) string {
	u := url.URL{Scheme: "postgres", User: url.User("postgres"), Host: net.JoinHostPort("127.0.0.1", strconv.Itoa(c.port)), Path: "/" + db}
	u.RawQuery = "sslmode=disable"
	return u.String()
}

// DataDir is where the cluster's files are.
func (c *Cluster) DataDir() string { return c.dataDir }

// Port is the TCP port the server listens on.
func (c *Cluster) Port() int { return c.port }

// Stop shuts the server down ("fast": open sessions are disconnected).
func (c *Cluster) Stop(ctx context.Context) error {
	out, err := c.run(ctx, "pg_ctl", "-D", c.dataDir, "-m", "fast", "-w", "-t", "60", "stop")
	if err != nil {
		return fmt.Errorf("pg_ctl stop: %w: %s", err, out)
	}
	return nil
}

// Remove deletes the cluster's files. The server must be stopped.
func (c *Cluster) Remove() error { return os.RemoveAll(c.dataDir) }

func (c *Cluster) ensureDatabase(ctx context.Context) error {
	psql := filepath.Join(c.bin, "psql")
	if _, err := os.Stat(psql); err != nil {
		psql = "psql"
	}
	q := fmt.Sprintf("SELECT 1 FROM pg_database WHERE datname = '%s'", strings.ReplaceAll(c.opts.Database, "'", "''"))
	base := []string{"-h", "127.0.0.1", "-p", strconv.Itoa(c.port), "-U", "postgres", "-d", "postgres", "-Atq", "-c"}
	out, err := exec.CommandContext(ctx, psql, append(base, q)...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("psql: %w: %s", err, out)
	}
	if strings.TrimSpace(string(out)) == "1" {
		return nil
	}
	create := fmt.Sprintf(`CREATE DATABASE "%s"`, strings.ReplaceAll(c.opts.Database, `"`, `""`))
	if out, err := exec.CommandContext(ctx, psql, append(base, create)...).CombinedOutput(); err != nil {
		return fmt.Errorf("create database: %w: %s", err, out)
	}
	return nil
}

func (c *Cluster) prepareDir() error {
	if err := os.MkdirAll(filepath.Dir(c.dataDir), 0o755); err != nil {
		return err
	}
	if err := os.Mkdir(c.dataDir, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return err
	}
	if c.runAs == "" {
		return nil
	}
	u, err := user.Lookup(c.runAs)
	if err != nil {
		return err
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return os.Chown(c.dataDir, uid, gid)
}

// DataDirFor is where the cluster asked for at dir keeps its files: dir
// itself, or, for root when the postgres user cannot reach dir, a directory
// under /var/lib/si/pg named by a hash of dir.
func DataDirFor(dir string) string {
	abs, err := filepath.Abs(dir)
	if err != nil || os.Geteuid() != 0 || reachable(filepath.Dir(abs)) {
		return abs
	}
	sum := sha256.Sum256([]byte(abs))
	return filepath.Join("/var/lib/si/pg", hex.EncodeToString(sum[:6]))
}

// reachable reports whether the postgres user can traverse to dir.
func reachable(dir string) bool {
	for d := dir; ; d = filepath.Dir(d) {
		if _, err := os.Stat(d); err == nil {
			if err := exec.Command("runuser", "-u", "postgres", "--", "test", "-x", d).Run(); err != nil {
				return false
			}
		}
		if d == filepath.Dir(d) {
			return true
		}
	}
}

// StopStale stops a cluster left running in dir by a process that is gone
// (a crashed test binary, say). It does nothing if no server runs there.
func StopStale(ctx context.Context, dir string) error {
	bin, err := findBinaries("")
	if err != nil {
		return err
	}
	c := &Cluster{bin: bin, dataDir: DataDirFor(dir)}
	if os.Geteuid() == 0 {
		c.runAs = "postgres"
	}
	if _, err := os.Stat(filepath.Join(c.dataDir, "postmaster.pid")); err != nil {
		return nil
	}
	_, err = c.run(ctx, "pg_ctl", "-D", c.dataDir, "-m", "immediate", "-w", "stop")
	return err
}

func (c *Cluster) run(ctx context.Context, tool string, args ...string) (string, error) {
	path := filepath.Join(c.bin, tool)
	var cmd *exec.Cmd
	if c.runAs != "" {
		cmd = exec.CommandContext(ctx, "runuser", append([]string{"-u", c.runAs, "--", path}, args...)...)
	} else {
		cmd = exec.CommandContext(ctx, path, args...)
	}
	cmd.Dir = "/"
	var buf bytes.Buffer
	cmd.Stdout = &buf
	cmd.Stderr = &buf
	err := cmd.Run()
	return strings.TrimSpace(buf.String()), err
}

func findBinaries(binDir string) (string, error) {
	has := func(dir string) bool {
		for _, t := range []string{"initdb", "pg_ctl"} {
			if st, err := os.Stat(filepath.Join(dir, t)); err != nil || st.IsDir() {
				return false
			}
		}
		return true
	}
	if binDir != "" {
		if has(binDir) {
			return binDir, nil
		}
		return "", fmt.Errorf("%w (looked in %s)", ErrBinariesMissing, binDir)
	}
	if p, err := exec.LookPath("initdb"); err == nil && has(filepath.Dir(p)) {
		return filepath.Dir(p), nil
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	// Highest major version first.
	sort.Slice(dirs, func(i, j int) bool { return majorOf(dirs[i]) > majorOf(dirs[j]) })
	for _, d := range dirs {
		if has(d) {
			return d, nil
		}
	}
	return "", ErrBinariesMissing
}

func majorOf(binDir string) int {
	n, _ := strconv.Atoi(filepath.Base(filepath.Dir(binDir)))
	return n
}

func freePort() (int, error) { return netport.Free("127.0.0.1") }

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
