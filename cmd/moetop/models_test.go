package main

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	"github.com/moetop/moetop/nvml"
	"github.com/moetop/moetop/presets"
	"github.com/moetop/moetop/recording"
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

func TestModelPresetStartsTheLayerAndFlagsOverrideIt(t *testing.T) {
	dir := t.TempDir()
	small := []string{"--backend", "cpu", "--tokens", "16", "--experts", "16", "--hidden", "64", "--ffn", "32",
		"--steps", "2", "--window", "0"}
	for _, c := range []struct {
		model, act, router string
		shared, topK       int
		weights            string
		note               string
	}{
		{"qwen3-30b-a3b", "swiglu", "softmax", 0, 8, "", ""},
		{"deepseek-v2-lite", "swiglu", "softmax-nonorm", 2, 6, "", ""},
		{"deepseek-v3", "swiglu", "sigmoid-grouped", 1, 8, "fp8-e4m3-block128", "runs them in bf16"},
		{"gpt-oss-20b", "swiglu", "softmax", 0, 4, "mxfp4", "clamped SwiGLU"},
	} {
		t.Run(c.model, func(t *testing.T) {
			log := filepath.Join(dir, c.model+".jsonl")
			code, _, stderr := runCLI(t, append([]string{"--model", c.model, "--record", log}, small...)...)
			if code != 0 {
				t.Fatalf("exit %d: %s", code, stderr)
			}
			if c.note != "" && !strings.Contains(stderr, c.note) {
				t.Errorf("stderr %q does not say %q", stderr, c.note)
			}
			l, err := recording.OpenLog(log)
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			h := l.Header
			if h.Config.Model != c.model || h.Config.Act != c.act || h.Config.Router != c.router ||
				h.Config.SharedExperts != c.shared || h.Config.TopK != c.topK {
				t.Errorf("config %+v; want model %s, %s, router %s, %d shared, top-%d", h.Config, c.model, c.act, c.router, c.shared, c.topK)
			}
			if h.Config.Experts != 16 || h.Config.Hidden != 64 || h.Config.FFN != 32 {
				t.Errorf("flags beside --model must override it: %+v", h.Config)
			}
			if h.Weights != c.weights {
				t.Errorf("published weights %q, want %q", h.Weights, c.weights)
			}
		})
	}
}

func TestModelTooBigForTheHostIsRefused(t *testing.T) {
	// deepseek-v3's layer needs 42 GiB on the CPU; a host that could hold
	// it would run it rather than refuse.
	if _, avail, err := nvml.HostMemory(); err != nil || avail > 40<<30 {
		t.Skipf("skipping: the host has %d GiB available (or none could be read: %v), enough to run deepseek-v3's layer", avail>>30, err)
	}
	code, _, stderr := runCLI(t, "--model", "deepseek-v3", "--backend", "cpu", "--steps", "1")
	if code != 2 || !strings.Contains(stderr, "no --tokens fits") {
		t.Errorf("exit %d, %q; want exit 2 saying what would fit", code, stderr)
	}
	code, _, stderr = runCLI(t, "--model", "gpt-9", "--backend", "cpu")
	if code != 2 || !strings.Contains(stderr, "moetop models") {
		t.Errorf("unknown model: exit %d, %q", code, stderr)
	}
}
