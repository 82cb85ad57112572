// Package hubcmd runs cloud-to-local commands on a hub, and only those its
// owner admits: an allow-list file in the hub's directory names each
// command (an absolute path, the argument forms it takes, a timeout and an
// output bound). Nothing runs without the file; a command runs with exec,
// never a shell, in a process group of its own that is killed at its
// timeout; every request, run or refused, is appended to the hub's audit
// log. The cloud asks through the activity Hub.RunCommand on the hub's own
// task queue (activity.go).
package hubcmd

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// AllowListFile is the allow-list's name in the hub's directory
// (~/.si/devices/<id>/commands.json).
const AllowListFile = "commands.json"

// Bounds on the allow-list and on a request. A request past them is
// refused before the allow-list is read.
const (
	MaxAllowListBytes = 64 << 10
	MaxCommands       = 128
	MaxForms          = 32 // argument forms of one command
	MaxArgs           = 32 // arguments of one request (and of one form)
	MaxArgBytes       = 256
	MaxEnv            = 32
	// MaxOutputBytes bounds one command's kept output, stdout and stderr
	// together: it travels back in an activity result.
	MaxOutputBytes = 1 << 20
	// MaxTimeout bounds one command's run.
	MaxTimeout = time.Hour
	// DefaultTimeout and DefaultOutputBytes apply to an entry that names none.
	DefaultTimeout     = 30 * time.Second
	DefaultOutputBytes = 64 << 10
)

var (
	nameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,62}$`)
	envRE  = regexp.MustCompile(`^[A-Z_][A-Z0-9_]{0,63}$`)
	// A placeholder in an argument pattern; anything else between < and > is refused.
	placeholderRE = regexp.MustCompile(`<[^<>]*>`)
	wordRE        = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)
	intRE         = regexp.MustCompile(`^-?[0-9]{1,18}$`)
	uintRE        = regexp.MustCompile(`^[0-9]{1,18}$`)
)

// placeholders are the argument patterns besides exact strings. A
// placeholder matches a whole argument or the part of one between a
// literal prefix and suffix ("--lines=<uint>").
var placeholders = map[string]*regexp.Regexp{
	"<int>":  intRE,
	"<uint>": uintRE,
	// <word>: letters, digits, '.', '_' and '-', not starting with '-' (so
	// it is never taken for a flag) and not "." or "..".
	"<word>": wordRE,
}

// Entry is one command the hub's owner admits.
type Entry struct {
	// Name is what the cloud asks for (si hub exec -- NAME ...).
	Name string `json:"name"`
	// Path is the executable, absolute and clean; it runs with exec, never
	// through a shell.
	Path string `json:"path"`
	// Args lists the argument forms the command takes. A request's
	// arguments must match one form, one pattern per argument. A pattern
	// is an exact string, or holds one placeholder: <int>, <uint> or
	// <word>, alone or between a literal prefix and suffix. No forms: the
	// command takes no argument.
	Args [][]string `json:"args,omitempty"`
	// argv is what checkExecutable checked: the file the run executes and
	// the arguments before the request's (none but Path, resolved, for a
	// program; for a script its interpreter's, then the script's path).
	argv []string
	// Timeout is the longest run, a Go duration ("30s"). Default 30s, at most 1h.
	Timeout string `json:"timeout,omitempty"`
	// MaxOutputBytes bounds the output kept, stdout and stderr together;
	// past it the rest is counted, not kept, and a marker says so.
	// Default 64 KiB, at most 1 MiB.
	MaxOutputBytes int `json:"max_output_bytes,omitempty"`
	// Env is the command's whole environment; default none at all.
	Env map[string]string `json:"env,omitempty"`
	// Dir is the working directory, absolute; default "/".
	Dir string `json:"dir,omitempty"`

	timeout time.Duration
}

// EffectiveTimeout is the entry's timeout with its default applied.
func (e Entry) EffectiveTimeout() time.Duration {
	if e.timeout > 0 {
		return e.timeout
	}
	return DefaultTimeout
}

// AllowList is the parsed allow-list file. The zero value admits nothing.
type AllowList struct {
	Commands []Entry `json:"commands"`
}

// ErrNoAllowList is wrapped by Load when the file does not exist: nothing runs.
var ErrNoAllowList = errors.New("no allow-list")

// Load reads and parses the allow-list at path. A missing file is
// ErrNoAllowList; a file that others than its owner may write is refused,
// as is any file Parse refuses.
func Load(path string) (*AllowList, error) {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w at %s: nothing runs until the hub's owner writes one (si hub commands --help shows its format)", ErrNoAllowList, path)
	}
	if err != nil {
		return nil, fmt.Errorf("allow-list %s: %w", path, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("allow-list %s: %w", path, err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("allow-list %s is not a regular file", path)
	}
	if fi.Mode().Perm()&0o022 != 0 {
		return nil, fmt.Errorf("allow-list %s is writable by others than its owner (mode %v): chmod go-w %s", path, fi.Mode().Perm(), path)
	}
	b, err := io.ReadAll(io.LimitReader(f, MaxAllowListBytes+1))
	if err != nil {
		return nil, fmt.Errorf("allow-list %s: %w", path, err)
	}
	l, err := Parse(b)
	if err != nil {
		return nil, fmt.Errorf("allow-list %s: %w", path, err)
	}
	return l, nil
}

// Parse decodes an allow-list strictly: bounded size, no unknown field, no
// trailing data, every entry valid, no name twice.
func Parse(b []byte) (*AllowList, error) {
	if len(b) > MaxAllowListBytes {
		return nil, fmt.Errorf("larger than %d bytes", MaxAllowListBytes)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var l AllowList
	if err := dec.Decode(&l); err != nil {
		return nil, fmt.Errorf("not a valid allow-list: %w (want {\"commands\": [{\"name\": ..., \"path\": ...}]})", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, errors.New("data after the allow-list's closing brace")
	}
	if len(l.Commands) > MaxCommands {
		return nil, fmt.Errorf("%d commands: at most %d", len(l.Commands), MaxCommands)
	}
	seen := map[string]bool{}
	for i := range l.Commands {
		e := &l.Commands[i]
		if err := e.validate(); err != nil {
			return nil, fmt.Errorf("command %d (%q): %w", i+1, trunc(e.Name, 64), err)
		}
		if seen[e.Name] {
			return nil, fmt.Errorf("command %q is listed twice", e.Name)
		}
		seen[e.Name] = true
	}
	return &l, nil
}

func (e *Entry) validate() error {
	if !nameRE.MatchString(e.Name) {
		return errors.New("name: want lower-case letters, digits, '.', '_' or '-', at most 63")
	}
	if err := absClean(e.Path); err != nil {
		return fmt.Errorf("path: %w", err)
	}
	if e.Dir != "" {
		if err := absClean(e.Dir); err != nil {
			return fmt.Errorf("dir: %w", err)
		}
	}
	if len(e.Args) > MaxForms {
		return fmt.Errorf("args: %d forms, at most %d", len(e.Args), MaxForms)
	}
	for i, form := range e.Args {
		if len(form) > MaxArgs {
			return fmt.Errorf("args form %d: %d patterns, at most %d", i+1, len(form), MaxArgs)
		}
		for _, p := range form {
			if err := validPattern(p); err != nil {
				return fmt.Errorf("args form %d: pattern %q: %w", i+1, trunc(p, 64), err)
			}
		}
	}
	e.timeout = DefaultTimeout
	if e.Timeout != "" {
		d, err := time.ParseDuration(e.Timeout)
		if err != nil || d <= 0 || d > MaxTimeout {
			return fmt.Errorf("timeout %q: want a duration such as 30s, at most %s", trunc(e.Timeout, 32), MaxTimeout)
		}
		e.timeout = d
	}
	if e.MaxOutputBytes < 0 || e.MaxOutputBytes > MaxOutputBytes {
		return fmt.Errorf("max_output_bytes %d: want 1 to %d (0 for the default %d)", e.MaxOutputBytes, MaxOutputBytes, DefaultOutputBytes)
	}
	if e.MaxOutputBytes == 0 {
		e.MaxOutputBytes = DefaultOutputBytes
	}
	if len(e.Env) > MaxEnv {
		return fmt.Errorf("env: %d variables, at most %d", len(e.Env), MaxEnv)
	}
	for k, v := range e.Env {
		if !envRE.MatchString(k) {
			return fmt.Errorf("env: name %q: want upper-case letters, digits and '_'", trunc(k, 64))
		}
		if len(v) > 4096 || strings.ContainsRune(v, 0) {
			return fmt.Errorf("env %s: a value of at most 4096 bytes without NUL", k)
		}
	}
	return nil
}

func absClean(p string) error {
	switch {
	case p == "":
		return errors.New("required")
	case len(p) > 1024:
		return errors.New("longer than 1024 bytes")
	case !filepath.IsAbs(p):
		return fmt.Errorf("%q is not absolute", trunc(p, 64))
	case filepath.Clean(p) != p:
		return fmt.Errorf("%q is not clean (want %q)", trunc(p, 64), trunc(filepath.Clean(p), 64))
	case strings.ContainsRune(p, 0):
		return errors.New("holds a NUL byte")
	}
	return nil
}

func validPattern(p string) error {
	if p == "" || len(p) > MaxArgBytes {
		return fmt.Errorf("want 1 to %d bytes", MaxArgBytes)
	}
	if strings.ContainsRune(p, 0) {
		return errors.New("holds a NUL byte")
	}
	locs := placeholderRE.FindAllStringIndex(p, -1)
	if len(locs) > 1 {
		return errors.New("at most one placeholder per argument")
	}
	if len(locs) == 1 {
		if _, ok := placeholders[p[locs[0][0]:locs[0][1]]]; !ok {
			return fmt.Errorf("unknown placeholder %s: want <int>, <uint> or <word>", p[locs[0][0]:locs[0][1]])
		}
		p = p[:locs[0][0]] + p[locs[0][1]:]
	}
	if strings.ContainsAny(p, "<>") {
		return errors.New("'<' and '>' only around a placeholder")
	}
	return nil
}

// matchArg reports whether arg matches pattern p (validated).
func matchArg(p, arg string) bool {
	loc := placeholderRE.FindStringIndex(p)
	if loc == nil {
		return p == arg
	}
	prefix, ph, suffix := p[:loc[0]], p[loc[0]:loc[1]], p[loc[1]:]
	if len(arg) < len(prefix)+len(suffix) || !strings.HasPrefix(arg, prefix) || !strings.HasSuffix(arg, suffix) {
		return false
	}
	mid := arg[len(prefix) : len(arg)-len(suffix)]
	if ph == "<word>" && (mid == "." || mid == "..") {
		return false
	}
	if (ph == "<int>" || ph == "<uint>") && mid != "" {
		if _, err := strconv.ParseInt(mid, 10, 64); err != nil {
			return false
		}
	}
	return placeholders[ph].MatchString(mid)
}

// Find returns the entry for name, or false.
func (l *AllowList) Find(name string) (Entry, bool) {
	if l == nil {
		return Entry{}, false
	}
	for _, e := range l.Commands {
		if e.Name == name {
			return e, true
		}
	}
	return Entry{}, false
}

// Admit returns the entry that lets name run with args, or why not.
func (l *AllowList) Admit(name string, args []string) (Entry, error) {
	e, ok := l.Find(name)
	if !ok {
		return Entry{}, fmt.Errorf("command %q is not in the hub's allow-list", trunc(name, 64))
	}
	if len(e.Args) == 0 {
		if len(args) == 0 {
			return e, nil
		}
		return Entry{}, fmt.Errorf("command %q takes no arguments in the hub's allow-list", name)
	}
forms:
	for _, form := range e.Args {
		if len(form) != len(args) {
			continue
		}
		for i, p := range form {
			if !matchArg(p, args[i]) {
				continue forms
			}
		}
		return e, nil
	}
	return Entry{}, fmt.Errorf("arguments %q of command %q match none of its forms in the hub's allow-list", truncArgs(args), name)
}

// ValidRequest checks a request's shape before anything else looks at it.
func ValidRequest(name string, args []string) error {
	if !nameRE.MatchString(name) {
		return fmt.Errorf("command name %q: want lower-case letters, digits, '.', '_' or '-', at most 63", trunc(name, 64))
	}
	if len(args) > MaxArgs {
		return fmt.Errorf("%d arguments: at most %d", len(args), MaxArgs)
	}
	for i, a := range args {
		if len(a) > MaxArgBytes || strings.ContainsRune(a, 0) {
			return fmt.Errorf("argument %d: at most %d bytes, no NUL", i+1, MaxArgBytes)
		}
	}
	return nil
}

func trunc(s string, n int) string {
	if len(s) > n {
		s = s[:n] + "..."
	}
	return strings.ToValidUTF8(s, "?")
}

func truncArgs(args []string) []string {
	out := make([]string, 0, min(len(args), MaxArgs))
	for i, a := range args {
		if i == MaxArgs {
			break
		}
		out = append(out, trunc(a, MaxArgBytes))
	}
	return out
}
