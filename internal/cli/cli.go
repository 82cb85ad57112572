// Package cli is the `si` command line: a tree of commands, each with its own
// flags (every flag also read from an SI_ environment variable) and help.
// The tree is declared as Commands; cobra parses the command line, suggests
// what a mistyped command or flag meant and writes shell completion.
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
	"strings"
	"syscall"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

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
	// ValidArgs are the positional arguments shell completion offers.
	ValidArgs []string
}

// operatorCommands hold the mesh's own credentials; every other command is
// a customer's and reaches the mesh through the HTTP API alone.
var operatorCommands = map[string]bool{"dev": true, "server": true, "ca": true, "device": true, "account": true,
	"credit": true, "tier": true, "ceiling": true, "billing": true, "hubs": true, "stats": true, "simulator": true, "price": true, "stripe": true}

// Env is what commands read and write besides their flags.
type Env struct {
	Stdin  io.Reader
	Stdout io.Writer
	Stderr io.Writer

	// root is the parsed command tree, for si completion.
	root *cobra.Command
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

// UsageError is a command line si cannot parse: an unknown command or flag,
// or a flag's bad value. It prints as the error, then what was probably
// meant, then where the help is.
type UsageError struct {
	Command string // the command path, "si ask"
	Err     error
	Hint    string // "did you mean --max-rounds?", or empty
}

func (e *UsageError) Error() string { return e.Err.Error() }
func (e *UsageError) Unwrap() error { return e.Err }

// usageExitCode is what a command line si cannot parse exits with.
const usageExitCode = 2

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
SI_API_URL, --temporal-address reads SI_TEMPORAL_ADDRESS. Flags win.
Commands that print a result take --json (money in micro-dollars there).`,
		Sub: []*Command{loginCommand(), logoutCommand(), whoamiCommand(), tokenCommand(), devCommand(), askCommand(), evalCommand(), pushCommand(), loraCommand(), inviteCommand(), joinCommand(), handoverCommand(), statsCommand(), escalateCommand(), hubCommand(), hubsCommand(), caCommand(), deviceCommand(),
			serverCommand(), accountCommand(), balanceCommand(), usageCommand(), creditCommand(), tierCommand(), ceilingCommand(),
			withSub(billingCommand(), thresholdCommand()), stripeCommand(), priceCommand(), simulatorCommand(), versionCommand(), completionCommand()},
	}
	for _, c := range root.Sub {
		c.Operator = operatorCommands[c.Name]
	}
	return root
}

// Execute runs one command line with env, returning the command's error.
func Execute(ctx context.Context, env *Env, args []string) error {
	if args == nil {
		args = []string{}
	}
	e := *env
	if e.Stdout == nil {
		e.Stdout = io.Discard
	}
	if e.Stderr == nil {
		e.Stderr = io.Discard
	}
	t := &tree{env: &e, src: map[*cobra.Command]*Command{}}
	root := t.build(Root())
	e.root = root
	root.SetArgs(args)
	root.SetIn(e.stdin())
	root.SetOut(e.Stdout)
	root.SetErr(e.Stderr)
	t.rebind(root, args)
	completions(root)
	_, err := root.ExecuteContextC(ctx)
	return err
}

// Main runs the command line and returns the process's exit code.
func Main(args []string, stdout, stderr io.Writer) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	env := &Env{Stdin: os.Stdin, Stdout: stdout, Stderr: stderr}
	err := Execute(ctx, env, args)
	var (
		ee ExitError
		ue *UsageError
	)
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ee):
		return ee.Code
	case errors.Is(err, flag.ErrHelp):
		return 0
	case errors.As(err, &ue):
		fmt.Fprintf(stderr, "%s: %s\n", ue.Command, ue.Err)
		if ue.Hint != "" {
			fmt.Fprintln(stderr, ue.Hint)
		}
		fmt.Fprintf(stderr, "Run '%s --help' for usage.\n", ue.Command)
		return usageExitCode
	}
	fmt.Fprintln(stderr, "si: "+err.Error())
	return 1
}

// tree builds the cobra commands for a Command tree.
type tree struct {
	env *Env
	src map[*cobra.Command]*Command
}

// build makes the cobra command for c and its subcommands; every command's
// flags are registered here, so the parser, the suggestions and completion
// know them all.
func (t *tree) build(c *Command) *cobra.Command {
	cc := &cobra.Command{
		Use:                   strings.TrimSpace(c.Name + " " + c.Args),
		Short:                 c.Short,
		Long:                  c.Long,
		Args:                  cobra.ArbitraryArgs,
		ValidArgs:             c.ValidArgs,
		SilenceErrors:         true,
		SilenceUsage:          true,
		DisableFlagsInUseLine: true,
		// SuggestionsFor offers commands within this many edits.
		SuggestionsMinimumDistance: 2,
		Annotations:                map[string]string{},
	}
	t.src[cc] = c
	if c.Operator {
		cc.Annotations["operator"] = "true"
	}
	if c.Run == nil {
		cc.Annotations["group"] = "true"
	}
	addFlags(cc, c)
	cc.SetFlagErrorFunc(flagError)
	cc.RunE = func(cmd *cobra.Command, args []string) error {
		if c.Run == nil {
			return group(cmd, args)
		}
		if err := config.ApplyEnvFlags(cmd.Flags()); err != nil {
			return err
		}
		err := c.Run(cmd.Context(), t.env, args)
		if err != nil && len(args) > 0 && cmd.HasAvailableSubCommands() {
			// si hub vital: an argument the command refused that names
			// one of its subcommands but for a typo.
			if s := cmd.SuggestionsFor(args[0]); len(s) > 0 {
				return &UsageError{Command: cmd.CommandPath(), Err: err, Hint: fmt.Sprintf("did you mean `%s %s`?", cmd.CommandPath(), s[0])}
			}
		}
		return err
	}
	for _, s := range c.Sub {
		cc.AddCommand(t.build(s))
	}
	if c.Name == "si" {
		cc.CompletionOptions.DisableDefaultCmd = true
		cc.SetHelpFunc(func(cmd *cobra.Command, _ []string) { usage(cmd.OutOrStdout(), cmd) })
		cc.SetHelpCommand(helpCommand())
	}
	return cc
}

// flagValues are the values shell completion offers for a flag, by
// command path and flag name.
var flagValues = map[string]map[string][]string{
	"si ask":    {"placement": {"auto", "hub", "cloud"}},
	"si eval":   {"dataset": {"arithmetic", "gsm-mini"}, "placement": {"auto", "hub", "cloud"}, "strategies": {"debate,vote,single", "debate", "vote", "single"}},
	"si invite": {"role": {"viewer", "editor"}},
	"si server": {"roles": {"api", "bridge", "worker", "api,bridge,worker"}},
}

// argValues are the positional arguments completion offers, by command path.
var argValues = map[string][]string{"si tier set": {"managed", "byok"}, "si tier price": {"managed", "byok"}}

func addFlags(cc *cobra.Command, c *Command) {
	if c.Flags == nil {
		return
	}
	fs := flag.NewFlagSet(c.Name, flag.ContinueOnError)
	c.Flags(fs)
	cc.Flags().AddGoFlagSet(fs)
}

// completions registers the values completion offers once the tree (and
// the running command's flags) are final.
func completions(cc *cobra.Command) {
	for name, values := range flagValues[cc.CommandPath()] {
		if cc.Flags().Lookup(name) != nil {
			_ = cc.RegisterFlagCompletionFunc(name, cobra.FixedCompletions(values, cobra.ShellCompDirectiveNoFileComp))
		}
	}
	if values, ok := argValues[cc.CommandPath()]; ok {
		cc.ValidArgs = values
	}
	for _, s := range cc.Commands() {
		completions(s)
	}
}

// rebind registers the flags of the command that is about to run once more:
// building the tree registered every command's flags, and commands that
// share a variable must see their own default, not the last one registered.
func (t *tree) rebind(root *cobra.Command, args []string) {
	cmd, _, err := root.Find(args)
	if err != nil || cmd == nil || t.src[cmd] == nil || t.src[cmd].Flags == nil {
		return
	}
	cmd.ResetFlags()
	addFlags(cmd, t.src[cmd])
}

// group runs a command that only holds subcommands: its help without
// arguments, else the error for an unknown subcommand.
func group(cmd *cobra.Command, args []string) error {
	switch {
	case len(args) == 0:
		usage(cmd.OutOrStdout(), cmd)
		return ExitError{Code: usageExitCode}
	case args[0] == "help":
		return showHelp(cmd, args[1:])
	}
	return unknownCommand(cmd, args[0])
}

func unknownCommand(cmd *cobra.Command, name string) error {
	e := &UsageError{Command: cmd.CommandPath(), Err: fmt.Errorf("unknown command %q for %q", name, cmd.CommandPath())}
	if s := cmd.SuggestionsFor(name); len(s) > 0 {
		e.Hint = fmt.Sprintf("did you mean `%s %s`?", cmd.CommandPath(), s[0])
	}
	return e
}

// helpCommand is `si help [command...]`.
func helpCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "help [command]",
		Short: "help about any command",
		Args:  cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return showHelp(cmd.Root(), args)
		},
		ValidArgsFunction: func(cmd *cobra.Command, args []string, _ string) ([]cobra.Completion, cobra.ShellCompDirective) {
			c, _, _ := cmd.Root().Find(args)
			var names []cobra.Completion
			for _, s := range c.Commands() {
				if s.IsAvailableCommand() {
					names = append(names, cobra.CompletionWithDesc(s.Name(), s.Short))
				}
			}
			return names, cobra.ShellCompDirectiveNoFileComp
		},
	}
}

// showHelp prints the help of the command that path names under from.
func showHelp(from *cobra.Command, path []string) error {
	c := from
	for _, name := range path {
		next := findSub(c, name)
		if next == nil {
			return unknownCommand(c, name)
		}
		c = next
	}
	usage(c.OutOrStdout(), c)
	return nil
}

func findSub(c *cobra.Command, name string) *cobra.Command {
	for _, s := range c.Commands() {
		if s.Name() == name || s.HasAlias(name) {
			return s
		}
	}
	return nil
}

// flagError turns the flag parser's error into a UsageError that names the
// flag and what it takes, with the flag probably meant.
func flagError(cmd *cobra.Command, err error) error {
	e := &UsageError{Command: cmd.CommandPath(), Err: err}
	var (
		notExist *pflag.NotExistError
		invalid  *pflag.InvalidValueError
	)
	switch {
	case errors.As(err, &notExist):
		typed := notExist.GetSpecifiedName()
		if group := notExist.GetSpecifiedShortnames(); group != "" {
			// -json: one dash for a long flag, as Go's flag package allows.
			// What follows '=' stays out of the message: it may be a token.
			typed, _, _ = strings.Cut(group, "=")
			e.Err = fmt.Errorf("unknown flag -%s", typed)
		} else {
			e.Err = fmt.Errorf("unknown flag --%s", typed)
		}
		if s := suggestFlag(cmd.Flags(), typed); s != "" {
			e.Hint = "did you mean --" + s + "?"
		}
	case errors.As(err, &invalid):
		f := invalid.GetFlag()
		cause := errors.Unwrap(invalid)
		if cause != nil && strings.HasPrefix(cause.Error(), "--"+f.Name) {
			e.Err = cause // the flag's own check says what it takes
		} else {
			e.Err = fmt.Errorf("invalid value %q for --%s: %s", invalid.GetValue(), f.Name, takes(f, cause))
		}
	}
	return e
}

// takes says what a flag of f's type accepts.
func takes(f *pflag.Flag, cause error) string {
	switch f.Value.Type() {
	case "int", "int64", "int32":
		return "give a whole number"
	case "uint", "uint64", "uint32":
		return "give a whole number, 0 or more"
	case "float64", "float32":
		return "give a number, e.g. 0.8"
	case "duration":
		return "give a duration such as 30s, 5m or 2h"
	case "bool":
		return "give true or false"
	}
	if cause != nil {
		return cause.Error()
	}
	return "see --help"
}

// suggestFlag is the flag of fs closest to typed: a prefix of it, or within
// two edits.
func suggestFlag(fs *pflag.FlagSet, typed string) string {
	best, bestDist := "", 3
	fs.VisitAll(func(f *pflag.Flag) {
		if f.Hidden || f.Name == "help" {
			return
		}
		d := editDistance(strings.ToLower(typed), f.Name)
		if strings.HasPrefix(f.Name, typed) && len(typed) >= 3 {
			d = min(d, 1)
		}
		if d < bestDist {
			best, bestDist = f.Name, d
		}
	})
	return best
}

// editDistance is the Levenshtein distance between a and b.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// usage prints cmd's help: its usage line, description, subcommands
// (customer commands apart from the operator's) and flags with their
// environment variables.
func usage(w io.Writer, cmd *cobra.Command) {
	name := cmd.CommandPath()
	args := strings.TrimSpace(strings.TrimPrefix(cmd.Use, cmd.Name()))
	var subs []*cobra.Command
	for _, s := range cmd.Commands() {
		if s.IsAvailableCommand() && s.Name() != "help" {
			subs = append(subs, s)
		}
	}
	runnable := cmd.Annotations["group"] != "true"
	switch {
	case len(subs) > 0 && runnable:
		fmt.Fprintf(w, "Usage: %s [flags] %s\n   or: %s <command> [flags]\n\n", name, args, name)
	case len(subs) > 0:
		fmt.Fprintf(w, "Usage: %s <command> [flags]\n\n", name)
	default:
		fmt.Fprintf(w, "%s\n\n", strings.TrimSpace(fmt.Sprintf("Usage: %s [flags] %s", name, args)))
	}
	if cmd.Long != "" {
		fmt.Fprintf(w, "%s\n\n", strings.TrimSpace(cmd.Long))
	} else if cmd.Short != "" {
		fmt.Fprintf(w, "%s\n\n", cmd.Short)
	}
	if len(subs) > 0 {
		for _, op := range []bool{false, true} {
			title := "Commands:"
			if op {
				title = "\nOperator commands (they hold the mesh's Temporal, PostgreSQL, S3 and Stripe credentials):"
			}
			printed := false
			for _, s := range subs {
				if (s.Annotations["operator"] == "true") != op {
					continue
				}
				if !printed {
					fmt.Fprintln(w, title)
					printed = true
				}
				fmt.Fprintf(w, "  %-12s %s\n", s.Name(), s.Short)
			}
		}
		fmt.Fprintf(w, "\nRun '%s help <command>' for a command's flags.\n", name)
		if !runnable {
			return
		}
		fmt.Fprintln(w)
	}
	var flags []*pflag.Flag
	cmd.Flags().VisitAll(func(f *pflag.Flag) {
		if !f.Hidden && f.Name != "help" {
			flags = append(flags, f)
		}
	})
	if len(flags) == 0 {
		return
	}
	fmt.Fprintln(w, "Flags:")
	for _, f := range flags {
		typ, text := pflag.UnquoteUsage(f)
		if typ == "func" {
			typ = "value"
		}
		fmt.Fprintf(w, "  --%s %s\n", f.Name, typ)
		fmt.Fprintf(w, "        %s", text)
		if f.DefValue != "" && f.DefValue != "false" && f.DefValue != "0" && f.DefValue != "0s" {
			fmt.Fprintf(w, " (default %q)", f.DefValue)
		}
		fmt.Fprintf(w, " [$%s]\n", config.EnvName(f.Name))
	}
}

func versionCommand() *Command {
	var asJSON bool
	return &Command{
		Name:  "version",
		Short: "print si's version",
		Flags: func(fs *flag.FlagSet) {
			fs.BoolVar(&asJSON, "json", false, "print JSON")
		},
		Run: func(_ context.Context, env *Env, _ []string) error {
			if asJSON {
				return printJSON(env.Stdout, map[string]string{"version": Version})
			}
			fmt.Fprintln(env.Stdout, "si", Version)
			return nil
		},
	}
}

// printJSON writes v as indented JSON, the shape every --json flag prints.
// printProtoJSON prints m as printJSON does, under its proto field names.
// protojson's own spacing varies on purpose; this output does not.
func printProtoJSON(w io.Writer, m proto.Message, emitUnpopulated bool) error {
	b, err := protojson.MarshalOptions{UseProtoNames: true, EmitUnpopulated: emitUnpopulated}.Marshal(m)
	if err != nil {
		return err
	}
	return printJSON(w, json.RawMessage(b))
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func (c *Command) find(name string) *Command {
	for _, s := range c.Sub {
		if s.Name == name {
			return s
		}
	}
	return nil
}
