package cli

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"

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
	)
	return &Command{
		Name:  "escalate",
		Args:  `"prompt"`,
		Short: "send a request to the cloud through the local hub's tunnel",
		Long: `si escalate hands a prompt to the hub running on this machine (si hub, or
si dev's local hub), which sends it to the cloud bridge over its QUIC tunnel.
The bridge runs it as a consensus billed to the hub's account and streams the
steps back. If the tunnel is down the hub keeps the request and sends it when
the link returns.

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
			fs.BoolVar(&asJSON, "json", false, "print the result as JSON")
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
			body, _ := json.Marshal(req)
			hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+api+"/v1/escalate", bytes.NewReader(body))
			if err != nil {
				return err
			}
			hreq.Header.Set("Content-Type", "application/json")
			hreq.Header.Set(agent.SecretHeader, "Bearer "+secret)
			resp, err := http.DefaultClient.Do(hreq)
			if err != nil {
				return fmt.Errorf("no hub answers at %s: start `si hub` or `si dev`, or pass --hub-api", api)
			}
			defer resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
				var e struct {
					Error struct{ Message string } `json:"error"`
				}
				if json.Unmarshal(b, &e) == nil && e.Error.Message != "" {
					return errors.New(e.Error.Message)
				}
				return fmt.Errorf("hub answered %s", resp.Status)
			}
			sc := bufio.NewScanner(resp.Body)
			sc.Buffer(make([]byte, 64<<10), 4<<20)
			for sc.Scan() {
				var r meshv1.EscalationResponse
				if err := protojson.Unmarshal(sc.Bytes(), &r); err != nil {
					return fmt.Errorf("hub sent an unreadable line: %w", err)
				}
				switch b := r.GetBody().(type) {
				case *meshv1.EscalationResponse_Progress:
					if !asJSON {
						p := b.Progress
						fmt.Fprintf(env.Stdout, "  %-8s round %d  %s", p.GetAgent(), p.GetRound(), oneLine(p.GetText(), 100))
						if p.GetAgent() == "ethos" {
							fmt.Fprintf(env.Stdout, " (score %.4f)", p.GetScore())
						}
						fmt.Fprintln(env.Stdout)
					}
				case *meshv1.EscalationResponse_Result:
					res := b.Result
					if asJSON {
						out, _ := protojson.MarshalOptions{Multiline: true, UseProtoNames: true}.Marshal(res)
						fmt.Fprintln(env.Stdout, string(out))
						return nil
					}
					fmt.Fprintf(env.Stdout, "\nstatus    %s\nscore     %.4f\nrounds    %d\nanswer    %s\nworkflow  %s\n",
						res.GetStatus(), res.GetScore(), res.GetRounds(), res.GetAnswer(), res.GetWorkflowId())
					return nil
				case *meshv1.EscalationResponse_Error:
					return fmt.Errorf("escalation failed (%s): %s", b.Error.GetCode(), b.Error.GetMessage())
				}
			}
			if err := sc.Err(); err != nil {
				return err
			}
			return errors.New("the hub closed the stream before a result")
		},
	}
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
