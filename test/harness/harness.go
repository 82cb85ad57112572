// Package harness starts the real services that integration and end-to-end
// tests run against: an embedded Temporal server, PostgreSQL and the
// inference simulator. Every test package that needs them uses this one
// harness.
//
// PostgreSQL comes from DATABASE_URL when it is set (each test then gets a
// schema of its own, dropped afterwards); otherwise one private cluster is
// started from the machine's binaries for the test binary and removed at the
// end. Temporal is one in-memory server per test binary. Both are shared by a
// package's tests, which therefore do not run in parallel with each other.
//
// A package that uses the harness calls harness.Main from its TestMain so the
// shared services are stopped when its tests end.
package harness

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/worker"

	"github.com/superinstance/mesh/activities"
	"github.com/superinstance/mesh/internal/billing"
	"github.com/superinstance/mesh/internal/blob"
	"github.com/superinstance/mesh/internal/config"
	"github.com/superinstance/mesh/internal/devstack"
	"github.com/superinstance/mesh/internal/llm"
	"github.com/superinstance/mesh/internal/pgcluster"
	"github.com/superinstance/mesh/internal/simulator"
	"github.com/superinstance/mesh/internal/store"
	"github.com/superinstance/mesh/workers"
	"github.com/superinstance/mesh/workflows"
)

var shared struct {
	mu       sync.Mutex
	temporal *devstack.Temporal
	pg       *pgcluster.Cluster
	pgDir    string
	minio    *devstack.MinIO
	mailpit  *devstack.Mailpit
	stops    []func()
}

// Main runs a package's tests and then stops the shared services.
func Main(m *testing.M) { Exit(m.Run()) }

// Exit stops the shared services and exits with code.
func Exit(code int) {
	shared.mu.Lock()
	for i := len(shared.stops) - 1; i >= 0; i-- {
		shared.stops[i]()
	}
	shared.mu.Unlock()
	os.Exit(code)
}

// Temporal returns the shared embedded Temporal server's frontend address.
func Temporal(t testing.TB) string {
	t.Helper()
	shared.mu.Lock()
	defer shared.mu.Unlock()
	if shared.temporal == nil {
		ts, err := devstack.StartTemporal(devstack.TemporalOptions{SearchAttributes: workflows.SearchAttributes()})
		if err != nil {
			t.Fatalf("embedded temporal: %v", err)
		}
		shared.temporal = ts
		shared.stops = append(shared.stops, ts.Stop)
	}
	return shared.temporal.Address()
}

// Client returns an SDK client of the shared Temporal server, closed at cleanup.
func Client(t testing.TB) client.Client {
	t.Helper()
	return ClientOf(t, Temporal(t))
}

// ClientOf returns an SDK client of the Temporal frontend at address, closed at cleanup.
func ClientOf(t testing.TB, address string) client.Client {
	t.Helper()
	tc := config.Temporal{Address: address, Namespace: devstack.Namespace}
	c, err := tc.Dial(30 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

// DatabaseURL returns a connection string to an empty, migrated database
// schema that belongs to this test alone and is dropped at cleanup.
func DatabaseURL(t testing.TB) string {
	t.Helper()
	base := os.Getenv("DATABASE_URL")
	if base == "" {
		base = privateCluster(t)
	}
	ctx := context.Background()
	schema := "t_" + randomHex(6)
	conn, err := pgx.Connect(ctx, base)
	if err != nil {
		t.Fatalf("connect %s: %v", base, err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE SCHEMA "+schema); err != nil {
		t.Fatalf("create schema: %v", err)
	}
	t.Cleanup(func() {
		c, err := pgx.Connect(context.Background(), base)
		if err != nil {
			t.Errorf("drop schema %s: %v", schema, err)
			return
		}
		defer c.Close(context.Background())
		if _, err := c.Exec(context.Background(), "DROP SCHEMA "+schema+" CASCADE"); err != nil {
			t.Errorf("drop schema %s: %v", schema, err)
		}
	})
	u, err := url.Parse(base)
	if err != nil {
		t.Fatalf("DATABASE_URL: %v", err)
	}
	q := u.Query()
	q.Set("search_path", schema)
	u.RawQuery = q.Encode()
	return u.String()
}

// Store opens a store on a fresh schema (see DatabaseURL).
func Store(t testing.TB) *store.Store {
	t.Helper()
	s, err := store.Open(context.Background(), DatabaseURL(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

func privateCluster(t testing.TB) string {
	shared.mu.Lock()
	defer shared.mu.Unlock()
	if shared.pg == nil {
		reapClusters()
		dir, err := os.MkdirTemp("", "si-test-pg-")
		if err != nil {
			t.Fatal(err)
		}
		// The postgres user (tests running as root) must reach the cluster;
		// the owner file lets a later run reap it if this process dies.
		if err := os.Chmod(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "owner.pid"), []byte(strconv.Itoa(os.Getpid())), 0o644); err != nil {
			t.Fatal(err)
		}
		pg, err := pgcluster.Start(context.Background(), pgcluster.Options{Dir: dir + "/data", Database: "si_test"})
		if err != nil {
			_ = os.RemoveAll(dir)
			t.Fatalf("private PostgreSQL (set DATABASE_URL to use a running server): %v", err)
		}
		shared.pg, shared.pgDir = pg, dir
		shared.stops = append(shared.stops, func() {
			_ = pg.Stop(context.Background())
			_ = pg.Remove()
			_ = os.RemoveAll(dir)
		})
	}
	return shared.pg.URL()
}

// reapClusters stops and removes private clusters whose test process died
// without cleaning up (a timeout panic, a kill).
func reapClusters() {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), "si-test-pg-*"))
	for _, dir := range dirs {
		b, err := os.ReadFile(filepath.Join(dir, "owner.pid"))
		if err != nil {
			continue
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil || syscall.Kill(pid, 0) == nil {
			continue
		}
		_ = pgcluster.StopStale(context.Background(), filepath.Join(dir, "data"))
		_ = os.RemoveAll(dir)
	}
}

// Simulator serves an inference simulator until cleanup and returns it with
// its base URL (ending in /v1).
func Simulator(t testing.TB, opts simulator.Options) (*simulator.Server, string) {
	t.Helper()
	sim := simulator.New(opts)
	srv := httptest.NewServer(sim)
	t.Cleanup(srv.Close)
	return sim, srv.URL + "/v1"
}

// Inference returns the inference activities pointed at baseURL with the simulator's models.
func Inference(baseURL string) *activities.Inference {
	return &activities.Inference{
		LLM:    &llm.Client{BaseURL: baseURL},
		Models: activities.Models{Pathos: simulator.ModelSmall, Logos: simulator.ModelSmall, Ethos: simulator.ModelSmall, Arbiter: simulator.ModelLarge},
	}
}

// Mesh is the cloud side of the mesh running for one test.
type Mesh struct {
	Client client.Client
	Store  *store.Store
	// DatabaseURL is Store's database, for the operator's commands.
	DatabaseURL string
	Sim         *simulator.Server
	LLMURL      string
	Inference   *activities.Inference
	// Stripe is set by WithStripe.
	Stripe *billing.Stripe
	// Blob and Adapters are set by WithAdapters.
	Blob     *blob.Store
	Adapters *activities.Adapters
}

// StartMesh starts the cloud worker against the shared Temporal server, a
// fresh database schema and a new simulator; all stop at cleanup. Options
// adjust the worker's activities (to give it a Stripe client, say).
func StartMesh(t testing.TB, sim simulator.Options, opts ...func(*Mesh, *workers.Cloud)) *Mesh {
	t.Helper()
	return StartMeshOn(t, Client(t), sim, opts...)
}

// StartMeshOn is StartMesh with a Temporal client of the caller's choosing.
func StartMeshOn(t testing.TB, c client.Client, sim simulator.Options, opts ...func(*Mesh, *workers.Cloud)) *Mesh {
	t.Helper()
	m := &Mesh{Client: c, DatabaseURL: DatabaseURL(t)}
	st, err := store.Open(context.Background(), m.DatabaseURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Close)
	m.Store = st
	m.Sim, m.LLMURL = Simulator(t, sim)
	m.Inference = Inference(m.LLMURL)
	deps := workers.CloudDeps(m.Client, m.Store, m.Inference)
	for _, o := range opts {
		o(m, &deps)
	}
	w := workers.NewCloud(m.Client, deps, worker.Options{})
	if err := w.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.Stop)
	return m
}

// Account creates a billing account (if it does not exist) and returns it.
func (m *Mesh) Account(t testing.TB, id string) store.Account {
	t.Helper()
	return EnsureAccount(t, m.Store, id)
}

// EnsureAccount creates a billing account in s unless it exists.
func EnsureAccount(t testing.TB, s *store.Store, id string) store.Account {
	t.Helper()
	ctx := context.Background()
	if _, err := s.CreateAccount(ctx, id, ""); err != nil && !errors.Is(err, store.ErrExists) {
		t.Fatal(err)
	}
	a, err := s.AccountByID(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// StartHub starts a hub worker for deviceID; the returned func stops it early.
func (m *Mesh) StartHub(t testing.TB, deviceID string) (stop func()) {
	t.Helper()
	w := workers.NewHub(m.Client, deviceID, m.Inference, worker.Options{})
	if err := w.Start(); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	stop = func() { once.Do(w.Stop) }
	t.Cleanup(stop)
	return stop
}

// UniqueID returns prefix and random hex, for ids that must not collide.
func UniqueID(prefix string) string { return fmt.Sprintf("%s-%s", prefix, randomHex(4)) }

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
