package simulator

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/superinstance/mesh/internal/llm"
	"github.com/superinstance/mesh/internal/synapse"
)

// A streamed reply is the same reply, in chunks that arrive one token's
// latency apart, with usage in the last chunk when asked for.
func TestStreamsWhenAsked(t *testing.T) {
	_, c := serve(t, Options{TokenLatency: 2 * time.Millisecond})
	p := synapse.EthosPrompt("Is 7 prime?", synapse.Manifest{Intent: "i"}, synapse.Solution{Answer: "yes"}, 1)
	msgs := []llm.Message{{Role: "system", Content: p.System}, {Role: "user", Content: p.User}}
	whole := chat(t, c, ModelSmall, p)
	var arrivals []time.Time
	start := time.Now()
	got, err := c.Chat(context.Background(), llm.Request{Model: ModelSmall, Messages: msgs, Stream: true,
		OnChunk: func() { arrivals = append(arrivals, time.Now()) }})
	if err != nil {
		t.Fatal(err)
	}
	if !got.Streamed || got.Text != whole.Text || got.Usage != whole.Usage || got.UsageEstimated || got.FinishReason != "stop" {
		t.Fatalf("streamed %+v\nwhole %+v", got, whole)
	}
	if got.Chunks < whole.Usage.CompletionTokens-1 || len(arrivals) < got.Chunks {
		t.Fatalf("%d chunks (%d arrivals) for %d tokens", got.Chunks, len(arrivals), whole.Usage.CompletionTokens)
	}
	if first, total := arrivals[1].Sub(start), time.Since(start); first > total/2 {
		t.Fatalf("first token after %v of %v: the reply was not streamed as it was made", first, total)
	}
	var v synapse.Verification
	if err := synapse.Parse(got.Text, &v); err != nil {
		t.Fatal(err)
	}
}

// Without include_usage the simulator sends no usage, as servers do, and
// the client bills its estimate; max_tokens cuts a stream as it cuts a reply.
func TestStreamWithoutUsageAndCut(t *testing.T) {
	_, c := serve(t, Options{})
	p := synapse.LogosPrompt("q", synapse.Manifest{Intent: "i"}, 1, "", "")
	hc := &http.Client{Transport: dropStreamOptions{http.DefaultTransport}}
	c.HTTP = hc
	msgs := []llm.Message{{Role: "system", Content: p.System}, {Role: "user", Content: p.User}}
	got, err := c.Chat(context.Background(), llm.Request{Model: ModelSmall, Messages: msgs, Stream: true, MaxTokens: 5})
	if err != nil {
		t.Fatal(err)
	}
	if !got.UsageEstimated || got.FinishReason != "length" || len(got.Text) != 16 || got.Usage.CompletionTokens < 4 {
		t.Fatalf("%+v", got)
	}
}

// dropStreamOptions strips stream_options from a request body, as a client
// that never asks for usage would send it.
type dropStreamOptions struct{ rt http.RoundTripper }

func (d dropStreamOptions) RoundTrip(r *http.Request) (*http.Response, error) {
	b, err := io.ReadAll(r.Body)
	if err != nil {
		return nil, err
	}
	body := strings.Replace(string(b), `,"stream_options":{"include_usage":true}`, "", 1)
	r2 := r.Clone(r.Context())
	r2.Body, r2.ContentLength = io.NopCloser(strings.NewReader(body)), int64(len(body))
	return d.rt.RoundTrip(r2)
}
