package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/superinstance/mesh/internal/billing"
	"github.com/superinstance/mesh/internal/money"
	"github.com/superinstance/mesh/test/harness"
)

// jsonOf runs si args (which print JSON) into v, failing the test on error.
func (m *devMesh) jsonOf(t *testing.T, v any, args ...string) {
	t.Helper()
	cmd := exec.Command(m.si, args...)
	cmd.Env = cleanEnv()
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("si %s: %v\n%s%s", shortArgs(args), err, out, stderr.String())
	}
	if err := json.Unmarshal(out, v); err != nil {
		t.Fatalf("si %s: %v\n%s", shortArgs(args), err, out)
	}
}

type flushOut struct {
	Outcome string `json:"outcome"`
	Flush   *struct {
		ID          string `json:"id"`
		AmountCents int64  `json:"amount_cents"`
		State       string `json:"state"`
	} `json:"flush"`
	Unbilled int64 `json:"unbilled_micros"`
}

type flushRow struct {
	ID          string `json:"id"`
	AmountCents int64  `json:"amount_cents"`
	State       string `json:"state"`
	Attempts    int    `json:"attempts"`
}

type balanceOut struct {
	Credits  int64 `json:"credits_micros"`
	Unbilled int64 `json:"unbilled_micros"`
	Ceiling  int64 `json:"credit_ceiling_micros"`
	Status   string
}

type usageEvent struct {
	EventID          string `json:"event_id"`
	Model            string `json:"model"`
	PromptTokens     int64  `json:"prompt_tokens"`
	CompletionTokens int64  `json:"completion_tokens"`
	Charged          int64  `json:"charged_micros"`
}

type askState struct {
	WorkflowID string `json:"workflow_id"`
	Status     string `json:"status"`
	Error      string `json:"error"`
	Usage      []struct {
		Model            string `json:"model"`
		PromptTokens     int64  `json:"prompt_tokens"`
		CompletionTokens int64  `json:"completion_tokens"`
	} `json:"usage"`
}

// TestMoneyWithDev drives the money path of a real si dev whose Stripe is
// the stateful double: a skipped flush and then a real one, an outage
// longer than a flush's quick retries healed with one meter event per
// flush, and 30 concurrent asks at the credit ceiling.
func TestMoneyWithDev(t *testing.T) {
	si, _ := binaries(t)
	double := harness.NewStripeDouble(t)
	// The simulator's latency makes concurrent runs overlap in part 3.
	m := startDev(t, si, "money", "--stripe-api-base", double.URL, "--stripe-key", "sk_test_double", "--sim-latency", "200ms")
	db := []string{"--dev-dir", m.dataDir}
	tmp := []string{"--temporal-address", m.frontend}
	customers := double.Customers()
	if len(customers) != 2 {
		t.Fatalf("si dev gave dev and acme Stripe customers at the double; it holds %v", customers)
	}
	const route = "POST /v1/billing/meter_events"

	// (1) Nothing to flush, then usage, then a flush that sends.
	var f flushOut
	m.jsonOf(t, &f, append(append([]string{"billing", "flush", "--json"}, db...), tmp...)...)
	if f.Outcome != "nothing_to_flush" || f.Flush != nil || double.Requests(route) != 0 {
		t.Fatalf("first flush: %+v, %d meter event requests", f, double.Requests(route))
	}
	// Two long questions (near the 64 KiB prompt limit) cost at least a cent.
	question := strings.Repeat("How many moons does Jupiter have? ", 1800) + "[sim:agree]"
	ask := func() {
		t.Helper()
		var st askState
		m.jsonOf(t, &st, "ask", "--json", question)
		if st.Status != "consensus" {
			t.Fatalf("ask: %+v", st)
		}
	}
	ask()
	ask()
	var bal balanceOut
	m.jsonOf(t, &bal, "balance", "--json")
	if bal.Unbilled < int64(money.Cent) {
		t.Fatalf("one ask left %d micro-dollars unbilled: under a cent, nothing to flush", bal.Unbilled)
	}
	var first flushOut
	m.jsonOf(t, &first, append(append([]string{"billing", "flush", "--json", "--wait", "30s"}, db...), tmp...)...)
	if first.Outcome != "sent" || first.Flush == nil || first.Flush.AmountCents != bal.Unbilled/int64(money.Cent) {
		t.Fatalf("second flush: %+v (unbilled was %d)", first, bal.Unbilled)
	}
	if ev := double.Events(billing.MeterEventKey(first.Flush.ID)); len(ev) != 1 || ev[0].Value != first.Flush.AmountCents {
		t.Fatalf("the double holds %+v for flush %s", ev, first.Flush.ID)
	}

	// (2) An outage longer than the quick retries: the first request is
	// committed and its answer lost, then Stripe is down.
	ask()
	ask()
	double.Fault(route, harness.CommitDrop)
	double.SetDown(true)
	before := double.Requests(route)
	var second flushOut
	m.jsonOf(t, &second, append(append([]string{"billing", "flush", "--json", "--wait", "15s",
		"--send-attempts", "2", "--retry-every", "2s"}, db...), tmp...)...)
	if second.Flush == nil || second.Flush.ID == first.Flush.ID || second.Outcome != "in_doubt" {
		t.Fatalf("flush during the outage: %+v", second)
	}
	var rows []flushRow
	m.jsonOf(t, &rows, append([]string{"billing", "flushes", "--json"}, db...)...)
	if state := flushState(rows, second.Flush.ID); state != "in_doubt" {
		t.Fatalf("si billing flushes during the outage: %s is %q: %+v", second.Flush.ID, state, rows)
	}
	// Down through at least one more round of tries, then healed.
	for deadline := time.Now().Add(20 * time.Second); double.Requests(route) < before+4; time.Sleep(200 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the flush in doubt was not retried: %d requests", double.Requests(route)-before)
		}
	}
	double.SetDown(false)
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(300 * time.Millisecond) {
		m.jsonOf(t, &rows, append([]string{"billing", "flushes", "--json"}, db...)...)
		if flushState(rows, second.Flush.ID) == "sent" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the flush was not sent after the outage healed: %+v", rows)
		}
	}
	// Exactly one meter event per flush at Stripe, each of its flush's cents.
	all := double.Events("")
	if len(all) != 2 {
		t.Fatalf("the double holds %d meter events for 2 flushes: %+v", len(all), all)
	}
	for _, fl := range []*flushOut{&first, &second} {
		if ev := double.Events(billing.MeterEventKey(fl.Flush.ID)); len(ev) != 1 || ev[0].Value != fl.Flush.AmountCents || ev[0].Cancelled {
			t.Fatalf("the double holds %+v for flush %s (%d cents)", ev, fl.Flush.ID, fl.Flush.AmountCents)
		}
	}

	// (3) 30 concurrent asks on an account with room for only a few.
	m.jsonOf(t, &bal, "balance", "--json")
	setCeiling := func(c money.Micros) {
		t.Helper()
		if out, err := m.run(append([]string{"ceiling", "set", "--account", "dev", "--amount", strings.TrimPrefix(c.String(), "$")}, db...)...); err != nil {
			t.Fatalf("si ceiling set %s: %v\n%s", c, err, out)
		}
	}
	// One refused run says what a run may cost.
	setCeiling(money.Micros(bal.Unbilled - bal.Credits + 1))
	probe, err := m.run("ask", "--max-tokens", "64", "x [sim:agree]")
	re := regexp.MustCompile(`may cost up to \$([0-9.]+)`)
	mm := re.FindStringSubmatch(probe)
	if err == nil || mm == nil {
		t.Fatalf("ask with 1 micro-dollar of headroom: %v\n%s", err, probe)
	}
	hold, err := money.Parse(mm[1])
	if err != nil || hold <= 0 {
		t.Fatalf("hold %q: %v", mm[1], err)
	}
	ceiling := money.Micros(bal.Unbilled-bal.Credits) + 3*hold + hold/2
	setCeiling(ceiling)
	m.jsonOf(t, &bal, "balance", "--json")
	if bal.Ceiling != int64(ceiling) {
		t.Fatalf("ceiling %d, want %d", bal.Ceiling, ceiling)
	}
	startUnbilled := bal.Unbilled
	var earlier []usageEvent
	m.jsonOf(t, &earlier, "usage", "--json", "--limit", "1000")
	seen := map[string]bool{}
	for _, e := range earlier {
		seen[e.EventID] = true
	}
	callsBefore := inferenceCalls(t, m.metrics)
	var (
		mu       sync.Mutex
		ran      []askState
		refused  int
		wg       sync.WaitGroup
		problems []string
	)
	for i := range 30 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cmd := exec.Command(si, "ask", "--json", "--max-tokens", "64", fmt.Sprintf("Question %d? [sim:agree]", i))
			cmd.Env = cleanEnv()
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			err := cmd.Run()
			mu.Lock()
			defer mu.Unlock()
			var st askState
			if err == nil {
				if jerr := json.Unmarshal(stdout.Bytes(), &st); jerr != nil || st.Status != "consensus" {
					problems = append(problems, fmt.Sprintf("run %d: %v %s", i, jerr, stdout.String()))
				}
				ran = append(ran, st)
				return
			}
			msg := strings.TrimSpace(stderr.String())
			if strings.Contains(msg, "\n") || !strings.Contains(msg, "not enough headroom under the credit ceiling") {
				problems = append(problems, fmt.Sprintf("run %d refused without the one-line reason: %v\nstdout %s\nstderr %s", i, err, stdout.String(), msg))
			}
			if stdout.Len() > 0 {
				_ = json.Unmarshal(stdout.Bytes(), &st)
				if st.WorkflowID != "" && len(st.Usage) > 0 {
					problems = append(problems, fmt.Sprintf("refused run %d ran inference: %+v", i, st))
				}
			}
			refused++
		}()
	}
	wg.Wait()
	for _, p := range problems {
		t.Error(p)
	}
	if refused == 0 || len(ran) == 0 || len(ran)+refused != 30 {
		t.Fatalf("%d ran, %d refused: the ceiling should leave room for a few", len(ran), refused)
	}
	t.Logf("at the ceiling: %d runs ran, %d refused", len(ran), refused)
	// Every step that ran is billed: the usage events are exactly the runs' calls.
	var events []usageEvent
	m.jsonOf(t, &events, "usage", "--json", "--limit", "1000")
	byRun := map[string][]usageEvent{}
	var charged int64
	admitted := map[string]bool{}
	calls := 0
	for _, st := range ran {
		admitted[st.WorkflowID] = true
		calls += len(st.Usage)
	}
	for _, e := range events {
		if seen[e.EventID] {
			continue
		}
		wf := e.EventID
		if i := strings.LastIndex(wf, "/"); i > 0 { // <workflow id>/<step id>
			wf = wf[:i]
		}
		charged += e.Charged
		if !admitted[wf] {
			t.Errorf("usage event %s is of no run that was admitted", e.EventID)
		}
		byRun[wf] = append(byRun[wf], e)
	}
	// The refused runs ran no inference: the agent calls made are the admitted runs'.
	if n := inferenceCalls(t, m.metrics) - callsBefore; n != calls {
		t.Errorf("%d agent calls ran at the ceiling; the %d admitted runs made %d", n, len(ran), calls)
	}
	for _, st := range ran {
		evs := byRun[st.WorkflowID]
		if len(evs) != len(st.Usage) || len(st.Usage) == 0 {
			t.Errorf("run %s made %d calls and has %d usage events: %+v", st.WorkflowID, len(st.Usage), len(evs), evs)
			continue
		}
		var p, c, ep, ec int64
		for i := range st.Usage {
			p, c = p+st.Usage[i].PromptTokens, c+st.Usage[i].CompletionTokens
			ep, ec = ep+evs[i].PromptTokens, ec+evs[i].CompletionTokens
		}
		if p != ep || c != ec {
			t.Errorf("run %s: %d+%d tokens ran, %d+%d billed", st.WorkflowID, p, c, ep, ec)
		}
	}
	m.jsonOf(t, &bal, "balance", "--json")
	if bal.Unbilled-startUnbilled != charged {
		t.Errorf("unbilled rose by %d, the runs' usage events charge %d", bal.Unbilled-startUnbilled, charged)
	}
	// Unbilled only rose during the runs, so its last value is its highest.
	if bal.Unbilled-bal.Credits > int64(ceiling) {
		t.Errorf("unbilled %d passed the ceiling %d", bal.Unbilled, ceiling)
	}
}

func flushState(rows []flushRow, id string) string {
	for _, r := range rows {
		if r.ID == id {
			return r.State
		}
	}
	return ""
}

// shortArgs is args for a failure message, long questions cut.
func shortArgs(args []string) string {
	s := strings.Join(args, " ")
	if len(s) > 200 {
		s = s[:200] + "..."
	}
	return s
}

var stageCount = regexp.MustCompile(`(?m)^si_consensus_stage_seconds_count\{[^}]*\} (\d+)$`)

// inferenceCalls counts the agent calls /metrics has seen, every stage together.
func inferenceCalls(t *testing.T, url string) int {
	t.Helper()
	n := 0
	for _, m := range stageCount.FindAllStringSubmatch(httpGet(t, url), -1) {
		var c int
		_, _ = fmt.Sscan(m[1], &c)
		n += c
	}
	return n
}
