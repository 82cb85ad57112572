package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/user"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/superinstance/mesh/hub/hubcmd"
	"github.com/superinstance/mesh/internal/config"
	"github.com/superinstance/mesh/internal/runner"
	"github.com/superinstance/mesh/internal/store"
	"github.com/superinstance/mesh/workflows"
)

// allowListHelp is the allow-list's format, for si hub and si hub commands.
const allowListHelp = `The allow-list is a JSON file the hub's owner edits (default
~/.si/devices/<id>/commands.json, or --commands); without it nothing runs.
It is read at every request, so an edit takes effect at once, and refused
when others than its owner may write it. Example:

  {"commands": [
    {"name": "gpu-status", "path": "/usr/bin/nvidia-smi",
     "args": [[], ["--query-gpu=<word>", "--format=csv"]],
     "timeout": "10s", "max_output_bytes": 65536},
    {"name": "restart-kernel", "path": "/usr/bin/systemctl",
     "args": [["restart", "si-kernel.service"]]}
  ]}

Each command: name (what the cloud asks for), path (absolute; run with
exec, never a shell), args (the argument forms it takes; each argument
matches an exact string or holds one placeholder, <int>, <uint> or <word>,
alone or with a literal prefix and suffix; no forms: no arguments),
timeout (default 30s, at most 1h: then its whole process group is killed),
max_output_bytes (stdout and stderr together, default 64 KiB, at most
1 MiB; the rest is counted, and cut with a marker), env (its whole
environment: none by default) and dir (default /). Unknown fields are
refused. Every request, run or refused, is appended to the audit log
(commands.audit.jsonl beside it) with who asked, the command, its exit
code and bytes out.`

// hubCommandFiles resolves the allow-list and audit log paths of si hub
// and si hub commands: beside the device's other files unless given.
func hubCommandFiles(dir, list, audit string) (string, string) {
	if list == "" {
		list = filepath.Join(dir, hubcmd.AllowListFile)
	}
	if audit == "" {
		audit = filepath.Join(filepath.Dir(list), hubcmd.AuditFile)
	}
	return list, audit
}

func hubExecCommand() *Command {
	var (
		t       config.Temporal
		device  string
		account string
		askedBy string
		timeout time.Duration
		pickup  time.Duration
		asJSON  bool
	)
	return &Command{
		Name:     "exec",
		Args:     "-- NAME [ARGS...]",
		Operator: true,
		Short:    "operator: ask a hub to run a command of its own allow-list (si hub exec --device DEV -- NAME ARGS...)",
		Long: `si hub exec asks one hub to run one command its owner admits in the hub's
allow-list (see si hub commands --help), and prints its output and exit
code; the hub refuses anything else and nothing runs by default. It starts
a HubCommandWorkflow, which records the request in the cloud's audit table
hub_commands and checks that the asker may ask this device: the operator,
or with --account the device's own account (to any other the device
answers as if it did not exist). The hub runs it once, as the activity
Hub.RunCommand on its own queue, and audits it in its own log.

si hub exec exits with the command's exit code; a refusal exits 3, a hub
that gave no answer 4 (if it took the request, the command may have run:
see si hub commands on the hub). Interrupted (Ctrl-C), it cancels the
request: the hub kills the command's process group within about a second
(at the next heartbeat), both audits record it, and si hub exec prints what
the command wrote until then and exits 130.`,
		Flags: func(fs *flag.FlagSet) {
			t.Register(fs, "127.0.0.1:7233", "Temporal frontend host:port")
			fs.StringVar(&device, "device", "", "the hub's device id (si hubs lists them)")
			fs.StringVar(&account, "account", "", "ask for this account, which must be the device's (default: the operator, for the device's own account)")
			fs.StringVar(&askedBy, "asked-by", "", "who asks, for both audit logs (default: operator <login name>)")
			fs.DurationVar(&timeout, "timeout", workflows.DefaultHubCommandTimeout, "the longest run (the hub's allow-list may set a shorter one), at most 1h")
			fs.DurationVar(&pickup, "pickup", workflows.DefaultHubPickup, "how long the hub has to take the request before nothing runs (it is offline, say)")
			fs.BoolVar(&asJSON, "json", false, "print the result as JSON (output base64-encoded)")
		},
		Run: func(ctx context.Context, env *Env, args []string) error {
			if device == "" {
				return errors.New("--device is required: the hub's device id (si hubs lists them)")
			}
			if len(args) == 0 {
				return errors.New("name the command after --: si hub exec --device " + device + " -- NAME [ARGS...]")
			}
			if err := hubcmd.ValidRequest(args[0], args[1:]); err != nil {
				return err
			}
			if timeout <= 0 || timeout > hubcmd.MaxTimeout {
				return fmt.Errorf("--timeout %s: want a duration up to %s", timeout, hubcmd.MaxTimeout)
			}
			if pickup <= 0 {
				return fmt.Errorf("--pickup %s: want a positive duration such as 1m", pickup)
			}
			if askedBy == "" {
				askedBy = "operator"
				if u, err := user.Current(); err == nil && u.Username != "" {
					askedBy += " " + u.Username
				}
			}
			c, err := t.Dial(10 * time.Second)
			if err != nil {
				return err
			}
			defer c.Close()
			res, err := runner.HubCommand(ctx, c, workflows.HubCommandInput{Device: device, Account: account, Operator: account == "", AskedBy: askedBy,
				Command: args[0], Args: args[1:], Timeout: timeout, Pickup: pickup})
			if err != nil {
				return fmt.Errorf("hub command: %w", err)
			}
			if asJSON {
				if err := printJSON(env.Stdout, res); err != nil {
					return err
				}
			} else {
				writeOutput(env.Stdout, res.Stdout)
				writeOutput(env.Stderr, res.Stderr)
			}
			switch {
			case res.Cancelled:
				if !asJSON {
					msg := res.Error
					if msg == "" {
						msg = fmt.Sprintf("cancelled: the hub killed %s after %s (exit %d, %d bytes written)", args[0], res.Duration.Round(time.Millisecond), res.ExitCode, res.BytesOut)
					}
					fmt.Fprintln(env.Stderr, "si: "+printable(msg))
				}
				return ExitError{Code: 130}
			case res.Refused != "":
				if !asJSON {
					fmt.Fprintf(env.Stderr, "si: refused by the %s: %s\n", res.RefusedBy, printable(res.Refused))
					if res.RefusedBy == "hub" {
						fmt.Fprintln(env.Stderr, "The hub's owner admits commands in its allow-list (si hub commands on the hub shows it).")
					}
				}
				return ExitError{Code: 3}
			case res.Error != "":
				if !asJSON {
					fmt.Fprintln(env.Stderr, "si: "+printable(res.Error))
				}
				return ExitError{Code: 4}
			}
			if !asJSON {
				note := ""
				if res.TimedOut {
					note = ", killed at its timeout"
				}
				if res.Truncated {
					note += fmt.Sprintf(", output cut to the hub's bound (%d bytes written)", res.BytesOut)
				}
				if note != "" || res.ExitCode != 0 {
					fmt.Fprintf(env.Stderr, "si: %s on %s exited %d%s\n", args[0], device, res.ExitCode, note)
				}
			}
			if res.ExitCode != 0 {
				code := res.ExitCode
				if code < 0 || code > 255 {
					code = 1
				}
				return ExitError{Code: code}
			}
			return nil
		},
	}
}

func hubCommandsCommand() *Command {
	var (
		id, list, audit string
		lines           int
		asJSON          bool
	)
	return &Command{
		Name:  "commands",
		Short: "print this hub's allow-list of cloud-to-local commands and its recent audit lines",
		Long: `si hub commands prints the commands this hub runs when the cloud asks (si hub
exec), as the hub itself reads them, and the last lines of its audit log.

` + allowListHelp,
		Flags: func(fs *flag.FlagSet) {
			fs.StringVar(&id, "id", "", "device id: the files are in ~/.si/devices/<id>/")
			fs.StringVar(&list, "commands", "", "the allow-list file (default ~/.si/devices/<id>/"+hubcmd.AllowListFile+")")
			fs.StringVar(&audit, "commands-audit", "", "the audit log (default "+hubcmd.AuditFile+" beside --commands)")
			fs.IntVar(&lines, "lines", 20, "how many of the audit log's last lines to print")
			fs.BoolVar(&asJSON, "json", false, "print JSON")
		},
		Run: func(_ context.Context, env *Env, args []string) error {
			if len(args) > 0 {
				return fmt.Errorf("unexpected argument %q", args[0])
			}
			if id == "" && list == "" {
				return errors.New("pass --id (the device id) or --commands FILE")
			}
			if lines < 0 || lines > 10000 {
				return fmt.Errorf("--lines %d: want 0 to 10000", lines)
			}
			list, audit = hubCommandFiles(deviceDir(id), list, audit)
			type view struct {
				AllowList string             `json:"allow_list"`
				Problem   string             `json:"problem,omitempty"`
				Commands  []hubcmd.Entry     `json:"commands"`
				AuditLog  string             `json:"audit_log"`
				Recent    []hubcmd.AuditLine `json:"recent"`
			}
			v := view{AllowList: list, AuditLog: audit, Commands: []hubcmd.Entry{}, Recent: []hubcmd.AuditLine{}}
			l, err := hubcmd.Load(list)
			if err != nil {
				v.Problem = err.Error()
			} else {
				v.Commands = l.Commands
			}
			recent, err := hubcmd.Recent(audit, lines)
			if err != nil {
				return fmt.Errorf("audit log %s: %w", audit, err)
			}
			if recent != nil {
				v.Recent = recent
			}
			if asJSON {
				return printJSON(env.Stdout, v)
			}
			if v.Problem != "" {
				fmt.Fprintf(env.Stdout, "nothing runs: %s\n", printable(v.Problem))
			} else if len(v.Commands) == 0 {
				fmt.Fprintf(env.Stdout, "allow-list %s admits no command: nothing runs\n", list)
			} else {
				fmt.Fprintf(env.Stdout, "allow-list %s:\n", list)
				tw := tabwriter.NewWriter(env.Stdout, 0, 2, 2, ' ', 0)
				fmt.Fprintln(tw, "NAME\tPATH\tARGUMENT FORMS\tTIMEOUT\tMAX OUTPUT\tENV")
				for _, e := range v.Commands {
					forms := []string{}
					for _, f := range e.Args {
						forms = append(forms, "["+strings.Join(f, " ")+"]")
					}
					if len(forms) == 0 {
						forms = []string{"(none)"}
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%d vars\n", e.Name, e.Path, strings.Join(forms, " "), e.EffectiveTimeout(), e.MaxOutputBytes, len(e.Env))
				}
				_ = tw.Flush()
			}
			fmt.Fprintf(env.Stdout, "\naudit log %s", audit)
			if len(v.Recent) == 0 {
				fmt.Fprintln(env.Stdout, ": no request yet")
				return nil
			}
			fmt.Fprintln(env.Stdout, ":")
			tw := tabwriter.NewWriter(env.Stdout, 0, 2, 2, ' ', 0)
			fmt.Fprintln(tw, "TIME\tEVENT\tASKED BY\tACCOUNT\tCOMMAND\tEXIT\tBYTES\tNOTE")
			for _, r := range v.Recent {
				exit := "-"
				if r.ExitCode != nil {
					exit = fmt.Sprint(*r.ExitCode)
				}
				note := r.Refused
				if r.TimedOut {
					note = "killed at its timeout"
				}
				if r.Cancelled {
					note = "cancelled: killed"
				}
				if r.Truncated {
					note = strings.TrimPrefix(note+"; output cut", "; ")
				}
				if r.Error != "" {
					note = r.Error
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%d\t%s\n", r.Time.Local().Format(time.DateTime), r.Event, cell(r.AskedBy), cell(r.Account),
					cell(strings.TrimSpace(r.Command+" "+strings.Join(r.Args, " "))), exit, r.BytesOut, cell(note))
			}
			return tw.Flush()
		},
	}
}

// hubCommands builds si hub's Hub.RunCommand over the allow-list at list.
func hubCommands(device, account, list, audit string) (*hubcmd.Hub, string) {
	h := &hubcmd.Hub{Device: device, Account: account, AllowList: list, Audit: hubcmd.NewAudit(audit)}
	note := "commands: allow-list " + list
	if _, err := os.Stat(list); err != nil {
		note += " (absent: nothing runs)"
	}
	return h, note
}

func hubAuditCommand() *Command {
	var (
		db     config.Database
		device string
		limit  int
		asJSON bool
	)
	return &Command{
		Name:     "audit",
		Operator: true,
		Short:    "operator: the cloud's audit of commands asked of a hub (hub_commands), newest first",
		Long: `si hub audit lists the requests to run a command on --device that the cloud
recorded (si hub exec, POST /v1/hubs/{device}/commands, workflows): who
asked, for which account, the command and arguments, and what came of it:
the exit code and bytes out, or the refusal and whether the cloud or the
hub refused, or why the hub gave no answer. The hub keeps its own log (si
hub commands, on the hub).`,
		Flags: func(fs *flag.FlagSet) {
			db.Register(fs)
			fs.StringVar(&device, "device", "", "the hub's device id")
			fs.IntVar(&limit, "limit", 50, "at most this many requests")
			fs.BoolVar(&asJSON, "json", false, "print JSON")
		},
		Run: func(ctx context.Context, env *Env, args []string) error {
			if len(args) > 0 {
				return fmt.Errorf("unexpected argument %q", args[0])
			}
			if device == "" {
				return errors.New("--device is required: the hub's device id (si hubs lists them)")
			}
			if limit <= 0 || limit > 10000 {
				return fmt.Errorf("--limit %d: want 1 to 10000", limit)
			}
			st, err := db.Open(ctx)
			if err != nil {
				return err
			}
			defer st.Close()
			rows, err := st.HubCommands(ctx, device, limit)
			if err != nil {
				return err
			}
			if asJSON {
				if rows == nil {
					rows = []store.HubCommand{}
				}
				return printJSON(env.Stdout, rows)
			}
			if len(rows) == 0 {
				fmt.Fprintf(env.Stdout, "no command was asked of %s\n", device)
				return nil
			}
			tw := tabwriter.NewWriter(env.Stdout, 0, 2, 2, ' ', 0)
			fmt.Fprintln(tw, "STARTED\tASKED BY\tACCOUNT\tCOMMAND\tEXIT\tBYTES\tOUTCOME")
			for _, r := range rows {
				exit, outcome := "-", "ran"
				if r.ExitCode != nil {
					exit = fmt.Sprint(*r.ExitCode)
				}
				switch {
				case r.Refused != "":
					outcome = "refused by the " + r.RefusedBy + ": " + r.Refused
				case r.Error != "":
					outcome = r.Error
				case r.FinishedAt == nil:
					outcome = "in flight"
				case r.TimedOut:
					outcome = "killed at its timeout"
				case r.Cancelled:
					outcome = "cancelled: killed by the hub"
				}
				if r.Truncated {
					outcome += "; output cut"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%s\n", r.StartedAt.Local().Format(time.DateTime), cell(r.AskedBy), cell(r.Account),
					cell(strings.TrimSpace(r.Command+" "+strings.Join(r.Args, " "))), exit, r.BytesOut, cell(outcome))
			}
			return tw.Flush()
		},
	}
}

// writeOutput writes a hub command's output: as it is to a file or a pipe,
// without control characters to a terminal (a hub's output could carry
// escape sequences meant for the operator's terminal).
func writeOutput(w io.Writer, b []byte) {
	if f, ok := w.(*os.File); ok {
		if st, err := f.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 {
			_, _ = io.WriteString(w, printable(strings.ToValidUTF8(string(b), "?")))
			return
		}
	}
	_, _ = w.Write(b)
}

// cell is one table cell of text others wrote (arguments, refusals): on
// one line, without control characters.
func cell(s string) string {
	return strings.Map(func(r rune) rune {
		if r == '\t' || r == '\n' || r == '\r' {
			return ' '
		}
		return dropControl(r)
	}, strings.ToValidUTF8(s, "?"))
}
