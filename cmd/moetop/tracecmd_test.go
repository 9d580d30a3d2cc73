package main

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/moetop/moetop/recording"
	"github.com/moetop/moetop/stream"
)

// An SGLang dump (made in torch.save's layout by scripts/make_trace_fixtures.py)
// imports into a v2 trace that replays through the live loop layer by layer.
func TestImportedTraceReplaysEveryLayerInTurn(t *testing.T) {
	dir := t.TempDir()
	tr := filepath.Join(dir, "sg.jsonl")
	code, _, stderr := runCLI(t, "trace", "import", "--from", "sglang", "../../trace/testdata/sglang_stat.pt", tr)
	if code != 0 {
		t.Fatalf("import: exit %d: %s", code, stderr)
	}
	log := filepath.Join(dir, "run.jsonl")
	code, _, stderr = runCLI(t, "--backend", "cpu", "--experts", "8", "--top-k", "2", "--tokens", "64", "--hidden", "16",
		"--routing", "trace:"+tr, "--layers", "all", "--steps", "6", "--window", "0", "--record", log)
	if code != 0 {
		t.Fatalf("replay: exit %d: %s", code, stderr)
	}
	l, err := recording.OpenLog(log)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	var layers []int
	l.Each(func(_ int, s stream.Sample) error {
		if s.LayerIndex == nil {
			t.Fatalf("step %d has no layer index", s.Step)
		}
		layers = append(layers, *s.LayerIndex)
		return nil
	})
	// The fixture's dump keeps layers 1, 2 and 3 (layer 0 routed nothing).
	if want := []int{1, 2, 3, 1, 2, 3}; !slices.Equal(layers, want) {
		t.Errorf("layers stepped %v, want %v", layers, want)
	}
}

func TestTraceCommandBadInput(t *testing.T) {
	dir := t.TempDir()
	notDump := filepath.Join(dir, "x.pt")
	os.WriteFile(notDump, []byte("not a zip"), 0o644)
	for _, c := range []struct {
		name string
		args []string
		want string
	}{
		{"no subcommand", []string{"trace"}, "subcommand"},
		{"unknown subcommand", []string{"trace", "export"}, "export"},
		{"no format", []string{"trace", "import", "a", "b"}, "--from"},
		{"unknown format", []string{"trace", "import", "--from", "nope", "a", "b"}, "--from"},
		{"no output", []string{"trace", "import", "--from", "eplb", "a"}, "OUT"},
		{"not a dump", []string{"trace", "import", "--from", "sglang", notDump, filepath.Join(dir, "o.jsonl")}, "x.pt"},
		{"a directory", []string{"trace", "import", "--from", "eplb", dir, filepath.Join(dir, "o.jsonl")}, "directory"},
		{"a missing input", []string{"trace", "import", "--from", "eplb", filepath.Join(dir, "none.csv"), filepath.Join(dir, "o.jsonl")}, "none.csv"},
		{"the output is an input", []string{"trace", "import", "--from", "sglang", notDump, notDump}, "also an input"},
		{"an output that exists", []string{"trace", "import", "--from", "sglang", "../../trace/testdata/sglang_stat.pt", notDump}, "--force"},
		{"no folder for the output", []string{"trace", "import", "--from", "sglang", notDump, filepath.Join(dir, "no", "o.jsonl")}, "folder"},
		{"layers without a trace", []string{"--layers", "all", "--backend", "cpu"}, "--routing trace:FILE"},
		{"layer and layers", []string{"--layers", "all", "--layer", "3", "--routing", "trace:x"}, "not both"},
	} {
		t.Run(c.name, func(t *testing.T) {
			code, _, stderr := runCLI(t, c.args...)
			if code != 2 || !strings.Contains(stderr, c.want) || strings.Count(strings.TrimSpace(stderr), "\n") > 0 {
				t.Errorf("exit %d, stderr %q; want exit 2 and one line naming %q", code, stderr, c.want)
			}
		})
	}
}

// Flags after the files count as flags, not as more inputs: `--force` at
// the end once made "want one input file, got 2".
func TestTraceImportTakesFlagsAfterTheFiles(t *testing.T) {
	out := filepath.Join(t.TempDir(), "sg.jsonl")
	for i, force := range []bool{false, true} {
		args := []string{"trace", "import", "../../trace/testdata/sglang_stat.pt", out, "--from", "sglang"}
		if force {
			args = append(args, "--force")
		}
		if code, _, stderr := runCLI(t, args...); code != 0 {
			t.Fatalf("run %d (%v): exit %d: %s", i, args, code, stderr)
		}
	}
	// Without --force a third import refuses to overwrite.
	if code, _, _ := runCLI(t, "trace", "import", "--from", "sglang", "../../trace/testdata/sglang_stat.pt", out); code != 2 {
		t.Errorf("import over an existing OUT without --force: exit %d, want 2", code)
	}
	// After "--", a file named like a flag is a file.
	if code, _, stderr := runCLI(t, "trace", "import", "--from", "sglang", "--", "--force", out); code != 2 || !strings.Contains(stderr, "--force") {
		t.Errorf("a file named --force after --: exit %d: %s", code, stderr)
	}
}
