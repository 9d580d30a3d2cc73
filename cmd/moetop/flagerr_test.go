package main

import (
	"regexp"
	"strings"
	"testing"
)

// goWords are the flag package's phrasings, which moetop says in its own.
var goWords = regexp.MustCompile(`invalid value|parse error|flag provided|for flag|needs an argument: -|value out of range|invalid boolean`)

func TestEveryKindOfFlagErrorIsOneLineInMoetopsWords(t *testing.T) {
	cases := []struct {
		name string
		args []string
		want []string // all in the message
	}{
		{"a word for a whole number", []string{"--tokens", "many"}, []string{"--tokens", `"many"`, "whole number"}},
		{"a whole number too large for 64 bits", []string{"--experts", "99999999999999999999"}, []string{"--experts", "out of range"}},
		{"a negative seed", []string{"--seed", "-1"}, []string{"--seed", "0 or more"}},
		{"a word for a number", []string{"--capacity-factor", "lots"}, []string{"--capacity-factor", "a number"}},
		{"a word for a duration", []string{"--duration", "soon"}, []string{"--duration", "30s"}},
		{"a word for a boolean", []string{"--force=maybe"}, []string{"--force", "true or false"}},
		{"a flag with no value", []string{"--tokens"}, []string{"--tokens needs a value"}},
		{"an unknown flag", []string{"--frobnicate"}, []string{"unknown flag --frobnicate", "moetop --help"}},
		{"a single-dash unknown flag", []string{"-frobnicate"}, []string{"unknown flag --frobnicate"}},
		{"bench's whole number", []string{"bench", "--reps", "x"}, []string{"--reps", "whole number"}},
		{"check's whole number", []string{"check", "--cases", "1.5"}, []string{"--cases", "whole number"}},
		{"summary's boolean", []string{"summary", "x.jsonl", "--json=2"}, []string{"--json", "true or false"}},
		{"export's boolean", []string{"export", "x.jsonl", "--force=no"}, []string{"--force", "true or false"}},
		{"summary's flag after the file", []string{"summary", "--json", "x.jsonl", "--frobnicate"}, []string{"unknown flag --frobnicate"}},
		{"trace import's unknown flag", []string{"trace", "import", "--layers", "x"}, []string{"unknown flag --layers", "moetop trace import --help"}},
		{"placement's whole number", []string{"placement", "x.jsonl", "--ranks", "x"}, []string{"--ranks", "whole number"}},
		{"devices' unknown flag", []string{"devices", "--all"}, []string{"unknown flag --all", "moetop devices --help"}},
		{"version's unknown flag", []string{"version", "--short"}, []string{"unknown flag --short"}},
		{"the implied ffn of a huge hidden blames --hidden",
			[]string{"--hidden", "2147483647"}, []string{"invalid --hidden 2147483647", "4 × hidden = 8589934588", "set --ffn"}},
		{"an ffn set by hand is its own", []string{"--hidden", "64", "--ffn", "3000000000"}, []string{"invalid --ffn"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			code, _, stderr := runCLI(t, tc.args...)
			if code != 2 || strings.Count(stderr, "\n") != 1 {
				t.Errorf("exit %d, stderr %q; want 2 and one line", code, stderr)
			}
			for _, w := range tc.want {
				if !strings.Contains(stderr, w) {
					t.Errorf("stderr %q does not say %q", stderr, w)
				}
			}
			if goWords.MatchString(stderr) {
				t.Errorf("stderr %q is in the flag package's words", stderr)
			}
		})
	}
}

func TestVersionFlagIsTheVersionCommand(t *testing.T) {
	_, want, _ := runCLI(t, "version")
	for _, args := range [][]string{{"--version"}, {"-version"}} {
		code, out, stderr := runCLI(t, args...)
		if code != 0 || out != want || stderr != "" || !strings.HasPrefix(out, "moetop ") {
			t.Errorf("%v: exit %d, %q %q; want %q as moetop version gives it", args, code, out, stderr, want)
		}
	}
}

func TestHelpOnEveryCommand(t *testing.T) {
	for _, args := range [][]string{
		{"--help"}, {"-h"}, {"help"}, {"check", "--help"}, {"bench", "--help"}, {"summary", "--help"},
		{"export", "--help"}, {"devices", "--help"}, {"version", "--help"}, {"help", "bench"}, {"help", "export"},
		{"summary", "x.jsonl", "--help"}, {"models", "--help"}, {"trace", "--help"}, {"trace", "import", "--help"},
		{"placement", "--help"}, {"help", "placement"},
	} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			code, out, stderr := runCLI(t, args...)
			if code != 0 || stderr != "" || !strings.Contains(out, "Usage:") {
				t.Errorf("exit %d, stderr %q, stdout %.80q; want 0 and the usage on stdout", code, stderr, out)
			}
		})
	}
}
