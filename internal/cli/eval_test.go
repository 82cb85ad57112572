package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/superinstance/mesh/internal/eval"
	"github.com/superinstance/mesh/workflows"
)

// fakeEvalAPI answers the consensus API as a mesh without strategies does
// (an unknown field is a 400): question i's run answers i's answer when i
// is even, no number when i is odd, and fails for i = 3; every run costs
// 100 micro-dollars.
type fakeEvalAPI struct {
	qs       []eval.Question
	inFlight atomic.Int32
	peak     atomic.Int32
	mu       sync.Mutex
	runs     map[string]int // workflow id -> question index
	recorded []byte
	// delay holds each event stream open this long first.
	delay time.Duration
}

func (f *fakeEvalAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch {
	case r.Method == "POST" && r.URL.Path == "/v1/consensus":
		var req map[string]any
		_ = json.NewDecoder(r.Body).Decode(&req)
		for k := range req {
			if k != "prompt" && k != "max_tokens" && k != "max_rounds" && k != "placement" {
				w.WriteHeader(400)
				fmt.Fprintf(w, `{"error":{"code":"invalid_json","message":"the body has an unknown field '%s'"}}`, k)
				return
			}
		}
		f.mu.Lock()
		defer f.mu.Unlock()
		for i, q := range f.qs {
			if q.Prompt == req["prompt"] {
				id := fmt.Sprintf("consensus-%d", i)
				f.runs[id] = i
				w.WriteHeader(202)
				fmt.Fprintf(w, `{"workflow_id":%q}`, id)
				return
			}
		}
		w.WriteHeader(400)
	case r.Method == "GET" && strings.HasSuffix(r.URL.Path, "/events"):
		n := f.inFlight.Add(1)
		defer f.inFlight.Add(-1)
		for p := f.peak.Load(); n > p && !f.peak.CompareAndSwap(p, n); p = f.peak.Load() {
		}
		select {
		case <-time.After(20*time.Millisecond + f.delay):
		case <-r.Context().Done():
			return
		}
		b, _ := json.Marshal(f.state(strings.TrimSuffix(strings.TrimPrefix(r.URL.Path, "/v1/consensus/"), "/events")))
		fmt.Fprintf(w, "event: state\ndata: %s\n\nevent: end\ndata: {}\n\n", b)
	case r.Method == "GET" && strings.HasPrefix(r.URL.Path, "/v1/consensus/"):
		st := f.state(strings.TrimPrefix(r.URL.Path, "/v1/consensus/"))
		b, _ := json.Marshal(struct {
			workflows.ConsensusState
			Cost int64 `json:"cost_micros"`
		}{st, 100})
		_, _ = w.Write(b)
	case r.Method == "POST" && r.URL.Path == "/v1/evals":
		f.mu.Lock()
		f.recorded, _ = readAll(r)
		f.mu.Unlock()
		w.WriteHeader(201)
		fmt.Fprint(w, `{"id":"eval-1"}`)
	default:
		w.WriteHeader(404)
	}
}

func readAll(r *http.Request) ([]byte, error) {
	var b bytes.Buffer
	_, err := b.ReadFrom(r.Body)
	return b.Bytes(), err
}

func (f *fakeEvalAPI) state(id string) workflows.ConsensusState {
	f.mu.Lock()
	i := f.runs[id]
	f.mu.Unlock()
	st := workflows.ConsensusState{Status: workflows.StatusConsensus, Rounds: []workflows.RoundState{{Round: 1}}, Final: true}
	st.Answer = "I cannot say."
	if i%2 == 0 {
		st.Answer = fmt.Sprintf("So the total is %d.", f.qs[i].Answer)
	}
	if i == 3 {
		st.Status, st.Error, st.Answer = workflows.StatusFailed, "logos's output is unusable after one repair attempt", ""
	}
	return st
}

func runSI(t *testing.T, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	var out, errb bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	err = Execute(ctx, &Env{Stdout: &out, Stderr: &errb}, args)
	return out.String(), errb.String(), err
}

func TestEvalCommandAgainstAnAPI(t *testing.T) {
	t.Setenv("HOME", t.TempDir())
	t.Setenv("XDG_CONFIG_HOME", t.TempDir())
	f := &fakeEvalAPI{qs: eval.ArithmeticSet(1, 8), runs: map[string]int{}}
	srv := httptest.NewServer(f)
	defer srv.Close()
	api := []string{"--api-url", srv.URL, "--token", "si_test"}

	out, errOut, err := runSI(t, append([]string{"eval", "--json", "--n", "8", "--strategies", "debate", "--concurrency", "3"}, api...)...)
	if err != nil {
		t.Fatalf("si eval: %v\n%s%s", err, out, errOut)
	}
	if errOut != "" {
		t.Fatalf("--json printed progress: %s", errOut)
	}
	var rep evalJSON
	dec := json.NewDecoder(strings.NewReader(out))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&rep); err != nil {
		t.Fatal(err)
	}
	// Questions 0, 2, 4, 6 are right; 3 failed; none of the others has a number.
	s := rep.Summaries[0]
	if s.Correct != 4 || s.Questions != 8 || s.Accuracy != 0.5 || s.Failed != 1 || s.Cost != 800 || s.CostPerQuestion != 100 || rep.Recorded != "eval-1" {
		t.Fatalf("summary %+v, recorded %q", s, rep.Recorded)
	}
	if r := rep.Results[3]; r.Error == "" || r.Correct || r.Got != nil {
		t.Fatalf("the failed run: %+v", r)
	}
	if r := rep.Results[1]; r.Got != nil || r.Correct || r.Error != "" {
		t.Fatalf("no number: %+v", r)
	}
	if p := f.peak.Load(); p > 3 || p < 2 {
		t.Fatalf("%d runs were followed at once with --concurrency 3", p)
	}
	// What is recorded carries the figures, not the model's words.
	if bytes.Contains(f.recorded, []byte("So the total is")) || !bytes.Contains(f.recorded, []byte(`"results"`)) {
		t.Fatalf("recorded %s", f.recorded)
	}

	// The table and its progress lines.
	out, errOut, err = runSI(t, append([]string{"eval", "--n", "4", "--strategies", "debate", "--no-record"}, api...)...)
	if err != nil || !strings.Contains(out, "2/4 (50.0%)") || !strings.Contains(out, "2 rounds, 6 calls x 512 tokens") ||
		!strings.Contains(out, "failed    debate arithmetic-1-4") || !strings.Contains(errOut, "[4/4]") || strings.Contains(out, "recorded") {
		t.Fatalf("table: %v\n%s\n%s", err, out, errOut)
	}

	// A run that outlasts --run-timeout fails with what to do.
	f.delay = 5 * time.Second
	out, _, err = runSI(t, append([]string{"eval", "--json", "--n", "1", "--strategies", "debate", "--run-timeout", "200ms", "--no-record"}, api...)...)
	if err != nil || !strings.Contains(out, "did not finish within --run-timeout 200ms") || !strings.Contains(out, "si ask --follow consensus-0") {
		t.Fatalf("a run past --run-timeout: %v\n%s", err, out)
	}
	f.delay = 0

	// A mesh without strategies refuses vote: the evaluation stops and says what to do.
	_, _, err = runSI(t, append([]string{"eval", "--n", "2", "--strategies", "debate,vote"}, api...)...)
	if err == nil || !strings.Contains(err.Error(), "refused a vote run") || !strings.Contains(err.Error(), "--strategies debate") {
		t.Fatalf("vote on a mesh without it: %v", err)
	}
}
