package cli

import (
	"context"
	"errors"
	"fmt"
)

func completionCommand() *Command {
	return &Command{
		Name:      "completion",
		Args:      "bash|zsh|fish",
		ValidArgs: []string{"bash", "zsh", "fish"},
		Short:     "print the shell completion script for bash, zsh or fish",
		Long: `si completion prints a script that completes si's commands, flags and
arguments in your shell. Load it once to try it, or install it to have it in
every new shell:

bash (needs the bash-completion package):
  source <(si completion bash)                               this shell
  si completion bash > /etc/bash_completion.d/si             every shell (root)
  si completion bash > ~/.local/share/bash-completion/completions/si

zsh:
  source <(si completion zsh)                                this shell
  si completion zsh > "${fpath[1]}/_si"                      every shell
  (needs "autoload -U compinit; compinit" in ~/.zshrc)

fish:
  si completion fish | source                                this shell
  si completion fish > ~/.config/fish/completions/si.fish    every shell`,
		Run: func(_ context.Context, env *Env, args []string) error {
			if len(args) != 1 {
				return &UsageError{Command: "si completion", Err: errors.New("give the shell: bash, zsh or fish")}
			}
			if env.root == nil {
				return errors.New("si completion runs only from the command line")
			}
			switch args[0] {
			case "bash":
				return env.root.GenBashCompletionV2(env.Stdout, true)
			case "zsh":
				return env.root.GenZshCompletion(env.Stdout)
			case "fish":
				return env.root.GenFishCompletion(env.Stdout, true)
			}
			e := &UsageError{Command: "si completion", Err: fmt.Errorf("unknown shell %q: give bash, zsh or fish", args[0])}
			if s := suggestWord(args[0], "bash", "zsh", "fish"); s != "" {
				e.Hint = "did you mean `si completion " + s + "`?"
			}
			return e
		},
	}
}

// suggestWord is the one of words within two edits of typed, if any.
func suggestWord(typed string, words ...string) string {
	best, bestDist := "", 3
	for _, w := range words {
		if d := editDistance(typed, w); d < bestDist {
			best, bestDist = w, d
		}
	}
	return best
}
