package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/superinstance/mesh/internal/api"
	"github.com/superinstance/mesh/internal/simulator"
	"github.com/superinstance/mesh/test/harness"
)

// BenchmarkSSEFanout has 500 viewers watch one consensus at a time over
// Server-Sent Events and measures, for each agent step, the delay from the
// workflow recording the step (its updated_at) to the last viewer receiving
// it.
func BenchmarkSSEFanout(b *testing.B) {
	viewers, runs := benchViewers(), 5
	m := harness.StartMesh(b, simulator.Options{Latency: 150 * time.Millisecond})
	m.Account(b, "fan")
	token, err := m.Store.CreateAPIToken(context.Background(), "fan", "")
	if err != nil {
		b.Fatal(err)
	}
	s := &api.Server{Store: m.Store, Temporal: m.Client}
	srv := httptest.NewServer(s.Handler())
	defer srv.Close()
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: viewers}}

	var lastViewer, all, connects []time.Duration
	for run := range runs {
		body := fmt.Sprintf(`{"prompt":"Fan-out run %d [sim:disagree]","max_rounds":5}`, run)
		startedAt := time.Now()
		req, _ := http.NewRequest("POST", srv.URL+"/v1/consensus", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := client.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		var started struct {
			WorkflowID string `json:"workflow_id"`
		}
		_ = json.NewDecoder(resp.Body).Decode(&started)
		resp.Body.Close()
		if resp.StatusCode != 202 {
			b.Fatalf("start: %d", resp.StatusCode)
		}
		// What each viewer received (steps, when), and when each step was recorded.
		type receipt struct {
			steps int
			at    time.Time
		}
		var mu sync.Mutex
		received := make([][]receipt, viewers)
		recorded := map[int]time.Time{}
		var wg sync.WaitGroup
		ready := make(chan struct{}, viewers)
		for v := range viewers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				req, _ := http.NewRequest("GET", srv.URL+"/v1/consensus/"+started.WorkflowID+"/events", nil)
				req.Header.Set("Authorization", "Bearer "+token)
				resp, err := client.Do(req)
				ready <- struct{}{}
				if err != nil {
					b.Error(err)
					return
				}
				defer resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					b.Errorf("viewer %d: the stream answered %d", v, resp.StatusCode)
					return
				}
				sc := bufio.NewScanner(resp.Body)
				sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
				seen := -1
				for sc.Scan() {
					line, ok := strings.CutPrefix(sc.Text(), "data: ")
					if !ok {
						continue
					}
					at := time.Now()
					// The two fields the measure needs: a browser parses the
					// rest on its own machine, not on this one's two cores.
					var st struct {
						Steps     int       `json:"steps"`
						UpdatedAt time.Time `json:"updated_at"`
					}
					if json.Unmarshal([]byte(line), &st) != nil || st.Steps == seen || st.UpdatedAt.IsZero() {
						continue
					}
					seen = st.Steps
					mu.Lock()
					received[v] = append(received[v], receipt{st.Steps, at})
					recorded[st.Steps] = st.UpdatedAt
					mu.Unlock()
				}
			}()
		}
		for range viewers {
			<-ready
		}
		connected := time.Now()
		connects = append(connects, connected.Sub(startedAt))
		wg.Wait()
		// Steps recorded before every viewer had connected are catch-up,
		// not fan-out: count only the steps recorded after. A viewer has a
		// step once it holds that state or a later one (a slow viewer skips
		// to the latest).
		for step, at := range recorded {
			if at.Before(connected) {
				continue
			}
			var ds []time.Duration
			for v, rs := range received {
				i := slices.IndexFunc(rs, func(r receipt) bool { return r.steps >= step })
				if i < 0 {
					b.Errorf("viewer %d never received step %d", v, step)
					continue
				}
				ds = append(ds, rs[i].at.Sub(at))
			}
			all = append(all, ds...)
			lastViewer = append(lastViewer, slices.Max(ds))
		}
	}
	if len(lastViewer) == 0 {
		b.Fatal("no step reached every viewer")
	}
	slices.Sort(lastViewer)
	slices.Sort(all)
	p99 := lastViewer[min(len(lastViewer)-1, len(lastViewer)*99/100)]
	record("sse_fanout_p99_ms", ms(p99), fmt.Sprintf("500 viewers: step recorded -> last viewer received, p99 over %d steps (target < 100)", len(lastViewer)))
	slices.Sort(connects)
	record("sse_connect_500_ms", ms(connects[len(connects)/2]), "500 viewers: start the run and open every stream, median")
	record("sse_fanout_median_ms", ms(all[len(all)/2]), "500 viewers: step recorded -> a viewer received, median over every delivery")
}

func benchViewers() int {
	var n int
	if _, err := fmt.Sscan(os.Getenv("SI_BENCH_VIEWERS"), &n); err == nil && n > 0 {
		return n
	}
	return 500
}
