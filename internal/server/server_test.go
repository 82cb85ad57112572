package server_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	enumspb "go.temporal.io/api/enums/v1"

	"github.com/superinstance/mesh/internal/server"
	"github.com/superinstance/mesh/internal/simulator"
	"github.com/superinstance/mesh/internal/store"
	"github.com/superinstance/mesh/test/harness"
	"github.com/superinstance/mesh/workflows"
)

func TestMain(m *testing.M) { harness.Main(m) }

// Stopping the server ends the event streams, lets the worker finish the
// activity in flight (it completes on its first attempt, and another worker
// carries the run on), and stops listening.
func TestGracefulStop(t *testing.T) {
	c := harness.Client(t)
	st := harness.Store(t)
	_, llmURL := harness.Simulator(t, simulator.Options{Latency: 800 * time.Millisecond})
	harness.EnsureAccount(t, st, "acct")
	token, err := st.CreateAPIToken(context.Background(), "acct", "")
	if err != nil {
		t.Fatal(err)
	}
	s, err := server.Start(server.Options{
		Roles:         map[string]bool{server.RoleAPI: true, server.RoleWorker: true},
		MetricsListen: "127.0.0.1:0", Temporal: c, Store: st, Inference: harness.Inference(llmURL),
	})
	if err != nil {
		t.Fatal(err)
	}
	base := strings.TrimSuffix(s.MetricsURL, "/metrics")
	for _, p := range []string{"/healthz", "/ready"} {
		resp, err := http.Get(base + p)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("%s: %v %v", p, resp, err)
		}
		resp.Body.Close()
	}
	req, _ := http.NewRequest("POST", base+"/v1/consensus", strings.NewReader(`{"prompt":"Slow question [sim:agree]","placement":"cloud"}`))
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var started struct {
		WorkflowID string `json:"workflow_id"`
	}
	_ = json.NewDecoder(resp.Body).Decode(&started)
	resp.Body.Close()
	if resp.StatusCode != 202 {
		t.Fatalf("start: %d", resp.StatusCode)
	}
	req, _ = http.NewRequest("GET", base+"/v1/consensus/"+started.WorkflowID+"/events", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	stream, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	ended := make(chan struct{})
	go func() {
		defer close(ended)
		sc := bufio.NewScanner(stream.Body)
		for sc.Scan() {
		}
	}()
	time.Sleep(300 * time.Millisecond) // Pathos is in flight
	stopped := make(chan struct{})
	go func() { s.Stop(); close(stopped) }()
	select {
	case <-ended:
	case <-time.After(5 * time.Second):
		t.Fatal("the event stream outlived the server")
	}
	select {
	case <-stopped:
	case <-time.After(30 * time.Second):
		t.Fatal("Stop did not return")
	}
	if _, err := net.DialTimeout("tcp", strings.TrimPrefix(base, "http://"), time.Second); err == nil {
		t.Fatal("the server still listens after Stop")
	}
	// Another worker carries the run on.
	s2, err := server.Start(server.Options{Roles: map[string]bool{server.RoleWorker: true}, Temporal: c, Store: st,
		Inference: harness.Inference(llmURL)})
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Stop()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var final workflows.ConsensusState
	if err := c.GetWorkflow(ctx, started.WorkflowID, "").Get(ctx, &final); err != nil {
		t.Fatal(err)
	}
	// The Pathos activity in flight at Stop completed on its first attempt.
	iter := c.GetWorkflowHistory(ctx, started.WorkflowID, "", false, enumspb.HISTORY_EVENT_FILTER_TYPE_ALL_EVENT)
	scheduled := map[int64]string{}
	for iter.HasNext() {
		e, err := iter.Next()
		if err != nil {
			t.Fatal(err)
		}
		switch e.GetEventType() {
		case enumspb.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
			scheduled[e.GetEventId()] = e.GetActivityTaskScheduledEventAttributes().GetActivityType().GetName()
		case enumspb.EVENT_TYPE_ACTIVITY_TASK_STARTED:
			a := e.GetActivityTaskStartedEventAttributes()
			if scheduled[a.GetScheduledEventId()] == "Pathos" && a.GetAttempt() != 1 {
				t.Fatalf("Pathos ran %d times: the worker abandoned it at Stop", a.GetAttempt())
			}
		case enumspb.EVENT_TYPE_ACTIVITY_TASK_TIMED_OUT, enumspb.EVENT_TYPE_ACTIVITY_TASK_FAILED:
			t.Fatalf("an activity failed or timed out across the stop: %v", e)
		}
	}
	if final.Status != workflows.StatusConsensus {
		t.Fatalf("final %+v", final)
	}
}

// /ready's 503 names the dependency that is down and nothing an attacker
// reading it could use: no user, password, database name, host or port.
func TestReadyNamesTheDependencyNotItsAddress(t *testing.T) {
	c := harness.Client(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := fmt.Sprint(l.Addr().(*net.TCPAddr).Port)
	l.Close()
	pool, err := pgxpool.New(context.Background(), "postgres://meshuser:s3cretpw@127.0.0.1:"+port+"/meshdb?connect_timeout=1")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	s, err := server.Start(server.Options{Roles: map[string]bool{}, MetricsListen: "127.0.0.1:0", Temporal: c,
		Store: &store.Store{Pool: pool}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Stop)
	resp, err := http.Get(strings.TrimSuffix(s.MetricsURL, "/metrics") + "/ready")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	body := string(b)
	if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(body, "database") {
		t.Fatalf("/ready: %d %q, want 503 naming the database", resp.StatusCode, body)
	}
	if strings.Contains(body, "temporal") {
		t.Fatalf("/ready blames Temporal, which is up: %q", body)
	}
	for _, secret := range []string{"meshuser", "s3cretpw", "meshdb", "127.0.0.1", port, "postgres://"} {
		if strings.Contains(body, secret) {
			t.Fatalf("/ready's body names %q: %q", secret, body)
		}
	}
}
