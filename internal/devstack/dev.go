package devstack

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"go.temporal.io/sdk/worker"

	"github.com/superinstance/mesh/activities"
	"github.com/superinstance/mesh/internal/config"
	"github.com/superinstance/mesh/internal/pgcluster"
	"github.com/superinstance/mesh/internal/simulator"
	"github.com/superinstance/mesh/internal/store"
	"github.com/superinstance/mesh/workers"
)

// DevOptions configures `si dev`. Empty fields take the embedded defaults.
type DevOptions struct {
	DataDir string
	Fresh   bool

	// Temporal is a real frontend to use instead of the embedded server.
	Temporal        config.Temporal
	TemporalListen  string // embedded frontend, default 127.0.0.1:7233
	UIListen        string // embedded Web UI, default 127.0.0.1:8233; "off" disables it
	DatabaseURL     string // a real PostgreSQL instead of the private cluster
	PostgresPort    int    // the private cluster's port
	LLM             config.LLM
	SimulatorListen string // default 127.0.0.1:8300
	Simulator       simulator.Options
	HubID           string // the local hub's device id, default "local"
}

// State is what a running `si dev` tells other commands, in DataDir/dev.json.
type State struct {
	PID             int    `json:"pid"`
	TemporalAddress string `json:"temporal_address"`
	UIURL           string `json:"ui_url,omitempty"`
	DatabaseURL     string `json:"database_url"`
	LLMBaseURL      string `json:"llm_base_url"`
	Simulator       bool   `json:"simulator"`
	HubID           string `json:"hub_id"`
}

// Dev is a running development mesh.
type Dev struct {
	State    State
	stops    []func()
	stateDir string
}

// StartDev starts every part of the mesh that DevOptions does not point
// elsewhere, printing progress to out. On error everything already started
// is stopped again.
func StartDev(ctx context.Context, o DevOptions, out io.Writer) (d *Dev, err error) {
	if o.DataDir == "" {
		o.DataDir = filepath.Join(config.HomeDir(), "dev")
	}
	if o.TemporalListen == "" {
		o.TemporalListen = "127.0.0.1:7233"
	}
	if o.UIListen == "" {
		o.UIListen = "127.0.0.1:8233"
	}
	if o.SimulatorListen == "" {
		o.SimulatorListen = "127.0.0.1:8300"
	}
	if o.HubID == "" {
		o.HubID = "local"
	}
	d = &Dev{stateDir: o.DataDir}
	defer func() {
		if err != nil {
			d.Stop()
		}
	}()
	if o.Fresh {
		if err := os.RemoveAll(o.DataDir); err != nil {
			return nil, fmt.Errorf("--fresh: %w", err)
		}
	}
	if err := os.MkdirAll(o.DataDir, 0o755); err != nil {
		return nil, err
	}
	d.State.PID = os.Getpid()
	d.State.HubID = o.HubID

	// Inference: the simulator unless a real backend is given.
	if o.LLM.BaseURL == "" {
		l, err := net.Listen("tcp", o.SimulatorListen)
		if err != nil {
			return nil, fmt.Errorf("inference simulator on %s: %w (pass --sim-listen or --llm-base-url)", o.SimulatorListen, err)
		}
		srv := &http.Server{Handler: simulator.New(o.Simulator), ReadHeaderTimeout: 10 * time.Second}
		go func() { _ = srv.Serve(l) }()
		d.stops = append(d.stops, func() { _ = srv.Close() })
		o.LLM.BaseURL = "http://" + l.Addr().String() + "/v1"
		d.State.Simulator = true
	}
	d.State.LLMBaseURL = o.LLM.BaseURL

	// PostgreSQL: the private cluster unless a real one is given.
	if o.DatabaseURL == "" {
		fmt.Fprintln(out, "starting PostgreSQL (private cluster)...")
		pg, err := pgcluster.Start(ctx, pgcluster.Options{
			Dir: filepath.Join(o.DataDir, "postgres"), Port: o.PostgresPort, Database: "si",
			Log: func(f string, a ...any) { fmt.Fprintf(out, "  "+f+"\n", a...) },
		})
		if err != nil {
			return nil, err
		}
		d.stops = append(d.stops, func() { _ = pg.Stop(context.Background()) })
		o.DatabaseURL = pg.URL()
	}
	st, err := store.Open(ctx, o.DatabaseURL)
	if err != nil {
		return nil, err
	}
	d.stops = append(d.stops, st.Close)
	d.State.DatabaseURL = o.DatabaseURL

	// Temporal: the embedded server unless a real one is given.
	if o.Temporal.Address == "" {
		fmt.Fprintln(out, "starting Temporal (embedded, SQLite)...")
		to := TemporalOptions{
			DatabaseFile: filepath.Join(o.DataDir, "temporal.db"),
			Address:      o.TemporalListen,
			LogFile:      filepath.Join(o.DataDir, "temporal.log"),
		}
		if o.UIListen != "off" {
			to.UIAddress = o.UIListen
		}
		t, err := StartTemporal(to)
		if err != nil {
			return nil, err
		}
		d.stops = append(d.stops, t.Stop)
		o.Temporal.Address = t.Address()
		if o.Temporal.Namespace == "" {
			o.Temporal.Namespace = Namespace
		}
		if t.UIAddress() != "" {
			d.State.UIURL = "http://" + t.UIAddress()
		}
	}
	d.State.TemporalAddress = o.Temporal.Address
	c, err := o.Temporal.Dial(30 * time.Second)
	if err != nil {
		return nil, err
	}
	d.stops = append(d.stops, c.Close)

	// Workers: the cloud worker and the local hub's.
	inf := o.LLM.Inference()
	wopts := worker.Options{}
	cloud := workers.NewCloud(c, workers.Cloud{
		Inference: inf,
		Placement: &activities.Placement{Temporal: c, Hubs: st},
		Records:   &activities.Records{Store: st},
	}, wopts)
	hub := workers.NewHub(c, o.HubID, inf, wopts)
	for _, w := range []worker.Worker{cloud, hub} {
		if err := w.Start(); err != nil {
			return nil, fmt.Errorf("worker: %w", err)
		}
		d.stops = append(d.stops, w.Stop)
	}
	if err := d.writeState(); err != nil {
		return nil, err
	}
	return d, nil
}

// Banner describes every address of the running mesh.
func (d *Dev) Banner(dataDir string) string {
	s := d.State
	llm := s.LLMBaseURL
	if s.Simulator {
		llm += "   (SIMULATOR: deterministic test double, not a language model)"
	}
	ui := s.UIURL
	if ui == "" {
		ui = "(off)"
	}
	return fmt.Sprintf(`si dev: the SuperInstance mesh on embedded defaults
  data directory      %s
  Temporal frontend   %s
  Temporal Web UI     %s
  PostgreSQL          %s
  inference           %s
  workers             cloud worker on task queue %q; hub %q on task queue %q
try:  si ask "What is the capital of France?"
Ctrl-C stops everything.
`, dataDir, s.TemporalAddress, ui, s.DatabaseURL, llm, workers.CloudQueue, s.HubID, workers.HubQueue(s.HubID))
}

// Stop shuts every part down, last started first.
func (d *Dev) Stop() {
	for i := len(d.stops) - 1; i >= 0; i-- {
		d.stops[i]()
	}
	d.stops = nil
	if d.stateDir != "" {
		_ = os.Remove(filepath.Join(d.stateDir, "dev.json"))
	}
}

func (d *Dev) writeState() error {
	b, err := json.MarshalIndent(d.State, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(d.stateDir, "dev.json"), b, 0o600)
}

// ReadState reads a running `si dev`'s state from dataDir, if there is one.
func ReadState(dataDir string) (State, error) {
	var s State
	b, err := os.ReadFile(filepath.Join(dataDir, "dev.json"))
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return s, fmt.Errorf("no running si dev in %s", dataDir)
		}
		return s, err
	}
	return s, json.Unmarshal(b, &s)
}
