package lora

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestScaffoldOpens(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "support-bot")
	if err := Scaffold(dir, ScaffoldOptions{BaseModel: "m", Rank: 4, Hidden: 64, Bytes: 10 << 10}); err != nil {
		t.Fatal(err)
	}
	a, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	if a.Name != "support-bot" || a.Config.Rank != 4 || a.Config.BaseModel != "m" || a.Size < 10<<10 {
		t.Fatalf("adapter = %+v", a)
	}
	if err := a.CheckBase([]string{"x", "m"}); err != nil {
		t.Fatal(err)
	}
	if err := a.CheckBase([]string{"x"}); err == nil || !strings.Contains(err.Error(), `"m" is not served`) {
		t.Fatalf("CheckBase = %v", err)
	}
}

func TestParseConfig(t *testing.T) {
	good := `{"peft_type":"LORA","base_model_name_or_path":"b","r":8,"lora_alpha":16,"target_modules":["q_proj"]}`
	if c, err := ParseConfig([]byte(good)); err != nil || c.Rank != 8 || c.Alpha != 16 {
		t.Fatalf("ParseConfig = %+v, %v", c, err)
	}
	if c, err := ParseConfig([]byte(`{"base_model_name_or_path":"b","r":8,"lora_alpha":16,"target_modules":".*proj"}`)); err != nil || c.TargetModules[0] != ".*proj" {
		t.Fatalf("pattern target_modules: %+v, %v", c, err)
	}
	bad := map[string]string{
		"not json":      `{`,
		"no base":       `{"r":8,"lora_alpha":16,"target_modules":["q"]}`,
		"rank zero":     `{"base_model_name_or_path":"b","r":0,"lora_alpha":16,"target_modules":["q"]}`,
		"rank string":   `{"base_model_name_or_path":"b","r":"8","lora_alpha":16,"target_modules":["q"]}`,
		"alpha missing": `{"base_model_name_or_path":"b","r":8,"target_modules":["q"]}`,
		"no modules":    `{"base_model_name_or_path":"b","r":8,"lora_alpha":16,"target_modules":[]}`,
		"prefix tuning": `{"peft_type":"PREFIX_TUNING","base_model_name_or_path":"b","r":8,"lora_alpha":16,"target_modules":["q"]}`,
	}
	for name, b := range bad {
		if _, err := ParseConfig([]byte(b)); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestFind(t *testing.T) {
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "mine"), 0o755); err != nil {
		t.Fatal(err)
	}
	if d, err := Find("mine", root); err != nil || d != filepath.Join(root, "mine") {
		t.Fatalf("Find by name = %q, %v", d, err)
	}
	if _, err := Find("missing", root); err == nil || !strings.Contains(err.Error(), "no adapter") {
		t.Fatalf("Find missing = %v", err)
	}
	if _, err := Find("", root); err == nil {
		t.Fatal("empty name accepted")
	}
}

func TestIDsAndKeys(t *testing.T) {
	seen := map[string]bool{}
	for range 1000 {
		id := NewID()
		if !ValidID(id) || seen[id] {
			t.Fatalf("id %q invalid or repeated", id)
		}
		seen[id] = true
	}
	sum := strings.Repeat("ab", 32)
	k, err := ObjectKey("acme", sum)
	if err != nil || k != "adapters/acme/"+sum+"/adapter_model.safetensors" {
		t.Fatalf("ObjectKey = %q, %v", k, err)
	}
	for _, owner := range []string{"../etc", "a/b", "", "A"} {
		if _, err := ObjectKey(owner, sum); err == nil {
			t.Errorf("owner %q accepted", owner)
		}
	}
	if _, err := ObjectKey("acme", "../../x"); err == nil {
		t.Error("path as checksum accepted")
	}
}
