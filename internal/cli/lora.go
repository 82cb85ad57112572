package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/superinstance/mesh/internal/client"
	"github.com/superinstance/mesh/internal/config"
	"github.com/superinstance/mesh/internal/llm"
	"github.com/superinstance/mesh/internal/lora"
	"github.com/superinstance/mesh/internal/simulator"
)

func loraRoot() string { return filepath.Join(config.HomeDir(), "loras") }

func pushCommand() *Command {
	var (
		api      apiFlags
		expert   bool
		project  string
		name     string
		llmURL   string
		parallel int
		partMiB  int64
		asJSON   bool
	)
	return &Command{
		Name:  "push",
		Args:  "--expert [PATH|NAME]",
		Short: "validate a LoRA adapter, upload it and register it for cloud inference",
		Long: `si push --expert finds an adapter (adapter_config.json and
adapter_model.safetensors) at PATH or under ~/.si/loras/NAME, validates it
before any byte is sent (the safetensors header and the adapter config, and
the mesh checks that its backend serves the base model), then uploads it
with a progress bar straight to the mesh's object store, through URLs the
API presigns for a key of your account's (multipart, parts in parallel; an interrupted push continues
where it stopped). The API then runs LoRAPushWorkflow, which verifies the
stored object's size and SHA-256 and that the backend serves the base model,
registers it, loads it into the inference backend and marks it available. It
prints the adapter's id; use it with si ask --lora ID.

Pushing the same bytes again registers nothing new: it prints the existing id.
It needs si login (or SI_TOKEN) first; the account comes from the token.

  si push --expert support-bot
  si push --expert ./out/checkpoint-500 --project acme`,
		Flags: func(fs *flag.FlagSet) {
			api.register(fs)
			fs.BoolVar(&expert, "expert", false, "push a LoRA expert adapter (the kind of artifact push sends)")
			fs.StringVar(&project, "project", "", "project whose collaborators may use the adapter too (created if new)")
			fs.StringVar(&name, "name", "", "label for the adapter (default: the directory's name)")
			fs.StringVar(&llmURL, "llm-base-url", "", "inference backend to check the base model against before uploading (default: the mesh checks it after)")
			fs.IntVar(&parallel, "parallel", 4, "parts uploaded at once")
			fs.Int64Var(&partMiB, "part-size", 16, "multipart part size in MiB (5 to 5120)")
			fs.BoolVar(&asJSON, "json", false, "print the result as JSON")
		},
		Run: func(ctx context.Context, env *Env, args []string) error {
			if !expert {
				return errors.New("say what to push: si push --expert [PATH|NAME]")
			}
			if len(args) > 1 {
				return fmt.Errorf("unexpected argument %q", args[1])
			}
			if partMiB < 5 || partMiB > 5120 {
				return fmt.Errorf("--part-size %d is outside 5..5120 MiB", partMiB)
			}
			arg := ""
			if len(args) == 1 {
				arg = args[0]
			} else if _, err := os.Stat(lora.ConfigFile); err == nil {
				arg = "."
			} else {
				return fmt.Errorf("name an adapter: a directory, or one of %s", strings.Join(localAdapters(), ", "))
			}
			out := env.Stderr
			if asJSON {
				out = io.Discard
			}
			dir, err := lora.Find(arg, loraRoot())
			if err != nil {
				return err
			}
			a, err := lora.Open(dir)
			if err != nil {
				return fmt.Errorf("%s does not validate: %w", dir, err)
			}
			if name != "" {
				a.Name = name
			}
			c, err := api.client()
			if err != nil {
				return err
			}
			fmt.Fprintf(out, "✓ found      %s (%s)\n", a.Name, dir)
			fmt.Fprintf(out, "✓ size       %s, %d tensors, %d parameters; header valid\n", humanBytes(a.Size), len(a.Header.Tensors), a.Header.Params())
			if llmURL == "" {
				fmt.Fprintf(out, "- base model %s (rank %d): the mesh checks it is served before the upload\n", a.Config.BaseModel, a.Config.Rank)
			} else {
				served, err := servedModels(ctx, llmURL)
				if err != nil {
					return err
				}
				if err := a.CheckBase(served); err != nil {
					return err
				}
				fmt.Fprintf(out, "✓ base model %s (rank %d, alpha %g, %s), served by %s\n",
					a.Config.BaseModel, a.Config.Rank, a.Config.Alpha, strings.Join(a.Config.TargetModules, ", "), llmURL)
			}
			f, err := os.Open(a.WeightsPath)
			if err != nil {
				return err
			}
			defer f.Close()
			sum, err := client.SHA256(f)
			if err != nil {
				return err
			}
			bar := newTransferBar(out, "  uploading ", a.Size)
			start := time.Now()
			up, err := c.UploadAdapter(ctx, f, a.Size, sum, client.UploadOptions{PartSize: partMiB << 20, Parallel: parallel,
				BaseModel: a.Config.BaseModel, Progress: func(done, _ int64) { bar.Set(done) }})
			if err != nil {
				return err
			}
			switch {
			case up.AlreadyStored:
				fmt.Fprintf(out, "✓ uploaded   already stored (same SHA-256 %s…)\n", sum[:12])
			case up.Resumed > 0:
				fmt.Fprintf(out, "✓ uploaded   %s in %d parts, %.1fs; resumed, %s were already there\n", humanBytes(a.Size), len(up.Parts),
					time.Since(start).Seconds(), humanBytes(up.Resumed))
			default:
				fmt.Fprintf(out, "✓ uploaded   %s in %d parts, %.1fs\n", humanBytes(a.Size), len(up.Parts), time.Since(start).Seconds())
			}
			fmt.Fprintln(out, "… registering (verify size and SHA-256, register, load into the backend)")
			start = time.Now()
			res, err := c.PushAdapter(ctx, client.PushRequest{SHA256: sum, Size: a.Size, Name: a.Name, Project: project,
				Config: a.ConfigJSON, UploadID: up.UploadID, Parts: up.Parts})
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(env.Stdout, map[string]any{"id": res.ID, "existing": res.Existing, "state": res.State,
					"sha256": sum, "size_bytes": a.Size, "base_model": a.Config.BaseModel, "workflow_id": res.WorkflowID})
			}
			if res.Existing {
				fmt.Fprintf(env.Stdout, "%s is already registered (same bytes): %s\n", a.Name, res.ID)
			} else {
				fmt.Fprintf(env.Stdout, "✓ %s registered as %s and available (%.0f ms)\n", a.Name, res.ID, float64(time.Since(start).Microseconds())/1000)
			}
			fmt.Fprintf(env.Stdout, "use it:  si ask --lora %s \"...\"\n", res.ID)
			return nil
		},
	}
}

func servedModels(ctx context.Context, url string) ([]string, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	return (&llm.Client{BaseURL: url}).BaseModels(ctx)
}

func localAdapters() []string {
	entries, _ := os.ReadDir(loraRoot())
	var names []string
	for _, e := range entries {
		if e.IsDir() {
			names = append(names, e.Name())
		}
	}
	if len(names) == 0 {
		return []string{"(none under " + loraRoot() + ")"}
	}
	return names
}

func loraCommand() *Command {
	var (
		api    apiFlags
		asJSON bool
	)
	common := func(fs *flag.FlagSet) {
		api.register(fs)
		fs.BoolVar(&asJSON, "json", false, "print JSON")
	}
	var scaffold lora.ScaffoldOptions
	var sizeMiB float64
	return &Command{
		Name:  "lora",
		Short: "list, show, remove and scaffold LoRA adapters",
		Sub: []*Command{{
			Name:  "ls",
			Short: "list the adapters your account may use (its own and its projects')",
			Flags: common,
			Run: func(ctx context.Context, env *Env, args []string) error {
				if len(args) > 0 {
					return fmt.Errorf("unexpected argument %q", args[0])
				}
				c, err := api.client()
				if err != nil {
					return err
				}
				ls, err := c.Adapters(ctx)
				if err != nil {
					return err
				}
				if asJSON {
					if ls == nil {
						ls = []client.Adapter{}
					}
					return printJSON(env.Stdout, ls)
				}
				tw := tabwriter.NewWriter(env.Stdout, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "ID\tNAME\tOWNER\tPROJECT\tBASE MODEL\tRANK\tSIZE\tSTATE\tCREATED")
				for _, l := range ls {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\t%s\n", l.ID, l.Name, l.Owner, dash(l.Project), l.BaseModel, l.Rank,
						humanBytes(l.Size), l.State, l.CreatedAt.Local().Format(time.DateTime))
				}
				return tw.Flush()
			},
		}, {
			Name:  "show",
			Args:  "ID",
			Short: "show one adapter",
			Flags: common,
			Run: func(ctx context.Context, env *Env, args []string) error {
				if len(args) != 1 {
					return errors.New("usage: si lora show ID")
				}
				c, err := api.client()
				if err != nil {
					return err
				}
				l, err := c.Adapter(ctx, args[0])
				if client.NotFound(err) {
					return fmt.Errorf("adapter %s not found (si lora ls lists yours)", args[0])
				}
				if err != nil {
					return err
				}
				if asJSON {
					return printJSON(env.Stdout, l)
				}
				tw := tabwriter.NewWriter(env.Stdout, 0, 4, 2, ' ', 0)
				rows := [][2]string{{"id", l.ID}, {"name", l.Name}, {"owner", l.Owner}, {"project", dash(l.Project)},
					{"base model", l.BaseModel}, {"rank", fmt.Sprint(l.Rank)}, {"alpha", fmt.Sprint(l.Alpha)},
					{"target modules", strings.Join(l.TargetModules, ", ")}, {"size", fmt.Sprintf("%s (%d bytes)", humanBytes(l.Size), l.Size)},
					{"sha256", l.SHA256}, {"state", l.State}, {"created", l.CreatedAt.Local().Format(time.RFC3339)}}
				if l.LastUsedAt != nil {
					rows = append(rows, [2]string{"last used", l.LastUsedAt.Local().Format(time.RFC3339)})
				}
				for _, r := range rows {
					fmt.Fprintf(tw, "%s\t%s\n", r[0], r[1])
				}
				return tw.Flush()
			},
		}, {
			Name:  "rm",
			Args:  "ID",
			Short: "unload an adapter, unregister it and delete its object (its owner, or an owner or editor of its project)",
			Flags: common,
			Run: func(ctx context.Context, env *Env, args []string) error {
				if len(args) != 1 {
					return errors.New("usage: si lora rm ID")
				}
				c, err := api.client()
				if err != nil {
					return err
				}
				err = c.RemoveAdapter(ctx, args[0])
				if client.NotFound(err) {
					return fmt.Errorf("adapter %s not found (si lora ls lists yours)", args[0])
				}
				if err != nil {
					return err
				}
				if asJSON {
					return printJSON(env.Stdout, loraRemoved{ID: args[0], Removed: true})
				}
				fmt.Fprintf(env.Stdout, "removed %s (unloaded, unregistered, object deleted)\n", args[0])
				return nil
			},
		}, {
			Name:  "new",
			Args:  "NAME",
			Short: "write a structurally valid adapter with zero weights under ~/.si/loras/NAME",
			Long: `si lora new writes adapter_config.json and adapter_model.safetensors under
~/.si/loras/NAME: q_proj and v_proj LoRA matrices with zero weights, as many
layers as --size needs. It is for trying push and hot-swap end to end, not a
trained adapter.`,
			Flags: func(fs *flag.FlagSet) {
				fs.StringVar(&scaffold.BaseModel, "base", simulator.ModelSmall, "base model")
				fs.IntVar(&scaffold.Rank, "rank", 8, "LoRA rank")
				fs.IntVar(&scaffold.Hidden, "hidden", 1024, "hidden size of the base model")
				fs.Float64Var(&sizeMiB, "size", 1, "approximate size of the weights in MiB")
				fs.BoolVar(&asJSON, "json", false, "print what was written as JSON")
			},
			Run: func(ctx context.Context, env *Env, args []string) error {
				if len(args) != 1 || strings.ContainsAny(args[0], `/\`) || args[0] == "." || args[0] == ".." {
					return errors.New("usage: si lora new NAME (a plain name, no path)")
				}
				dir := filepath.Join(loraRoot(), args[0])
				scaffold.Bytes = int64(sizeMiB * (1 << 20))
				if err := lora.Scaffold(dir, scaffold); err != nil {
					return err
				}
				if asJSON {
					return printJSON(env.Stdout, loraWritten{Name: args[0], Dir: dir, BaseModel: scaffold.BaseModel, Rank: scaffold.Rank})
				}
				fmt.Fprintf(env.Stdout, "wrote %s (base %s, rank %d); push it with: si push --expert %s\n", dir, scaffold.BaseModel, scaffold.Rank, args[0])
				return nil
			},
		}},
	}
}

// loraRemoved is what si lora rm --json prints.
type loraRemoved struct {
	ID      string `json:"id"`
	Removed bool   `json:"removed"`
}

// loraWritten is what si lora new --json prints.
type loraWritten struct {
	Name      string `json:"name"`
	Dir       string `json:"dir"`
	BaseModel string `json:"base_model"`
	Rank      int    `json:"rank"`
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
