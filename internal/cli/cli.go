// Package cli is the `si` command line: a tree of commands, each with its own
// flags (every flag also read from an SI_ environment variable) and help.
package cli

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"

	"github.com/superinstance/mesh/internal/config"
)

// Version is set at build time with -ldflags "-X .../internal/cli.Version=...".
var Version = "dev"

// Command is one `si` command or a group of subcommands.
type Command struct {
	Name  string
	Args  string // the positional arguments, for the usage line
	Short string // one line for the parent's list
	Long  string // help text shown by `si help NAME`
	// Flags registers the command's flags and returns what Run needs.
	Flags func(fs *flag.FlagSet)
	Run   func(ctx context.Context, env *Env, args []string) error
	Sub   []*Command
	// Operator marks a command that needs the operator's credentials
	// (Temporal, PostgreSQL, S3, Stripe); si help lists them apart.
	Operator bool
}

// operatorCommands hold the mesh's own credentials; every other command is
// a customer's and reaches the mesh through the HTTP API alone.
var operatorCommands = map[string]bool{"dev": true, "server": true, "ca": true, "device": true, "account": true,
	"credit": true, "tier": true, "ceiling": true, "billing": true, "hubs": true, "stats": true, "simulator": true}

// Env is what commands read and write besides their flags.
type Env struct {
	Stdin  io.Reader
	Stdout io.Writer
	Stderr io.Writer
}

func (e *Env) stdin() io.Reader {
	if e.Stdin == nil {
		return strings.NewReader("")
	}
	return e.Stdin
}

// ExitError ends the program with Code after printing nothing more.
type ExitError struct{ Code int }

func (e ExitError) Error() string { return fmt.Sprintf("exit status %d", e.Code) }

// Root is the `si` command tree.
func Root() *Command {
	root := &Command{
		Name:  "si",
		Short: "the SuperInstance cloud mesh",
		Long: `si runs and drives the SuperInstance cloud mesh: durable consensus, billing,
LoRA adapters and collaborators, orchestrated by Temporal.

Customer commands (si ask, push, lora, balance, usage) talk to the mesh's HTTP
API with the token si login stores (or SI_TOKEN); the account comes from the
token. Operator commands hold the mesh's own Temporal, PostgreSQL, S3 and
Stripe credentials.

Every flag can also be set with an SI_ environment variable: --api-url reads
SI_API_URL, --temporal-address reads SI_TEMPORAL_ADDRESS. Flags win.`,
		Sub: []*Command{loginCommand(), logoutCommand(), whoamiCommand(), devCommand(), askCommand(), pushCommand(), loraCommand(), inviteCommand(), joinCommand(), handoverCommand(), statsCommand(), escalateCommand(), hubCommand(), hubsCommand(), caCommand(), deviceCommand(),
			serverCommand(), accountCommand(), balanceCommand(), usageCommand(), creditCommand(), tierCommand(), ceilingCommand(),
			withSub(billingCommand(), thresholdCommand()), stripeCommand(), priceCommand(), simulatorCommand(), versionCommand()},
	}
	for _, c := range root.Sub {
		c.Operator = operatorCommands[c.Name]
	}
	return root
}

// Execute runs one command line with env, returning the command's error.
func Execute(ctx context.Context, env *Env, args []string) error {
	return Root().execute(ctx, env, nil, args)
}

// Main runs the command line and returns the process's exit code.
func Main(args []string, stdout, stderr io.Writer) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	env := &Env{Stdin: os.Stdin, Stdout: stdout, Stderr: stderr}
	err := Root().execute(ctx, env, nil, args)
	var ee ExitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ee):
		return ee.Code
	case errors.Is(err, flag.ErrHelp):
		return 0
	}
	fmt.Fprintln(stderr, "si: "+err.Error())
	return 1
}

func (c *Command) execute(ctx context.Context, env *Env, parents []string, args []string) error {
	path := append(parents, c.Name)
	if len(c.Sub) > 0 && (c.Run == nil || (len(args) > 0 && c.find(args[0]) != nil)) {
		if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
			if len(args) > 1 && args[0] == "help" {
				if sub := c.find(args[1]); sub != nil {
					return sub.execute(ctx, env, path, append(args[2:], "--help"))
				}
			}
			c.usage(env.Stdout, path, nil)
			if len(args) == 0 {
				return ExitError{Code: 2}
			}
			return nil
		}
		sub := c.find(args[0])
		if sub == nil {
			c.usage(env.Stderr, path, nil)
			return fmt.Errorf("unknown command %q for %q", args[0], strings.Join(path, " "))
		}
		return sub.execute(ctx, env, path, args[1:])
	}
	fs := flag.NewFlagSet(strings.Join(path, " "), flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	if c.Flags != nil {
		c.Flags(fs)
	}
	if err := fs.Parse(interspersed(fs, args)); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			c.usage(env.Stdout, path, fs)
			return flag.ErrHelp
		}
		c.usage(env.Stderr, path, fs)
		return err
	}
	if err := config.ApplyEnv(fs); err != nil {
		return err
	}
	return c.Run(ctx, env, fs.Args())
}

func (c *Command) find(name string) *Command {
	for _, s := range c.Sub {
		if s.Name == name {
			return s
		}
	}
	return nil
}

func (c *Command) usage(w io.Writer, path []string, fs *flag.FlagSet) {
	name := strings.Join(path, " ")
	switch {
	case len(c.Sub) > 0 && c.Run != nil:
		fmt.Fprintf(w, "Usage: %s [flags] %s\n   or: %s <command> [flags]\n\n", name, c.Args, name)
	case len(c.Sub) > 0:
		fmt.Fprintf(w, "Usage: %s <command> [flags]\n\n", name)
	default:
		fmt.Fprintf(w, "Usage: %s [flags] %s\n\n", name, c.Args)
	}
	if c.Long != "" {
		fmt.Fprintf(w, "%s\n\n", strings.TrimSpace(c.Long))
	} else if c.Short != "" {
		fmt.Fprintf(w, "%s\n\n", c.Short)
	}
	if len(c.Sub) > 0 {
		subs := append([]*Command(nil), c.Sub...)
		sort.Slice(subs, func(i, j int) bool { return subs[i].Name < subs[j].Name })
		for _, op := range []bool{false, true} {
			title := "Commands:"
			if op {
				title = "\nOperator commands (they hold the mesh's Temporal, PostgreSQL, S3 and Stripe credentials):"
			}
			printed := false
			for _, s := range subs {
				if s.Operator != op {
					continue
				}
				if !printed {
					fmt.Fprintln(w, title)
					printed = true
				}
				fmt.Fprintf(w, "  %-12s %s\n", s.Name, s.Short)
			}
		}
		fmt.Fprintf(w, "\nRun '%s help <command>' for a command's flags.\n", name)
		if c.Run == nil {
			return
		}
		fmt.Fprintln(w)
	}
	if fs == nil {
		return
	}
	fmt.Fprintln(w, "Flags:")
	fs.VisitAll(func(f *flag.Flag) {
		typ, usage := flag.UnquoteUsage(f)
		fmt.Fprintf(w, "  --%s %s\n", f.Name, typ)
		fmt.Fprintf(w, "        %s", usage)
		if f.DefValue != "" && f.DefValue != "false" && f.DefValue != "0" && f.DefValue != "0s" {
			fmt.Fprintf(w, " (default %q)", f.DefValue)
		}
		fmt.Fprintf(w, " [$%s]\n", config.EnvName(f.Name))
	})
}

// interspersed moves flags that follow positional arguments to the front, so
// `si ask "prompt" --json` works as well as `si ask --json "prompt"`.
func interspersed(fs *flag.FlagSet, args []string) []string {
	var flags, pos []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			pos = append(pos, args[i+1:]...)
			break
		}
		if len(a) < 2 || a[0] != '-' {
			pos = append(pos, a)
			continue
		}
		flags = append(flags, a)
		name := strings.TrimLeft(a, "-")
		if strings.Contains(name, "=") {
			continue
		}
		f := fs.Lookup(name)
		if f == nil {
			continue
		}
		if bf, ok := f.Value.(interface{ IsBoolFlag() bool }); ok && bf.IsBoolFlag() {
			continue
		}
		if i+1 < len(args) {
			flags = append(flags, args[i+1])
			i++
		}
	}
	return append(flags, pos...)
}

func versionCommand() *Command {
	return &Command{
		Name:  "version",
		Short: "print si's version",
		Run: func(_ context.Context, env *Env, _ []string) error {
			fmt.Fprintln(env.Stdout, "si", Version)
			return nil
		},
	}
}

// printJSON writes v as indented JSON, the shape every --json flag prints.
func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
