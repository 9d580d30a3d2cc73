package main

import (
	"fmt"
	"io"
	"strings"

	"github.com/moetop/moetop/bench"
)

// progress draws a bar with the last result on stderr when it is a
// terminal, and one line per result otherwise (logs, CI).
type progress struct {
	w     io.Writer
	tty   bool
	total int
}

func newProgress(w io.Writer, total int) *progress {
	return &progress{w: w, tty: isTerminal(w), total: total}
}

func (p *progress) update(done, total int, r bench.Result) {
	what := fmt.Sprintf("%s %s %s %s: %s", r.Case.Name, r.Dist, r.DType, r.Backend, r.Status)
	if r.Status == bench.StatusOK {
		what += fmt.Sprintf(" %.1f TFLOP/s", r.TFLOPS)
	}
	p.show(done, total, what)
}

// show draws the bar, or writes the line, for what the last result was.
func (p *progress) show(done, total int, what string) {
	if !p.tty {
		fmt.Fprintf(p.w, "[%d/%d] %s\n", done, total, what)
		return
	}
	const width = 30
	fill := width * done / max(total, 1)
	fmt.Fprintf(p.w, "\r\x1b[K[%s%s] %d/%d %s", strings.Repeat("█", fill), strings.Repeat("░", width-fill), done, total, what)
}

// clear takes the bar off its line so that something else can print there.
func (p *progress) clear() {
	if p.tty {
		fmt.Fprint(p.w, "\r\x1b[K")
	}
}

func (p *progress) done() {
	if p.tty {
		fmt.Fprintln(p.w)
	}
}
