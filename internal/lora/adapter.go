// Package lora finds, validates and describes LoRA adapters: the files PEFT
// writes (adapter_config.json and adapter_model.safetensors), the ids the
// registry gives them, and where their objects live in the store.
package lora

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/superinstance/mesh/internal/safetensors"
	"github.com/superinstance/mesh/internal/token"
)

// File names of an adapter directory, as PEFT writes them.
const (
	ConfigFile  = "adapter_config.json"
	WeightsFile = "adapter_model.safetensors"
)

// MaxConfigBytes bounds adapter_config.json.
const MaxConfigBytes = 1 << 20

// MaxWeightsBytes bounds the adapter's weights (a rank-64 adapter of a 70B
// model is about 1.6 GB).
const MaxWeightsBytes = 8 << 30

// Config is the part of adapter_config.json the mesh checks.
type Config struct {
	PEFTType      string   `json:"peft_type"`
	BaseModel     string   `json:"base_model_name_or_path"`
	Rank          int      `json:"r"`
	Alpha         float64  `json:"lora_alpha"`
	TargetModules []string `json:"target_modules"`
}

// ParseConfig validates adapter_config.json. PEFT also writes
// target_modules as a single regular expression string; both are accepted.
func ParseConfig(b []byte) (Config, error) {
	var c Config
	if len(b) > MaxConfigBytes {
		return c, fmt.Errorf("%s is %d bytes, more than %d", ConfigFile, len(b), MaxConfigBytes)
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(b, &raw); err != nil {
		return c, fmt.Errorf("%s is not a JSON object: %v", ConfigFile, err)
	}
	str := func(k string) (string, error) {
		var s string
		if v, ok := raw[k]; ok && string(v) != "null" {
			if err := json.Unmarshal(v, &s); err != nil {
				return "", fmt.Errorf("%s: %s must be a string", ConfigFile, k)
			}
		}
		return s, nil
	}
	var err error
	if c.PEFTType, err = str("peft_type"); err != nil {
		return c, err
	}
	if c.BaseModel, err = str("base_model_name_or_path"); err != nil {
		return c, err
	}
	if v, ok := raw["r"]; !ok || json.Unmarshal(v, &c.Rank) != nil {
		return c, fmt.Errorf("%s: r (the rank) must be an integer", ConfigFile)
	}
	if v, ok := raw["lora_alpha"]; !ok || json.Unmarshal(v, &c.Alpha) != nil {
		return c, fmt.Errorf("%s: lora_alpha must be a number", ConfigFile)
	}
	if v, ok := raw["target_modules"]; ok {
		if json.Unmarshal(v, &c.TargetModules) != nil {
			var one string
			if json.Unmarshal(v, &one) != nil {
				return c, fmt.Errorf("%s: target_modules must be a list of names or one pattern", ConfigFile)
			}
			c.TargetModules = []string{one}
		}
	}
	switch {
	case c.PEFTType != "" && !strings.EqualFold(c.PEFTType, "LORA"):
		return c, fmt.Errorf("%s: peft_type is %q; only LORA adapters can be pushed", ConfigFile, c.PEFTType)
	case c.BaseModel == "":
		return c, fmt.Errorf("%s: base_model_name_or_path is missing", ConfigFile)
	case c.Rank < 1 || c.Rank > 1024:
		return c, fmt.Errorf("%s: rank r=%d is outside 1..1024", ConfigFile, c.Rank)
	case !(c.Alpha > 0 && c.Alpha <= 1<<16):
		return c, fmt.Errorf("%s: lora_alpha=%v must be positive", ConfigFile, c.Alpha)
	case len(c.TargetModules) == 0:
		return c, fmt.Errorf("%s: target_modules is empty", ConfigFile)
	}
	for _, m := range c.TargetModules {
		if m == "" || len(m) > 256 {
			return c, fmt.Errorf("%s: target module %q is not a valid name", ConfigFile, m)
		}
	}
	return c, nil
}

// Adapter is a local adapter that passed validation.
type Adapter struct {
	// Name is the directory's name; it labels the adapter, nothing more.
	Name        string
	Dir         string
	Config      Config
	ConfigJSON  []byte
	WeightsPath string
	Size        int64
	Header      safetensors.Header
}

// Find resolves what the user named: a directory or file path, or a name
// under root (~/.si/loras).
func Find(arg, root string) (string, error) {
	if arg == "" {
		return "", errors.New("name an adapter: a directory, or a name under " + root)
	}
	if st, err := os.Stat(arg); err == nil {
		if !st.IsDir() {
			return filepath.Dir(arg), nil
		}
		return arg, nil
	}
	if !strings.ContainsAny(arg, `/\`) {
		dir := filepath.Join(root, arg)
		if st, err := os.Stat(dir); err == nil && st.IsDir() {
			return dir, nil
		}
		return "", fmt.Errorf("no adapter %q: neither a path nor a directory under %s", arg, root)
	}
	return "", fmt.Errorf("no adapter at %s", arg)
}

// Open validates the adapter in dir: its config and the safetensors header of
// its weights, without reading the weights themselves.
func Open(dir string) (*Adapter, error) {
	a := &Adapter{Name: filepath.Base(filepath.Clean(dir)), Dir: dir, WeightsPath: filepath.Join(dir, WeightsFile)}
	cf, err := os.Open(filepath.Join(dir, ConfigFile))
	if err != nil {
		return nil, fmt.Errorf("adapter %s: %w", dir, err)
	}
	defer cf.Close()
	if a.ConfigJSON, err = io.ReadAll(io.LimitReader(cf, MaxConfigBytes+1)); err != nil {
		return nil, err
	}
	if a.Config, err = ParseConfig(a.ConfigJSON); err != nil {
		return nil, err
	}
	wf, err := os.Open(a.WeightsPath)
	if err != nil {
		return nil, fmt.Errorf("adapter %s: %w", dir, err)
	}
	defer wf.Close()
	st, err := wf.Stat()
	if err != nil {
		return nil, err
	}
	a.Size = st.Size()
	if a.Size > MaxWeightsBytes {
		return nil, fmt.Errorf("%s is %d bytes, more than the %d-byte limit", WeightsFile, a.Size, int64(MaxWeightsBytes))
	}
	if a.Header, err = safetensors.Read(wf, a.Size); err != nil {
		return nil, fmt.Errorf("%s: %w", WeightsFile, err)
	}
	if len(a.Header.Tensors) == 0 {
		return nil, fmt.Errorf("%s holds no tensors", WeightsFile)
	}
	return a, nil
}

// CheckBase says whether the backend serves the adapter's base model.
func (a *Adapter) CheckBase(served []string) error {
	for _, m := range served {
		if m == a.Config.BaseModel {
			return nil
		}
	}
	return fmt.Errorf("base model %q is not served by the cloud backend (it serves %s)", a.Config.BaseModel, strings.Join(served, ", "))
}

// NewID returns a fresh adapter id: "lora_" and 128 random bits.
func NewID() string { return token.New("lora_", 16) }

var (
	idPattern  = regexp.MustCompile(`^lora_[a-z2-7]{26}$`)
	hexPattern = regexp.MustCompile(`^[0-9a-f]{64}$`)
	acctRE     = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,62}$`)
)

// ValidID says whether s has the shape of an adapter id.
func ValidID(s string) bool { return idPattern.MatchString(s) }

// ObjectKey is where the weights of an adapter with this owner and checksum
// live. The store derives it; nothing the user typed (names, paths) goes in.
func ObjectKey(owner, sha256hex string) (string, error) {
	if !acctRE.MatchString(owner) {
		return "", fmt.Errorf("owner %q is not a valid account id", owner)
	}
	if !hexPattern.MatchString(sha256hex) {
		return "", errors.New("checksum must be 64 lowercase hex digits")
	}
	return "adapters/" + owner + "/" + sha256hex + "/" + WeightsFile, nil
}
