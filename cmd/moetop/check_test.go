package main

import (
	"regexp"
	"strings"
	"testing"
)

// check's default six cases cover every activation, every router and
// shared experts on and off, on the fake host backend (the CPU reference
// under another name), so the whole comparison path runs here.
func TestCheckCoversEveryLayerForm(t *testing.T) {
	noGPU(t)
	code, out, stderr := runCLI(t, "check", "--backends", fakeName, "--dtypes", "fp32,bf16", "--seed", "11")
	if code != 0 || !strings.Contains(out, "12 passed, 0 failed") {
		t.Fatalf("check: exit %d, %s\n%s", code, stderr, out)
	}
	for _, dtype := range []string{"fp32", "bf16"} {
		var rows []string
		for _, l := range strings.Split(out, "\n") {
			if strings.HasPrefix(l, fakeName+" ") && strings.Fields(l)[1] == dtype {
				rows = append(rows, l)
			}
		}
		all := strings.Join(rows, "\n")
		for _, want := range []string{" gelu ", " silu ", " swiglu ", " geglu ", " softmax ", " softmax-nonorm", " sigmoid-grouped"} {
			if !strings.Contains(all, want) {
				t.Errorf("%s: no case with %q:\n%s", dtype, want, all)
			}
		}
		if !regexp.MustCompile(` \d+×\d+ `).MatchString(all) || !strings.Contains(all, " - ") {
			t.Errorf("%s: shared experts not both on and off:\n%s", dtype, all)
		}
	}
}
