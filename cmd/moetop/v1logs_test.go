package main

import (
	"os"
	"path/filepath"
	"testing"
)

// The moetop/1 logs in recording/testdata/v1 were recorded by the v1
// binary, and the .golden files beside them are what that binary printed
// for them. Reading them with today's moetop must print the same, byte for
// byte: moetop/2 changed the format, not what an old log means.
func TestV1LogsSummariseAndExportUnchanged(t *testing.T) {
	dir, err := filepath.Abs("../../recording/testdata/v1")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ log, golden string }{
		{"cpu-v1.jsonl", "cpu-v1"},
		{"cpu-v1.jsonl.zst", "cpu-v1-zst"},
	} {
		t.Run(c.log, func(t *testing.T) {
			t.Chdir(dir) // the summary names the file as it was given
			out := t.TempDir()
			for _, run := range []struct {
				name string
				args []string
				file string // output file, or "" for stdout
			}{
				{"summary", []string{"summary", c.log}, ""},
				{"summary-json", []string{"summary", "--json", c.log}, ""},
				{"csv", []string{"export", c.log, "--format", "csv", "--out", filepath.Join(out, "x.csv")}, filepath.Join(out, "x.csv")},
				{"perfetto", []string{"export", c.log, "--format", "perfetto", "--out", filepath.Join(out, "x.json")}, filepath.Join(out, "x.json")},
			} {
				code, stdout, stderr := runCLI(t, run.args...)
				if code != 0 {
					t.Fatalf("%s: exit %d: %s", run.name, code, stderr)
				}
				got := []byte(stdout)
				if run.file != "" {
					if got, err = os.ReadFile(run.file); err != nil {
						t.Fatal(err)
					}
				}
				want, err := os.ReadFile(c.golden + "." + run.name + ".golden")
				if err != nil {
					t.Fatal(err)
				}
				if string(got) != string(want) {
					t.Errorf("%s of a moetop/1 log changed:\n got: %.600s\nwant: %.600s", run.name, got, want)
				}
			}
		})
	}
}
