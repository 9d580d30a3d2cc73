package main

import (
	"context"
	"fmt"
	"io"
	"os"

	tea "github.com/charmbracelet/bubbletea"
	"github.com/charmbracelet/lipgloss"
	"github.com/muesli/termenv"

	"github.com/moetop/moetop/profiler"
	"github.com/moetop/moetop/recording"
	"github.com/moetop/moetop/stream"
	"github.com/moetop/moetop/tui"
)

// liveSource is a running Loop as the view's Source.
type liveSource struct {
	header  stream.Header
	samples chan stream.Sample
}

func (s *liveSource) Samples() <-chan stream.Sample { return s.samples }
func (s *liveSource) Header() stream.Header         { return s.header }
func (s *liveSource) Mode() string                  { return "LIVE" }

// liveControl maps the view's actions onto profiler.Live.
type liveControl struct{ live *profiler.Live }

func (c liveControl) Do(r tui.Request) (string, error) {
	switch r.Action {
	case tui.ActPause:
		return c.live.TogglePause()
	case tui.ActNextBackend:
		return c.live.NextBackend()
	case tui.ActNextRouting:
		return c.live.NextRouting()
	case tui.ActTokensUp:
		return c.live.ScaleTokens(2, 1)
	case tui.ActTokensDown:
		return c.live.ScaleTokens(1, 2)
	case tui.ActSkewUp:
		return c.live.Skew(true)
	case tui.ActSkewDown:
		return c.live.Skew(false)
	}
	return "", fmt.Errorf("not available in a live run")
}

func (c liveControl) Status() tui.Status { return tui.Status{Paused: c.live.Paused()} }

// colorProfile honours NO_COLOR.
func colorProfile() {
	if os.Getenv("NO_COLOR") != "" {
		lipgloss.SetColorProfile(termenv.Ascii)
	}
}

// view runs the TUI over the loop until the user quits or ctx ends; the
// loop is stopped and its backend closed before it returns. The backend
// key cycles through backends.
func view(ctx context.Context, loop *profiler.Loop, header stream.Header, backends []string, sinks []stream.Sink, stdout io.Writer) error {
	live, changes := profiler.NewLive(loop.Config, header.Backend, backends, openBackend)
	loop.Changes = changes
	return show(ctx, loop, header, liveControl{live}, append([]stream.Sink{observer(live.Observe)}, sinks...), stdout)
}

// show runs the TUI over the loop with ctl carrying out its keys.
func show(ctx context.Context, loop *profiler.Loop, header stream.Header, ctl tui.Controller, sinks []stream.Sink, stdout io.Writer) error {
	colorProfile()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	src := &liveSource{header: header, samples: make(chan stream.Sample, 64)}
	runErr := make(chan error, 1)
	go func() {
		defer close(src.samples)
		runErr <- drive(ctx, loop, 0, append(sinks, forward(ctx, src.samples))...)
	}()
	p := tea.NewProgram(tui.New(src, ctl), tea.WithAltScreen(), tea.WithContext(ctx),
		tea.WithOutput(stdout))
	_, err := p.Run()
	cancel()
	if lerr := <-runErr; lerr != nil {
		return lerr
	}
	if err != nil && ctx.Err() == nil {
		return fmt.Errorf("tui: %w", err)
	}
	return nil
}

// replaySource is a log as the view's Source; replayControl maps keys.
type replaySource struct {
	log *recording.Log
	r   *recording.Replay
}

func (s replaySource) Samples() <-chan stream.Sample { return s.r.Samples() }
func (s replaySource) Header() stream.Header         { return s.log.Header }
func (s replaySource) Mode() string                  { return "REPLAY" }

type replayControl struct{ r *recording.Replay }

func (c replayControl) Do(q tui.Request) (string, error) {
	switch q.Action {
	case tui.ActPause:
		return c.r.TogglePlay(), nil
	case tui.ActStepBack:
		return c.r.Step(-1), nil
	case tui.ActStepForward:
		return c.r.Step(1), nil
	case tui.ActFaster:
		return c.r.Speed(true), nil
	case tui.ActSlower:
		return c.r.Speed(false), nil
	case tui.ActHome:
		return c.r.Home(), nil
	case tui.ActEnd:
		return c.r.End(), nil
	case tui.ActJump:
		return c.r.Jump(q.Target)
	}
	return "", fmt.Errorf("not available in a replay")
}

func (c replayControl) Status() tui.Status {
	return tui.Status{Paused: c.r.Paused(), Position: c.r.Position()}
}

// replay opens a log and shows it in the TUI at its recorded pace.
func replay(ctx context.Context, path string, stdout io.Writer) error {
	l, err := openLogFile(path)
	if err != nil {
		return err
	}
	defer l.Close()
	if !isTerminal(stdout) {
		return usagef("--replay draws the view and needs a terminal; without one, moetop summary %s or moetop export %s reads the log", path, path)
	}
	if l.Len() == 0 {
		return usagef("%s has a header but no samples; nothing to replay", path)
	}
	colorProfile()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	r := recording.NewReplay(l)
	ran := make(chan struct{})
	go func() { r.Run(ctx); close(ran) }()
	// The log is closed (deferred above) only once Run has stopped reading it.
	defer func() { cancel(); <-ran }()
	p := tea.NewProgram(tui.New(replaySource{l, r}, replayControl{r}), tea.WithAltScreen(), tea.WithContext(ctx),
		tea.WithOutput(stdout))
	if _, err := p.Run(); err != nil && ctx.Err() == nil {
		return fmt.Errorf("tui: %w", err)
	}
	return nil
}
