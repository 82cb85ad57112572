package integration

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/temporal"

	"github.com/superinstance/mesh/activities"
	"github.com/superinstance/mesh/internal/runner"
	"github.com/superinstance/mesh/internal/simulator"
	"github.com/superinstance/mesh/internal/store"
	"github.com/superinstance/mesh/test/harness"
	"github.com/superinstance/mesh/workers"
	"github.com/superinstance/mesh/workflows"
)

// A consensus started while the worker's PostgreSQL does not answer fails
// within seconds, saying the ledger is unreachable (and naming no address),
// and leaves recording the failure to a workflow that waits for the
// database.
func TestConsensusFailsAtOnceWhenTheLedgerIsUnreachable(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := fmt.Sprint(l.Addr().(*net.TCPAddr).Port)
	l.Close()
	pool, err := pgxpool.New(context.Background(), "postgres://meshuser:s3cretpw@127.0.0.1:"+port+"/meshdb?connect_timeout=2")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	dead := &store.Store{Pool: pool}
	m := harness.StartMesh(t, simulator.Options{}, func(_ *harness.Mesh, d *workers.Cloud) {
		d.Records = &activities.Records{Store: dead}
		d.Ledger = &activities.Ledger{Store: dead}
	})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	id := harness.UniqueID("ledger-down")
	start := time.Now()
	run, err := runner.Start(ctx, m.Client, id, workflows.ConsensusInput{Prompt: "Q [sim:agree]", Account: "acme", Placement: workflows.PlacementCloud})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Client.TerminateWorkflow(context.Background(), id+"/record", "", "test over") })
	err = run.Get(ctx, nil)
	took := time.Since(start)
	var ae *temporal.ApplicationError
	if !errors.As(err, &ae) || ae.Type() != activities.ErrLedgerUnreachable || !strings.Contains(ae.Message(), "the ledger is unreachable") {
		t.Fatalf("the run ended with %v, want %s saying the ledger is unreachable", err, activities.ErrLedgerUnreachable)
	}
	if took > 20*time.Second {
		t.Fatalf("the run took %s to fail; want seconds", took)
	}
	for _, secret := range []string{"meshuser", "s3cretpw", "meshdb", "127.0.0.1", port} {
		if strings.Contains(err.Error(), secret) {
			t.Fatalf("the run's error names %q: %v", secret, err)
		}
	}
	d, err := m.Client.DescribeWorkflowExecution(ctx, id+"/record", "")
	if err != nil {
		t.Fatalf("the failure's record: %v", err)
	}
	if st := d.GetWorkflowExecutionInfo().GetStatus(); st != enumspb.WORKFLOW_EXECUTION_STATUS_RUNNING {
		t.Fatalf("the record workflow is %s, want it waiting for PostgreSQL", st)
	}
	t.Logf("failed in %s: %s", took.Round(time.Millisecond), ae.Message())
}
