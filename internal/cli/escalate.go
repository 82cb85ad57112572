package cli

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	"github.com/superinstance/mesh/hub/agent"
	"github.com/superinstance/mesh/internal/config"
	meshv1 "github.com/superinstance/mesh/proto/meshv1"
)

func escalateCommand() *Command {
	var (
		api, secretFile, devDir string
		req                     agent.EscalateRequest
		asJSON                  bool
		timeout                 time.Duration
	)
	return &Command{
		Name:  "escalate",
		Args:  `"prompt"`,
		Short: "send a request to the cloud through the local hub's tunnel",
		Long: `si escalate hands a prompt to the hub running on this machine (si hub, or
si dev's local hub), which sends it to the cloud bridge over its QUIC tunnel.
The bridge runs it as a consensus billed to the hub's account and streams the
steps back. If the tunnel is down the hub keeps the request (on disk, in its
outbox) and sends it when the link returns; si escalate says on stderr that it
is waiting, and gives up after --timeout. If the hub restarts meanwhile,
si escalate asks again under the same request id and gets the same request's
result: the request runs once.

The hub's API answers only requests carrying its secret, which the hub
writes at start: si escalate reads it from --hub-secret-file, by default
from the si dev in --dev-dir when its hub answers at --hub-api, else from
the one hub enrolled on this machine (~/.si/devices/<id>/api-secret).`,
		Flags: func(fs *flag.FlagSet) {
			fs.StringVar(&api, "hub-api", "127.0.0.1:7450", "the local hub's API address")
			fs.StringVar(&secretFile, "hub-secret-file", "", "the hub's API secret (default: found in --dev-dir or ~/.si/devices/<id>/"+agent.SecretFile+")")
			fs.StringVar(&devDir, "dev-dir", config.DevDir(), "data directory of the si dev whose local hub to use")
			fs.StringVar(&req.Project, "project", "", "project the run belongs to")
			fs.Func("max-rounds", "rounds before the Arbiter decides (default 3)", func(s string) error {
				_, err := fmt.Sscan(s, &req.MaxRounds)
				return err
			})
			fs.Float64Var(&req.Threshold, "threshold", 0, "consensus score needed (default 0.8)")
			fs.StringVar(&req.LoRA, "lora", "", "LoRA adapter id for Logos")
			fs.StringVar(&req.RequestID, "request-id", "", "your id for the request; resending the same id never runs it twice")
			fs.BoolVar(&asJSON, "json", false, "print the result as JSON (and a failure as {\"error\": {...}})")
			fs.DurationVar(&timeout, "timeout", 2*time.Minute, "how long to wait for the result, a link that is down included (0: no limit); the hub keeps the request after it")
		},
		Run: func(ctx context.Context, env *Env, args []string) error {
			req.Prompt = strings.Join(args, " ")
			if strings.TrimSpace(req.Prompt) == "" {
				return errors.New(`a prompt is required: si escalate "your question"`)
			}
			// The hub's API answers only a loopback Host: its secret is never
			// sent anywhere else.
			if h, _, err := net.SplitHostPort(api); err != nil || !loopback(h) {
				return fmt.Errorf("--hub-api %q is not a loopback address (127.0.0.1:PORT, [::1]:PORT or localhost:PORT): the hub's API answers only there, and its secret goes nowhere else", api)
			}
			if secretFile == "" {
				var err error
				if secretFile, err = hubSecretFile(api, devDir); err != nil {
					return err
				}
			}
			secret, err := agent.ReadSecret(secretFile)
			if err != nil {
				return err
			}
			if req.RequestID == "" {
				// An id of our own, so that asking again after the hub
				// restarts attaches to the same request.
				req.RequestID = newRequestID()
			}
			if timeout > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, timeout)
				defer cancel()
			}
			e := escalation{env: env, api: api, secret: secret, req: req, asJSON: asJSON}
			err = e.run(ctx)
			if err != nil && ctx.Err() == context.DeadlineExceeded {
				err = &escalateError{Code: "timeout", RequestID: req.RequestID, Message: fmt.Sprintf(
					"no result after %s: the hub keeps request %s and sends it when the link is up; run si escalate --request-id %s to wait for it again", timeout, req.RequestID, req.RequestID)}
			}
			if err != nil && asJSON {
				var ee *escalateError
				if !errors.As(err, &ee) {
					ee = &escalateError{Code: "error", RequestID: req.RequestID, Message: err.Error()}
				}
				_ = printJSON(env.Stdout, map[string]any{"error": ee})
			}
			return err
		},
	}
}

// escalateError is a failed si escalate, as --json prints it.
type escalateError struct {
	Code      string `json:"code"`
	RequestID string `json:"request_id"`
	Message   string `json:"message"`
}

func (e *escalateError) Error() string { return e.Message }

type escalation struct {
	env          *Env
	api, secret  string
	req          agent.EscalateRequest
	asJSON       bool
	attachedOnce bool
}

// run posts the request and follows it to its result. When the hub's
// stream ends before a result (the hub restarted), it posts the same
// request id again, which attaches to the request the hub kept, until ctx ends.
func (e *escalation) run(ctx context.Context) error {
	said := ""
	for wait := 250 * time.Millisecond; ; wait = min(2*wait, 2*time.Second) {
		done, err := e.attempt(ctx)
		if done || ctx.Err() != nil {
			return err
		}
		if msg := err.Error(); msg != said { // once per change, not once per try
			said = msg
			fmt.Fprintf(e.env.Stderr, "si escalate: %v; attaching again to request %s\n", err, e.req.RequestID)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
		}
	}
}

// attempt posts the request once; done reports that err (nil with a
// result) is final, as opposed to a hub that went away meanwhile.
func (e *escalation) attempt(ctx context.Context) (done bool, err error) {
	body, _ := json.Marshal(e.req)
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+e.api+"/v1/escalate", bytes.NewReader(body))
	if err != nil {
		return true, err
	}
	hreq.Header.Set("Content-Type", "application/json")
	hreq.Header.Set(agent.SecretHeader, "Bearer "+e.secret)
	resp, err := http.DefaultClient.Do(hreq)
	if err != nil {
		if !e.attachedOnce {
			return true, fmt.Errorf("no hub answers at %s: start `si hub` or `si dev`, or pass --hub-api", e.api)
		}
		return false, fmt.Errorf("no hub answers at %s yet", e.api)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		var he struct {
			Error struct{ Message string } `json:"error"`
		}
		msg := fmt.Sprintf("hub answered %s", resp.Status)
		if json.Unmarshal(b, &he) == nil && he.Error.Message != "" {
			msg = he.Error.Message
		}
		// A hub whose outbox could not take the request may take it later.
		return resp.StatusCode != http.StatusServiceUnavailable, errors.New(msg)
	}
	e.attachedOnce = true
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	out := e.env.Stdout
	for sc.Scan() {
		var r meshv1.EscalationResponse
		if err := protojson.Unmarshal(sc.Bytes(), &r); err != nil {
			return true, fmt.Errorf("hub sent an unreadable line: %w", err)
		}
		switch b := r.GetBody().(type) {
		case *meshv1.EscalationResponse_Progress:
			p := b.Progress
			if p.GetAgent() == "hub" {
				// The hub's own word on the link goes to stderr, --json or not.
				fmt.Fprintf(e.env.Stderr, "si escalate: %s (request %s)\n", oneLine(p.GetText(), 200), e.req.RequestID)
				continue
			}
			if !e.asJSON {
				fmt.Fprintf(out, "  %-8s round %d  %s", p.GetAgent(), p.GetRound(), oneLine(p.GetText(), 100))
				if p.GetAgent() == "ethos" {
					fmt.Fprintf(out, " (score %.4f)", p.GetScore())
				}
				fmt.Fprintln(out)
			}
		case *meshv1.EscalationResponse_Result:
			res := b.Result
			if e.asJSON {
				return true, printProtoJSON(out, res, false)
			}
			fmt.Fprintf(out, "\nstatus    %s\nscore     %.4f\nrounds    %d\nanswer    %s\nworkflow  %s\n",
				res.GetStatus(), res.GetScore(), res.GetRounds(), res.GetAnswer(), res.GetWorkflowId())
			return true, nil
		case *meshv1.EscalationResponse_Error:
			return true, &escalateError{Code: b.Error.GetCode(), RequestID: e.req.RequestID,
				Message: fmt.Sprintf("escalation failed (%s): %s", b.Error.GetCode(), b.Error.GetMessage())}
		}
	}
	if ctx.Err() != nil {
		return true, ctx.Err()
	}
	return false, errors.New("the hub's stream ended before a result")
}

func newRequestID() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return "cli-" + hex.EncodeToString(b[:])
}

// loopback reports whether host names this machine's loopback interface.
func loopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// hubSecretFile finds the API secret of the hub answering at api: the si
// dev in devDir if its local hub is the one, else the one hub enrolled
// under ~/.si/devices.
func hubSecretFile(api, devDir string) (string, error) {
	if st, err := config.ReadDevState(devDir); err == nil && st.HubAPI == api {
		return filepath.Join(devDir, "hub", agent.SecretFile), nil
	}
	found, _ := filepath.Glob(filepath.Join(config.HomeDir(), "devices", "*", agent.SecretFile))
	switch len(found) {
	case 1:
		return found[0], nil
	case 0:
		return "", fmt.Errorf("no secret for the hub API at %s: pass --hub-secret-file (si hub writes it beside its certificate, ~/.si/devices/<id>/%s; si dev in <data-dir>/hub/%s), or --dev-dir for an si dev with another data directory",
			api, agent.SecretFile, agent.SecretFile)
	}
	return "", fmt.Errorf("%d hubs on this machine have an API secret (%s): pass --hub-secret-file for the one at %s", len(found), strings.Join(found, ", "), api)
}
