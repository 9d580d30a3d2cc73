package main

import (
	"bytes"
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	tea "github.com/charmbracelet/bubbletea"
	"github.com/charmbracelet/x/exp/teatest"

	"github.com/moetop/moetop/recording"
	"github.com/moetop/moetop/tui"
)

// The moetop/1 logs replay in today's view: jumping to the end shows their
// last step, with the six phases v1 recorded and their experts.
func TestV1LogsReplayInTheView(t *testing.T) {
	for _, c := range []struct {
		log   string
		steps int
	}{{"cpu-v1.jsonl", 12}, {"cpu-v1.jsonl.zst", 8}} {
		t.Run(c.log, func(t *testing.T) {
			l, err := recording.OpenLog(filepath.Join("../../recording/testdata/v1", c.log))
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			if l.Len() != c.steps || l.Skipped != 0 {
				t.Fatalf("%d samples, %d lines skipped; want %d and none", l.Len(), l.Skipped, c.steps)
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			r := recording.NewReplay(l)
			go r.Run(ctx)
			tm := teatest.NewTestModel(t, tui.New(replaySource{l, r}, replayControl{r}), teatest.WithInitialTermSize(120, 40))
			tm.Send(tea.KeyMsg{Type: tea.KeyEnd})
			var last []byte
			teatest.WaitFor(t, tm.Output(), func(b []byte) bool {
				last = append(last, b...)
				return bytes.Contains(last, []byte("gemm2")) && bytes.Contains(last, []byte("REPLAY"))
			}, teatest.WithDuration(10*time.Second), teatest.WithCheckInterval(20*time.Millisecond))
			tm.Send(tea.KeyMsg{Type: tea.KeyRunes, Runes: []rune("q")})
			v := tm.FinalModel(t, teatest.WithFinalTimeout(10*time.Second)).View()
			for _, want := range []string{"REPLAY", "router", "permute", "gemm1", "act", "gemm2", "combine", "e0"} {
				if !strings.Contains(v, want) {
					t.Errorf("the replayed view lacks %q:\n%s", want, v)
				}
			}
		})
	}
}
