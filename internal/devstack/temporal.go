// Package devstack runs the mesh's embedded defaults in-process: a Temporal
// server on SQLite with its Web UI, and a private PostgreSQL cluster. `si dev`
// and the test harness both start services through it.
package devstack

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	uiserver "github.com/temporalio/ui-server/v2/server"
	uiconfig "github.com/temporalio/ui-server/v2/server/config"
	uioptions "github.com/temporalio/ui-server/v2/server/server_options"
	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/server/common/authorization"
	"go.temporal.io/server/common/cluster"
	"go.temporal.io/server/common/config"
	"go.temporal.io/server/common/dynamicconfig"
	"go.temporal.io/server/common/log"
	"go.temporal.io/server/common/membership/static"
	"go.temporal.io/server/common/metrics"
	sqliteplugin "go.temporal.io/server/common/persistence/sql/sqlplugin/sqlite"
	"go.temporal.io/server/common/primitives"
	sqliteschema "go.temporal.io/server/schema/sqlite"
	"go.temporal.io/server/temporal"

	"github.com/superinstance/mesh/internal/netport"
)

// Namespace is the Temporal namespace the mesh uses by default.
const Namespace = "default"

// TemporalOptions configures the embedded Temporal server. The zero value runs
// an in-memory server on a free port with no UI.
type TemporalOptions struct {
	// DatabaseFile persists state to this SQLite file (created with its schema
	// if missing). Empty keeps everything in memory.
	DatabaseFile string
	// Address is the frontend's host:port. Default 127.0.0.1 and a free port.
	Address string
	// UIAddress serves the Temporal Web UI there when set (e.g. 127.0.0.1:8233).
	UIAddress string
	// Namespaces are registered at start. Default: Namespace.
	Namespaces []string
	// SearchAttributes are custom search attributes registered in every namespace.
	SearchAttributes map[string]enumspb.IndexedValueType
	// LogFile receives the server's own logs (warnings and errors). Empty discards them.
	LogFile string
	// DynamicConfig overrides entries of TunedDynamicConfig.
	DynamicConfig map[string]any
}

// TunedDynamicConfig removes the embedded server's built-in hand-off delays:
// out of the box every task waits on a 20-per-second transfer poll of the one
// shard, which adds about 50 ms to each activity.
func TunedDynamicConfig() map[string]any {
	return map[string]any{
		"history.transferProcessorMaxPollRPS":            100000,
		"history.timerProcessorMaxPollRPS":               100000,
		"history.visibilityProcessorMaxPollRPS":          100000,
		"matching.numTaskqueueReadPartitions":            1,
		"matching.numTaskqueueWritePartitions":           1,
		"history.longPollExpirationInterval":             time.Second,
		"system.enableActivityEagerExecution":            true,
		"system.forceSearchAttributesCacheRefreshOnRead": true,
		"frontend.namespaceRPS.visibility":               1000,
		"history.hostLevelCacheMaxSize":                  8096,
	}
}

// Temporal is a running embedded Temporal server.
type Temporal struct {
	server   temporal.Server
	ui       *uiserver.Server
	address  string
	uiAddr   string
	stopOnce sync.Once
}

// StartTemporal starts the server and, if asked, the Web UI. It returns once
// the frontend accepts connections.
func StartTemporal(opts TemporalOptions) (*Temporal, error) {
	if len(opts.Namespaces) == 0 {
		opts.Namespaces = []string{Namespace}
	}
	host, port := "127.0.0.1", 0
	if opts.Address != "" {
		h, p, err := net.SplitHostPort(opts.Address)
		if err != nil {
			return nil, fmt.Errorf("temporal address %q: %w", opts.Address, err)
		}
		host = h
		if port, err = strconv.Atoi(p); err != nil {
			return nil, fmt.Errorf("temporal address %q: bad port", opts.Address)
		}
	}
	if port == 0 {
		p, err := FreePort(host)
		if err != nil {
			return nil, err
		}
		port = p
	} else if err := portFree(host, port); err != nil {
		return nil, fmt.Errorf("temporal frontend %s:%d is taken (is another si dev or temporal server running?): %w", host, port, err)
	}

	sqlConf := &config.SQL{PluginName: sqliteplugin.PluginName, ConnectAttributes: map[string]string{}}
	if opts.DatabaseFile == "" {
		sqlConf.ConnectAttributes["mode"] = "memory"
		sqlConf.ConnectAttributes["cache"] = "shared"
		sqlConf.DatabaseName = fmt.Sprintf("si-%d-%d", os.Getpid(), time.Now().UnixNano())
	} else {
		sqlConf.ConnectAttributes["mode"] = "rwc"
		// WAL with synchronous=NORMAL survives a process crash; it can lose the
		// last transactions on power loss, acceptable for a development server.
		sqlConf.ConnectAttributes["journal_mode"] = "wal"
		sqlConf.ConnectAttributes["synchronous"] = "1"
		sqlConf.DatabaseName = opts.DatabaseFile
		if _, err := os.Stat(opts.DatabaseFile); errors.Is(err, os.ErrNotExist) {
			if err := os.MkdirAll(filepath.Dir(opts.DatabaseFile), 0o755); err != nil {
				return nil, err
			}
			if err := sqliteschema.SetupSchema(sqlConf); err != nil {
				return nil, fmt.Errorf("temporal schema: %w", err)
			}
		}
	}
	var nss []*sqliteschema.NamespaceConfig
	for _, ns := range opts.Namespaces {
		nc, err := sqliteschema.NewNamespaceConfig("active", ns, false, opts.SearchAttributes)
		if err != nil {
			return nil, err
		}
		nss = append(nss, nc)
	}
	if err := sqliteschema.CreateNamespaces(sqlConf, nss...); err != nil {
		return nil, fmt.Errorf("temporal namespaces: %w", err)
	}

	frontend := net.JoinHostPort(host, strconv.Itoa(port))
	ports := map[string]int{"frontend": port}
	for _, svc := range []string{"history", "matching", "worker"} {
		p, err := FreePort(host)
		if err != nil {
			return nil, err
		}
		ports[svc] = p
	}
	httpPort, err := FreePort(host)
	if err != nil {
		return nil, err
	}
	conf := &config.Config{}
	conf.Global.Membership = config.Membership{MaxJoinDuration: 30 * time.Second, BroadcastAddress: host}
	metricsPort, err := FreePort(host)
	if err != nil {
		return nil, err
	}
	conf.Global.Metrics = &metrics.Config{Prometheus: &metrics.PrometheusConfig{
		ListenAddress: net.JoinHostPort(host, strconv.Itoa(metricsPort)), HandlerPath: "/metrics",
	}}
	conf.Persistence = config.Persistence{
		DefaultStore: "sqlite", VisibilityStore: "sqlite", NumHistoryShards: 1,
		DataStores: map[string]config.DataStore{"sqlite": {SQL: sqlConf}},
	}
	conf.ClusterMetadata = &cluster.Config{
		FailoverVersionIncrement: 10, MasterClusterName: "active", CurrentClusterName: "active",
		ClusterInformation: map[string]cluster.ClusterInformation{"active": {
			Enabled: true, InitialFailoverVersion: 1, RPCAddress: frontend,
			HTTPAddress: net.JoinHostPort(host, strconv.Itoa(httpPort)),
		}},
	}
	conf.DCRedirectionPolicy = config.DCRedirectionPolicy{Policy: "noop"}
	conf.Services = map[string]config.Service{}
	for svc, p := range ports {
		s := config.Service{RPC: config.RPC{GRPCPort: p, BindOnIP: host}}
		if svc == "frontend" {
			s.RPC.HTTPPort = httpPort
		}
		conf.Services[svc] = s
	}
	conf.Archival.History.State = "disabled"
	conf.Archival.Visibility.State = "disabled"
	conf.NamespaceDefaults.Archival.History.State = "disabled"
	conf.NamespaceDefaults.Archival.Visibility.State = "disabled"
	conf.PublicClient.HostPort = frontend

	var logger log.Logger = log.NewNoopLogger()
	if opts.LogFile != "" {
		logger = log.NewZapLogger(log.BuildZapLogger(log.Config{Level: "warn", OutputFile: opts.LogFile}))
	}
	authorizer, err := authorization.GetAuthorizerFromConfig(&conf.Global.Authorization)
	if err != nil {
		return nil, err
	}
	claimMapper, err := authorization.GetClaimMapperFromConfig(&conf.Global.Authorization, logger)
	if err != nil {
		return nil, err
	}
	dyn := dynamicconfig.StaticClient{}
	for k, v := range TunedDynamicConfig() {
		dyn[dynamicconfig.MakeKey(k)] = v
	}
	for k, v := range opts.DynamicConfig {
		dyn[dynamicconfig.MakeKey(k)] = v
	}
	hosts := map[primitives.ServiceName]static.Hosts{}
	for svc, p := range ports {
		hosts[primitives.ServiceName(svc)] = static.SingleLocalHost(net.JoinHostPort(host, strconv.Itoa(p)))
	}
	srv, err := temporal.NewServer(
		temporal.WithConfig(conf),
		temporal.ForServices(temporal.DefaultServices),
		temporal.WithStaticHosts(hosts),
		temporal.WithLogger(logger),
		temporal.WithAuthorizer(authorizer),
		temporal.WithClaimMapper(func(*config.Config) authorization.ClaimMapper { return claimMapper }),
		temporal.WithDynamicConfigClient(dyn),
	)
	if err != nil {
		return nil, fmt.Errorf("temporal server: %w", err)
	}
	if err := srv.Start(); err != nil {
		return nil, fmt.Errorf("temporal server start: %w", err)
	}
	t := &Temporal{server: srv, address: frontend}
	if opts.UIAddress != "" {
		uh, up, err := net.SplitHostPort(opts.UIAddress)
		if err != nil {
			t.Stop()
			return nil, fmt.Errorf("ui address %q: %w", opts.UIAddress, err)
		}
		upn, _ := strconv.Atoi(up)
		if err := portFree(uh, upn); err != nil {
			t.Stop()
			return nil, fmt.Errorf("temporal UI %s is taken: %w", opts.UIAddress, err)
		}
		t.ui = uiserver.NewServer(uioptions.WithConfigProvider(&uiconfig.Config{
			Host: uh, Port: upn, TemporalGRPCAddress: frontend, EnableUI: true,
			DefaultNamespace: opts.Namespaces[0], HideLogs: true, DisableNewsFetch: true,
			CORS: uiconfig.CORS{CookieInsecure: true},
		}))
		t.uiAddr = opts.UIAddress
		go func() { _ = t.ui.Start() }()
		if err := waitTCP(opts.UIAddress, 10*time.Second); err != nil {
			t.Stop()
			return nil, fmt.Errorf("temporal UI did not start: %w", err)
		}
	}
	return t, nil
}

// Address is the frontend's host:port for SDK clients.
func (t *Temporal) Address() string { return t.address }

// UIAddress is where the Web UI listens, or "" when it is off.
func (t *Temporal) UIAddress() string { return t.uiAddr }

// Stop shuts the UI and the server down. It is safe to call more than once.
func (t *Temporal) Stop() {
	t.stopOnce.Do(func() {
		if t.ui != nil {
			t.ui.Stop()
		}
		_ = t.server.Stop()
	})
}

// FreePort returns a TCP port on host that was free a moment ago, below
// the machine's ephemeral range (netport.Free).
func FreePort(host string) (int, error) { return netport.Free(host) }

func portFree(host string, port int) error {
	l, err := net.Listen("tcp", net.JoinHostPort(host, strconv.Itoa(port)))
	if err != nil {
		return err
	}
	return l.Close()
}

func waitTCP(addr string, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			return c.Close()
		}
		if time.Now().After(deadline) {
			return err
		}
		time.Sleep(20 * time.Millisecond)
	}
}
