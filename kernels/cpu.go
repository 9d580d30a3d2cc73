package kernels

import (
	"context"
	"fmt"
	"runtime"
	"time"

	"gonum.org/v1/gonum/blas"
	"gonum.org/v1/gonum/blas/blas32"
)

// CPU is the reference backend: the whole layer in float32 through gonum.
// Inputs and intermediates are rounded to the shape's dtype where a GPU would
// store them, so a GPU result and this one differ only by arithmetic order.
type CPU struct {
	s        Shape
	prepared bool

	x, wg, w1, w2 []float32
	logits        []float32
	xp, h, y, out []float32
	// The shared experts' weights and activations (nil: none).
	sw1, sw2, sh, sy []float32
	last             Assignment
	// MemAvailable reports host bytes available; Prepare refuses shapes that
	// do not fit so that an impossible size is an error, not a crash.
	MemAvailable func() (uint64, error)
}

// cpuName is the CPU backend's name; this file is the only one to spell it.
const cpuName = "cpu"

func init() {
	Register(Registration{
		Name:      cpuName,
		Doc:       "float32 reference through gonum: the default without a GPU, the oracle for check",
		Order:     100,
		Reference: true,
		Plan:      cpuPlan,
		New: func(o Options) (Backend, error) {
			c := NewCPU()
			c.MemAvailable = o.MemAvailable
			return c, nil
		},
	})
}

// cpuPlan is what Prepare allocates: everything in float32 (the CPU
// computes and stores float32 whatever the dtype), the token of each
// permuted row instead of a router bias, and no workspace.
func cpuPlan(s Shape, _ []int) ([]Buffer, error) {
	b := CommonBuffers(s, 4)
	b = append(b, Buffer{BufTokenOfRow, "token of row", KindIndex, u(s.Rows()) * 4})
	return append(b, DenseRows(s, 4)...), nil
}

// NewCPU returns an unprepared CPU backend.
func NewCPU() *CPU { return &CPU{} }

// Info describes the backend.
func (c *CPU) Info() Info {
	return Info{Name: cpuName, Device: fmt.Sprintf("CPU reference (%d threads)", runtime.GOMAXPROCS(0)),
		TimesExperts: true}
}

// CPUBytes is the host memory Prepare allocates for s (the CPU's plan).
func CPUBytes(s Shape) uint64 {
	b, _ := cpuPlan(s, nil)
	return Total(b)
}

// Prepare allocates and fills weights for s.
func (c *CPU) Prepare(ctx context.Context, s Shape) error {
	c.release()
	need := CPUBytes(s)
	if c.MemAvailable != nil {
		if avail, err := c.MemAvailable(); err == nil && need > avail {
			return fmt.Errorf("cpu backend needs %d MiB, host has %d MiB available: %w",
				need>>20, avail>>20, ErrOutOfMemory)
		}
	}
	if err := s.Router.Check(s.Experts, s.TopK); err != nil {
		return fmt.Errorf("cpu backend: %w", err)
	}
	t, h, f, e, r, c1 := s.Tokens, s.Hidden, s.FFN, s.Experts, s.Rows(), s.W1Cols()
	c.x = make([]float32, t*h)
	c.wg = make([]float32, h*e)
	c.w1 = make([]float32, e*h*c1)
	c.w2 = make([]float32, e*f*h)
	c.logits = make([]float32, t*e)
	c.xp = make([]float32, r*h)
	c.h = make([]float32, r*c1)
	c.y = make([]float32, r*h)
	c.out = make([]float32, t*h)
	type tensor struct {
		dst    []float32
		tensor uint32
		scale  float32
	}
	fills := []tensor{
		{c.x, TensorX, ScaleX()}, {c.wg, TensorRouter, ScaleRouter(h)},
		{c.w1, TensorW1, ScaleW1(h)}, {c.w2, TensorW2, ScaleW2(f)},
	}
	if w := s.SharedWidth(); w > 0 {
		c.sw1, c.sw2 = make([]float32, h*s.Act.Columns(w)), make([]float32, w*h)
		c.sh, c.sy = make([]float32, t*s.Act.Columns(w)), make([]float32, t*h)
		fills = append(fills, tensor{c.sw1, TensorSharedW1, ScaleW1(h)}, tensor{c.sw2, TensorSharedW2, ScaleW2(w)})
	}
	for _, fl := range fills {
		// Gigabytes of weights take seconds to fill: look at ctx between
		// blocks so that a quit does not wait for them.
		err := inBlocks(ctx, len(fl.dst), 4*elemBlock, func(lo, hi int) {
			for i := lo; i < hi; i++ {
				fl.dst[i] = s.DType.Round(Fill(s.Seed, fl.tensor, uint64(i), fl.scale))
			}
		})
		if err != nil {
			c.release()
			return err
		}
	}
	c.s = s
	c.prepared = true
	return nil
}

func (c *CPU) release() {
	*c = CPU{MemAvailable: c.MemAvailable}
}

// Close releases the buffers.
func (c *CPU) Close() error { c.release(); return nil }

// round rounds v to the shape's dtype where a GPU would store it.
func (c *CPU) round(ctx context.Context, v []float32) error {
	if c.s.DType != BF16 && c.s.DType != FP16 {
		return ctx.Err()
	}
	return inBlocks(ctx, len(v), elemBlock, func(lo, hi int) {
		for i := lo; i < hi; i++ {
			v[i] = c.s.DType.Round(v[i])
		}
	})
}

func general(rows, cols int, data []float32) blas32.General {
	return blas32.General{Rows: rows, Cols: cols, Stride: cols, Data: data[:rows*cols]}
}

// How much work the CPU backend does between looks at ctx, so that a
// cancelled step (q, Ctrl-C, SIGTERM) ends within a fraction of a second
// however large the layer: about a GFLOP of GEMM, or a million elements of
// anything else (tens of milliseconds on one core).
const (
	gemmBlockFLOPs = 1 << 30
	elemBlock      = 1 << 20
)

// inBlocks calls f on [lo, hi) blocks of at most size items covering
// [0, n), checking ctx before each; it returns ctx's error when cancelled.
func inBlocks(ctx context.Context, n, size int, f func(lo, hi int)) error {
	size = max(size, 1)
	for lo := 0; lo < n; lo += size {
		if err := ctx.Err(); err != nil {
			return err
		}
		f(lo, min(lo+size, n))
	}
	return ctx.Err()
}

// gemm is c = a·b for a n×k and b k×m, row-major, in blocks of about
// gemmBlockFLOPs, checking ctx between them: blocks of rows, and of
// columns too when one row is more than a block. A block of a few rows and
// thousands of columns still spreads over gonum's threads, and each output
// element is the same sum over k in the same order as in one call.
func gemm(ctx context.Context, n, k, m int, a, b, c []float32) error {
	return gemmBlocks(ctx, gemmBlockFLOPs, n, k, m, a, b, c)
}

// gemmBlocks is gemm with blocks of about flops each (tests make them tiny).
func gemmBlocks(ctx context.Context, flops, n, k, m int, a, b, c []float32) error {
	rows := max(1, flops/max(1, 2*k*m))
	cols := m
	if rows == 1 {
		cols = min(m, max(16, flops/max(1, 2*k)))
	}
	for lo := 0; lo < n; lo += rows {
		hi := min(lo+rows, n)
		for j := 0; j < m; j += cols {
			if err := ctx.Err(); err != nil {
				return err
			}
			w := min(cols, m-j)
			blas32.Gemm(blas.NoTrans, blas.NoTrans, 1,
				blas32.General{Rows: hi - lo, Cols: k, Stride: k, Data: a[lo*k : hi*k]},
				blas32.General{Rows: k, Cols: w, Stride: m, Data: b[j : (k-1)*m+j+w]}, 0,
				blas32.General{Rows: hi - lo, Cols: w, Stride: m, Data: c[lo*m+j : (hi-1)*m+j+w]})
		}
	}
	return ctx.Err()
}

// Step runs one forward pass.
func (c *CPU) Step(ctx context.Context, in StepInput) (StepResult, error) {
	if !c.prepared {
		return StepResult{}, ErrNotPrepared
	}
	s := c.s
	t, h, f, e, k, c1 := s.Tokens, s.Hidden, s.FFN, s.Experts, s.TopK, s.W1Cols()
	var res StepResult
	if in.Bias != nil && len(in.Bias) != e {
		return res, fmt.Errorf("router bias has %d values, want %d experts", len(in.Bias), e)
	}
	mark := time.Now()
	// The shared experts run beside the routed ones, as on a GPU's second
	// stream; every return waits for them (they look at ctx too), so that
	// the next step cannot find them still writing.
	var shared *sharedRun
	if c.sy != nil {
		shared = c.startShared(ctx, mark)
		defer shared.wait()
	}
	lap := func(p Phase) {
		now := time.Now()
		res.Phases[p] = now.Sub(mark)
		mark = now
	}

	// Every phase checks ctx between blocks of work and returns its error:
	// a cancelled step ends within a fraction of a second, not after the
	// whole layer (tens of seconds for a large one on the CPU).
	var a Assignment
	if in.Fixed != nil {
		if len(in.Fixed.IDs) != t*k || len(in.Fixed.Weights) != t*k {
			return res, fmt.Errorf("fixed assignment has %d ids, want tokens×top-k = %d", len(in.Fixed.IDs), t*k)
		}
		a = *in.Fixed
	} else {
		if err := gemm(ctx, t, h, e, c.x, c.wg, c.logits); err != nil {
			return res, err
		}
		a = Assignment{IDs: make([]int32, t*k), Weights: make([]float32, t*k)}
		err := inBlocks(ctx, t, max(1, elemBlock/e), func(lo, hi int) {
			b := s.Router.Route(c.logits[lo*e:hi*e], hi-lo, e, k, in.Bias)
			copy(a.IDs[lo*k:], b.IDs)
			copy(a.Weights[lo*k:], b.Weights)
		})
		if err != nil {
			return res, err
		}
	}
	c.last = a
	lap(PhaseRouter)

	p, err := Permute(a, t, k, e)
	if err != nil {
		return res, err
	}
	err = inBlocks(ctx, len(p.Token), max(1, elemBlock/h), func(lo, hi int) {
		for r := lo; r < hi; r++ {
			tok := int(p.Token[r])
			copy(c.xp[r*h:(r+1)*h], c.x[tok*h:(tok+1)*h])
		}
	})
	if err != nil {
		return res, err
	}
	res.Rows = p.Counts
	lap(PhasePermute)

	res.ExpertGEMM = make([]time.Duration, e)
	// experts runs one GEMM per expert with rows, timing each.
	experts := func(k, m int, a, w, out []float32) error {
		for ex := 0; ex < e; ex++ {
			n := p.Counts[ex]
			if n == 0 {
				continue
			}
			t0 := time.Now()
			o := p.Offsets[ex]
			err := gemm(ctx, n, k, m, a[o*k:], w[ex*k*m:], out[o*m:])
			res.ExpertGEMM[ex] += time.Since(t0)
			if err != nil {
				return err
			}
		}
		return nil
	}
	if err := experts(h, c1, c.xp, c.w1, c.h); err != nil {
		return res, err
	}
	if err := c.round(ctx, c.h); err != nil {
		return res, err
	}
	lap(PhaseGEMM1)

	// Gated, the activation packs its rows × f output at the start of h
	// (row blocks in order: see ActivateRows).
	if err := activateInBlocks(ctx, c.h, s.Rows(), f, s.Act); err != nil {
		return res, err
	}
	if err := c.round(ctx, c.h[:s.Rows()*f]); err != nil {
		return res, err
	}
	lap(PhaseAct)

	if err := experts(f, h, c.h, c.w2, c.y); err != nil {
		return res, err
	}
	if err := c.round(ctx, c.y); err != nil {
		return res, err
	}
	lap(PhaseGEMM2)

	// Combine token blocks: each block's slots and rows are a contiguous
	// slice of the assignment and the permutation.
	err = inBlocks(ctx, t, max(1, elemBlock/(k*h)), func(lo, hi int) {
		Combine(c.out[lo*h:hi*h], c.y, Assignment{Weights: a.Weights[lo*k : hi*k]},
			Permutation{RowOf: p.RowOf[lo*k : hi*k]}, hi-lo, k, h)
	})
	if err != nil {
		return res, err
	}
	if shared != nil {
		p, err := shared.wait()
		if err != nil {
			return res, err
		}
		res.Overlapped = []OverlappedPhase{p}
		err = inBlocks(ctx, len(c.sy), elemBlock, func(lo, hi int) {
			for i := lo; i < hi; i++ {
				c.out[i] += c.sy[i]
			}
		})
		if err != nil {
			return res, err
		}
	}
	if err := c.round(ctx, c.out); err != nil {
		return res, err
	}
	lap(PhaseCombine)
	return res, nil
}

// Poison fills the output with NaN.
func (c *CPU) Poison() error {
	if !c.prepared {
		return ErrNotPrepared
	}
	nan := float32NaN()
	for i := range c.out {
		c.out[i] = nan
	}
	// The shared experts' output too: their inputs do not change between
	// steps, so an output left from the last step would hide a missing join.
	for i := range c.sy {
		c.sy[i] = nan
	}
	return nil
}

// Output returns a copy of the last step's output.
func (c *CPU) Output() ([]float32, error) {
	if !c.prepared {
		return nil, ErrNotPrepared
	}
	return append([]float32(nil), c.out...), nil
}

// Routing returns the last step's router choice.
func (c *CPU) Routing() (Assignment, error) {
	if !c.prepared {
		return Assignment{}, ErrNotPrepared
	}
	return c.last, nil
}

// Logits returns the last routed step's router logits (before the bias).
func (c *CPU) Logits() ([]float32, error) {
	if !c.prepared {
		return nil, ErrNotPrepared
	}
	return append([]float32(nil), c.logits...), nil
}
