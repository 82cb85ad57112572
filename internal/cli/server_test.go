package cli

import (
	"testing"

	"github.com/superinstance/mesh/internal/server"
)

// A server names only what it runs when it stops: an api-only process has
// no bridge or worker to wait for.
func TestStoppingMessageNamesOnlyItsRoles(t *testing.T) {
	for _, c := range []struct {
		roles map[string]bool
		want  string
	}{
		{map[string]bool{server.RoleAPI: true}, "stopping: the API's requests and event streams"},
		{map[string]bool{server.RoleWorker: true}, "stopping: the worker's activities in flight"},
		{map[string]bool{server.RoleBridge: true, server.RoleCA: true}, "stopping: the bridge, then the CA's signing"},
		{map[string]bool{server.RoleAPI: true, server.RoleBridge: true, server.RoleWorker: true},
			"stopping: the API's requests and event streams, then the bridge, then the worker's activities in flight"},
	} {
		if got := stoppingMessage(c.roles); got != c.want {
			t.Errorf("roles %v: %q, want %q", c.roles, got, c.want)
		}
	}
}
