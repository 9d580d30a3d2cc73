package main

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/moetop/moetop/presets"
)

func TestModelsListsEveryPresetWithItsMemory(t *testing.T) {
	code, out, stderr := runCLI(t, "models")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	for _, name := range []string{"mixtral-8x7b", "mixtral-8x22b", "qwen3-30b-a3b", "qwen3-235b-a22b", "deepseek-v3",
		"deepseek-v2-lite", "gpt-oss-20b", "gpt-oss-120b", "olmoe-1b-7b", "llama4-scout"} {
		if !strings.Contains(out, name) {
			t.Errorf("models does not list %s", name)
		}
	}
	// DeepSeek-V3's layer: 256 experts of 3·7168·2048 plus a shared expert
	// and the router, about 21.1 GiB in bf16, half that in its FP8.
	if !strings.Contains(out, "21.09 GiB      10.55 GiB") {
		t.Errorf("deepseek-v3's memory per layer is not 21.09 GiB in bf16 and 10.55 GiB as published:\n%s", out)
	}
	code, out, _ = runCLI(t, "models", "--json")
	var ps []presets.Preset
	if code != 0 || json.Unmarshal([]byte(out), &ps) != nil || len(ps) != len(presets.All()) {
		t.Errorf("models --json: exit %d, %d presets", code, len(ps))
	}
}
