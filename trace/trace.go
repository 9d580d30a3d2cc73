// Package trace reads, writes and replays routing traces: how many rows a
// real model sent to each expert, per step and per layer (docs/trace-format.md).
// It also imports the dumps of serving and training stacks (SGLang, vLLM,
// DeepSeek's EPLB, FLAME-MoE) into that format. It has no cgo and imports
// nothing else of moetop's, so a trace can be checked anywhere.
package trace

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Version is the trace format this package writes.
const Version = 2

// Format is the value of the header's "format" field.
const Format = "moetop-trace"

// MaxValues bounds steps × layers × experts so that a file that claims a
// huge trace cannot make us allocate gigabytes: 64 Mi counts is 512 MiB.
const MaxValues = 64 << 20

// ErrInvalid is matched (errors.Is) by every error about the content of a
// trace or a dump, as opposed to failing to open or read it.
var ErrInvalid = errors.New("invalid trace")

// invalidError is a one-line message about bad content that matches
// ErrInvalid without repeating "invalid trace" in front of it.
type invalidError struct{ msg string }

func (e *invalidError) Error() string        { return e.msg }
func (e *invalidError) Is(target error) bool { return target == ErrInvalid }

func invalid(format string, a ...any) error {
	return &invalidError{fmt.Sprintf(format, a...)}
}

// Trace is per-step, per-layer, per-expert routed rows.
type Trace struct {
	// Experts is the number of experts of every layer.
	Experts int
	// LayerIDs names each layer row by the model's own layer number (a
	// DeepSeek-V3 dump has MoE layers 3..60), in order.
	LayerIDs []int
	// TopK is the experts each token picked, 0 when the source did not say.
	TopK int
	// Source says where the trace came from, for people reading it.
	Source string
	// counts holds steps × layers × experts values, step-major.
	counts []float64
}

// New makes an empty trace of the given experts and layers, numbered
// 0..layers-1 (set LayerIDs, of the same length, to name them otherwise).
func New(experts, layers int) *Trace {
	ids := make([]int, layers)
	for i := range ids {
		ids[i] = i
	}
	return &Trace{Experts: experts, LayerIDs: ids}
}

// Layers is the number of layers each step holds.
func (t *Trace) Layers() int { return len(t.LayerIDs) }

// Steps is the number of steps.
func (t *Trace) Steps() int {
	n := t.Layers() * t.Experts
	if n == 0 {
		return 0
	}
	return len(t.counts) / n
}

// At is layer row l of step s: one count per expert. The slice is the
// trace's own storage; callers must not change it.
func (t *Trace) At(s, l int) []float64 {
	n := t.Experts
	i := (s*t.Layers() + l) * n
	return t.counts[i : i+n : i+n]
}

// Append adds a step: one row of counts per layer, each of Experts values.
// It checks the shape and the values (finite, ≥ 0, no layer all zero).
func (t *Trace) Append(rows [][]float64) error {
	if len(rows) != t.Layers() {
		return invalid("%d layers of counts, the trace has %d", len(rows), t.Layers())
	}
	if len(t.counts)+t.Layers()*t.Experts > MaxValues {
		return invalid("more than %d counts in all; cut the trace into pieces", MaxValues)
	}
	for l, r := range rows {
		if err := t.checkRow(l, r); err != nil {
			return err
		}
	}
	for _, r := range rows {
		t.counts = append(t.counts, r...)
	}
	return nil
}

func (t *Trace) checkRow(l int, r []float64) error {
	where := ""
	if t.Layers() > 1 {
		where = fmt.Sprintf("layer %d: ", t.LayerIDs[l])
	}
	if len(r) != t.Experts {
		return invalid("%s%d counts, the trace has %d experts", where, len(r), t.Experts)
	}
	sum := 0.0
	for e, c := range r {
		// c != c is NaN; the JSON reader cannot produce one, a caller can.
		if c < 0 || c != c || c > maxCount {
			return invalid("%sexpert %d has count %g; counts must be finite and ≥ 0", where, e, c)
		}
		sum += c
	}
	if sum == 0 {
		return invalid("%sall counts are zero", where)
	}
	return nil
}

// maxCount keeps sums of counts finite: no real step routes 1e300 rows.
const maxCount = 1e300

// Validate checks the trace as a whole: a positive number of experts and
// layers, distinct layer ids, at least one step.
func (t *Trace) Validate() error {
	if t.Experts <= 0 {
		return invalid("%d experts", t.Experts)
	}
	if t.Layers() == 0 {
		return invalid("no layers")
	}
	seen := make(map[int]bool, t.Layers())
	for _, id := range t.LayerIDs {
		if id < 0 || seen[id] {
			return invalid("layer ids must be distinct and ≥ 0, got %d twice or negative", id)
		}
		seen[id] = true
	}
	if t.TopK < 0 || t.TopK > t.Experts {
		return invalid("top-k %d with %d experts", t.TopK, t.Experts)
	}
	if t.Steps() == 0 {
		return invalid("no steps")
	}
	return nil
}

// layerRange says which layers a trace has, for messages.
func (t *Trace) layerRange() string {
	ids := t.LayerIDs
	if len(ids) == 1 {
		return fmt.Sprintf("layer %d", ids[0])
	}
	contiguous := true
	for i := 1; i < len(ids); i++ {
		if ids[i] != ids[i-1]+1 {
			contiguous = false
		}
	}
	if contiguous {
		return fmt.Sprintf("layers %d–%d", ids[0], ids[len(ids)-1])
	}
	s := make([]string, len(ids))
	for i, id := range ids {
		s[i] = strconv.Itoa(id)
	}
	return "layers " + strings.Join(s, ", ")
}

// Selection says which layers of a trace a run replays.
type Selection struct {
	// All steps through every layer in turn, the way a forward pass does.
	All bool
	// Layer is the model's layer number to replay when All is false; -1
	// means the trace's only layer (and all layers if it has several).
	Layer int
}

// Default replays a one-layer trace's layer, or every layer of a larger one.
var Default = Selection{Layer: -1}

// ParseSelection reads "" (Default), "all", or a layer number.
func ParseSelection(s string) (Selection, error) {
	switch s {
	case "":
		return Default, nil
	case "all":
		return Selection{All: true, Layer: -1}, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 {
		return Selection{}, fmt.Errorf("layers: want \"all\" or a layer number ≥ 0, got %q", s)
	}
	return Selection{Layer: n}, nil
}

// String is the spelling ParseSelection reads.
func (s Selection) String() string {
	switch {
	case s.All:
		return "all"
	case s.Layer < 0:
		return ""
	}
	return strconv.Itoa(s.Layer)
}

// Replay walks a trace's steps for a run: with one layer selected, run step
// n replays that layer of trace step n mod Steps; with all layers, run step
// n replays layer row n mod Layers of trace step (n / Layers) mod Steps, so
// a cycle through the layers is one forward pass.
type Replay struct {
	t    *Trace
	rows []int // layer rows replayed, in order
}

// Replay selects the layers a run replays.
func (t *Trace) Replay(sel Selection) (*Replay, error) {
	if err := t.Validate(); err != nil {
		return nil, err
	}
	if sel.All || (sel.Layer < 0 && t.Layers() > 1) {
		rows := make([]int, t.Layers())
		for i := range rows {
			rows[i] = i
		}
		return &Replay{t: t, rows: rows}, nil
	}
	if sel.Layer < 0 {
		return &Replay{t: t, rows: []int{0}}, nil
	}
	for i, id := range t.LayerIDs {
		if id == sel.Layer {
			return &Replay{t: t, rows: []int{i}}, nil
		}
	}
	return nil, invalid("layer %d is not in the trace (it has %s)", sel.Layer, t.layerRange())
}

// Trace is the trace being replayed.
func (r *Replay) Trace() *Trace { return r.t }

// Cycle is the number of run steps after which the replay repeats.
func (r *Replay) Cycle() int { return r.t.Steps() * len(r.rows) }

// At gives run step n's counts per expert (the trace's storage: do not
// change it) and the model layer number they belong to.
func (r *Replay) At(n int) (counts []float64, layer int) {
	if n < 0 {
		n = 0
	}
	n %= r.Cycle()
	row := r.rows[n%len(r.rows)]
	return r.t.At(n/len(r.rows), row), r.t.LayerIDs[row]
}

// Model gives every layer's counts at the trace step that run step n falls
// in, for a layers × experts view of the whole model, and the row of the
// layer that run step n replays.
func (r *Replay) Model(n int) (rows [][]float64, current int) {
	if n < 0 {
		n = 0
	}
	n %= r.Cycle()
	s := n / len(r.rows)
	rows = make([][]float64, r.t.Layers())
	for l := range rows {
		rows[l] = r.t.At(s, l)
	}
	return rows, r.rows[n%len(r.rows)]
}
