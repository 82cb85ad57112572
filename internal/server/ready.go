package server

import (
	"context"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"go.temporal.io/sdk/client"

	"github.com/superinstance/mesh/internal/blob"
	"github.com/superinstance/mesh/internal/store"
)

// readyTimeout bounds each dependency's check in /ready.
const readyTimeout = 2 * time.Second

// dependency is one service /ready checks.
type dependency struct {
	name string
	ping func(context.Context) error
}

// readiness answers /ready: 200 "ready" when every dependency answers, else
// 503 naming the ones that do not ("not ready: database unreachable").
// The body names no address, user or credential, since anyone who reaches
// the port reads it; the full errors go to the log.
func readiness(logger *slog.Logger, deps []dependency) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), readyTimeout)
		defer cancel()
		down := make([]string, len(deps))
		var wg sync.WaitGroup
		for i, d := range deps {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := d.ping(ctx); err != nil {
					logger.Warn("not ready", "dependency", d.name, "error", err)
					down[i] = d.name + " unreachable"
				}
			}()
		}
		wg.Wait()
		var names []string
		for _, d := range down {
			if d != "" {
				names = append(names, d)
			}
		}
		if len(names) > 0 {
			http.Error(w, "not ready: "+strings.Join(names, ", ")+" (the server's log has the details)", http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ready\n"))
	}
}

// dependencies are what a server with these options needs to answer.
func dependencies(st *store.Store, tc client.Client, bs *blob.Store) []dependency {
	var deps []dependency
	if st != nil {
		deps = append(deps, dependency{"database", st.Pool.Ping})
	}
	if tc != nil {
		deps = append(deps, dependency{"temporal", func(ctx context.Context) error {
			_, err := tc.CheckHealth(ctx, &client.CheckHealthRequest{})
			return err
		}})
	}
	if bs != nil {
		deps = append(deps, dependency{"s3", bs.Ping})
	}
	return deps
}
