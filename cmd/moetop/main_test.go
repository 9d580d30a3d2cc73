package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func runCLI(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var o, e bytes.Buffer
	code = run(context.Background(), args, &o, &e)
	return code, o.String(), e.String()
}

func TestInvalidInputGivesOneLineAndExitCode2(t *testing.T) {
	cases := []struct {
		name string
		args []string
		want string // in the message
	}{
		{"top-k above experts", []string{"--experts", "4", "--top-k", "5"}, "--top-k"},
		{"zero tokens", []string{"--tokens", "0"}, "--tokens"},
		{"negative hidden", []string{"--hidden", "-8"}, "--hidden"},
		{"zero ffn", []string{"--ffn", "0"}, "--ffn"},
		{"zero experts", []string{"--experts", "0"}, "--experts"},
		{"unknown dtype", []string{"--dtype", "fp8"}, "--dtype"},
		{"unknown activation", []string{"--act", "relu"}, "--act"},
		{"unknown routing", []string{"--routing", "normal"}, "--routing"},
		{"bad zipf", []string{"--routing", "zipf:x"}, "--routing"},
		{"hot expert outside", []string{"--routing", "hot:99:0.5"}, "--routing"},
		{"seqs without seq-len", []string{"--seqs", "4"}, "--seq-len"},
		{"seqs and tokens", []string{"--seqs", "4", "--seq-len", "8", "--tokens", "3"}, "--tokens"},
		{"size overflow", []string{"--tokens", "2000000000", "--top-k", "4"}, "overflows"},
		{"unknown flag", []string{"--frobnicate"}, "frobnicate"},
		{"not a number", []string{"--tokens", "many"}, "tokens"},
		{"stray argument", []string{"extra"}, "extra"},
		{"unknown backend", []string{"--backend", "tpu"}, "--backend"},
		{"negative steps", []string{"--steps", "-1"}, "--steps"},
		{"negative capacity", []string{"--capacity-factor", "-2"}, "capacity"},
		{"unknown router", []string{"--router", "sigmoid"}, "--router"},
		{"groups on the softmax router", []string{"--groups", "2"}, "--groups"},
		{"groups that do not divide the experts", []string{"--router", "sigmoid-grouped", "--groups", "3"}, "--groups"},
		{"more kept groups than groups", []string{"--router", "sigmoid-grouped", "--groups", "4", "--topk-groups", "8"}, "--topk-groups"},
		{"top-k beyond the kept groups", []string{"--router", "sigmoid-grouped", "--groups", "8", "--topk-groups", "1",
			"--top-k", "2"}, "--top-k"},
		{"zero routed scale", []string{"--routed-scale", "0"}, "--routed-scale"},
		{"negative shared experts", []string{"--shared-experts", "-1"}, "--shared-experts"},
		{"a shared width without shared experts", []string{"--shared-ffn", "64"}, "--shared-ffn"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			code, _, stderr := runCLI(t, tc.args...)
			if code != 2 {
				t.Errorf("exit code %d, want 2 (stderr %q)", code, stderr)
			}
			if strings.Count(stderr, "\n") != 1 || !strings.Contains(stderr, tc.want) {
				t.Errorf("stderr %q: want one line mentioning %q", stderr, tc.want)
			}
		})
	}
}

func TestHelpExitsZero(t *testing.T) {
	code, out, _ := runCLI(t, "--help")
	if code != 0 || !strings.Contains(out, "--record") {
		t.Fatalf("--help: code %d, output %q", code, out)
	}
}

func TestRecordWritesHeaderAndSamples(t *testing.T) {
	path := filepath.Join(t.TempDir(), "run.jsonl")
	code, _, stderr := runCLI(t, "--record", path, "--steps", "3", "--backend", "cpu",
		"--tokens", "64", "--hidden", "32", "--experts", "4", "--window", "0")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	if !strings.Contains(stderr, "recorded 3 steps") {
		t.Errorf("summary line missing: %q", stderr)
	}
	b, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) != 4 {
		t.Fatalf("%d lines, want header + 3 samples", len(lines))
	}
	var h struct {
		Type, Schema string
		Config       struct{ Tokens, FFN int }
	}
	json.Unmarshal([]byte(lines[0]), &h)
	if h.Type != "header" || h.Schema != "moetop/2" || h.Config.Tokens != 64 || h.Config.FFN != 128 {
		t.Errorf("header %+v", h)
	}
	// An existing file is not overwritten without --force.
	code, _, stderr = runCLI(t, "--record", path, "--steps", "1", "--backend", "cpu")
	if code != 2 || !strings.Contains(stderr, "--force") {
		t.Errorf("overwrite: code %d, %q", code, stderr)
	}
}

func TestSeqsTimesSeqLenSetsTokens(t *testing.T) {
	path := filepath.Join(t.TempDir(), "run.jsonl")
	code, _, stderr := runCLI(t, "--record", path, "--steps", "1", "--backend", "cpu",
		"--seqs", "3", "--seq-len", "5", "--hidden", "16", "--experts", "2", "--top-k", "1")
	if code != 0 {
		t.Fatal(stderr)
	}
	if !strings.Contains(stderr, "T=15 ") {
		t.Errorf("want 15 tokens: %q", stderr)
	}
}

// The layer flags reach the header: gated and shared experts and the
// grouped router, the shared width defaulting to --ffn.
func TestLayerFlagsReachTheHeader(t *testing.T) {
	path := filepath.Join(t.TempDir(), "run.jsonl")
	code, _, stderr := runCLI(t, "--record", path, "--steps", "2", "--backend", "cpu", "--window", "0",
		"--tokens", "32", "--hidden", "16", "--ffn", "24", "--experts", "8", "--top-k", "2", "--act", "swiglu",
		"--shared-experts", "1", "--router", "sigmoid-grouped", "--groups", "4", "--topk-groups", "2", "--routed-scale", "2.5")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	b, _ := os.ReadFile(path)
	var h struct {
		Config struct {
			Act              string `json:"activation"`
			Router           string
			SharedExperts    int     `json:"shared_experts"`
			SharedFFN        int     `json:"shared_ffn"`
			RouterGroups     int     `json:"router_groups"`
			RouterTopKGroups int     `json:"router_topk_groups"`
			RoutedScale      float64 `json:"routed_scale"`
		}
	}
	if err := json.Unmarshal([]byte(strings.SplitN(string(b), "\n", 2)[0]), &h); err != nil {
		t.Fatal(err)
	}
	c := h.Config
	if c.Act != "swiglu" || c.Router != "sigmoid-grouped" || c.SharedExperts != 1 || c.SharedFFN != 24 ||
		c.RouterGroups != 4 || c.RouterTopKGroups != 2 || c.RoutedScale != 2.5 {
		t.Errorf("header config %+v", c)
	}
}
