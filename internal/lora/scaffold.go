package lora

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	"github.com/superinstance/mesh/internal/safetensors"
)

// ScaffoldOptions shapes a generated adapter.
type ScaffoldOptions struct {
	BaseModel string
	Rank      int
	Hidden    int
	// Bytes is the approximate size of the weights; layers are added until it is reached.
	Bytes int64
}

// Scaffold writes a structurally valid adapter with zero weights (q_proj and
// v_proj of as many layers as Bytes needs) into dir. It is for trying the
// push and load pipeline, not for inference quality.
func Scaffold(dir string, o ScaffoldOptions) error {
	if o.Rank <= 0 {
		o.Rank = 8
	}
	if o.Hidden <= 0 {
		o.Hidden = 1024
	}
	modules := []string{"q_proj", "v_proj"}
	perLayer := int64(len(modules) * 2 * o.Rank * o.Hidden * 2)
	layers := max(1, int((o.Bytes+perLayer-1)/perLayer))
	var tensors []safetensors.Tensor
	for l := range layers {
		for _, m := range modules {
			p := fmt.Sprintf("base_model.model.model.layers.%d.self_attn.%s", l, m)
			tensors = append(tensors,
				safetensors.Tensor{Name: p + ".lora_A.weight", DType: "BF16", Shape: []uint64{uint64(o.Rank), uint64(o.Hidden)}},
				safetensors.Tensor{Name: p + ".lora_B.weight", DType: "BF16", Shape: []uint64{uint64(o.Hidden), uint64(o.Rank)}})
		}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	cfg, _ := json.MarshalIndent(map[string]any{
		"peft_type": "LORA", "task_type": "CAUSAL_LM", "base_model_name_or_path": o.BaseModel,
		"r": o.Rank, "lora_alpha": 2 * o.Rank, "lora_dropout": 0.0, "target_modules": modules, "bias": "none",
	}, "", "  ")
	if err := os.WriteFile(filepath.Join(dir, ConfigFile), append(cfg, '\n'), 0o644); err != nil {
		return err
	}
	f, err := os.Create(filepath.Join(dir, WeightsFile))
	if err != nil {
		return err
	}
	w := bufio.NewWriterSize(f, 1<<20)
	if _, err := safetensors.Encode(w, tensors, map[string]string{"format": "pt"}); err != nil {
		f.Close()
		return err
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
