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
	last          Assignment
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
	t, h, f, e, r := s.Tokens, s.Hidden, s.FFN, s.Experts, s.Rows()
	c.x = make([]float32, t*h)
	c.wg = make([]float32, h*e)
	c.w1 = make([]float32, e*h*f)
	c.w2 = make([]float32, e*f*h)
	c.logits = make([]float32, t*e)
	c.xp = make([]float32, r*h)
	c.h = make([]float32, r*f)
	c.y = make([]float32, r*h)
	c.out = make([]float32, t*h)
	FillSlice(c.x, s.Seed, TensorX, ScaleX(), s.DType)
	FillSlice(c.wg, s.Seed, TensorRouter, ScaleRouter(h), s.DType)
	if err := ctx.Err(); err != nil {
		return err
	}
	FillSlice(c.w1, s.Seed, TensorW1, ScaleW1(h), s.DType)
	FillSlice(c.w2, s.Seed, TensorW2, ScaleW2(f), s.DType)
	c.s = s
	c.prepared = true
	return ctx.Err()
}

func (c *CPU) release() {
	*c = CPU{MemAvailable: c.MemAvailable}
}

// Close releases the buffers.
func (c *CPU) Close() error { c.release(); return nil }

func (c *CPU) round(v []float32) {
	if c.s.DType == BF16 || c.s.DType == FP16 {
		for i, x := range v {
			v[i] = c.s.DType.Round(x)
		}
	}
}

func general(rows, cols int, data []float32) blas32.General {
	return blas32.General{Rows: rows, Cols: cols, Stride: cols, Data: data[:rows*cols]}
}

// Step runs one forward pass.
func (c *CPU) Step(ctx context.Context, in StepInput) (StepResult, error) {
	if !c.prepared {
		return StepResult{}, ErrNotPrepared
	}
	s := c.s
	t, h, f, e, k := s.Tokens, s.Hidden, s.FFN, s.Experts, s.TopK
	var res StepResult
	if in.Bias != nil && len(in.Bias) != e {
		return res, fmt.Errorf("router bias has %d values, want %d experts", len(in.Bias), e)
	}
	mark := time.Now()
	lap := func(p Phase) {
		now := time.Now()
		res.Phases[p] = now.Sub(mark)
		mark = now
	}

	var a Assignment
	if in.Fixed != nil {
		if len(in.Fixed.IDs) != t*k || len(in.Fixed.Weights) != t*k {
			return res, fmt.Errorf("fixed assignment has %d ids, want tokens×top-k = %d", len(in.Fixed.IDs), t*k)
		}
		a = *in.Fixed
	} else {
		blas32.Gemm(blas.NoTrans, blas.NoTrans, 1, general(t, h, c.x), general(h, e, c.wg), 0, general(t, e, c.logits))
		a = Route(c.logits, t, e, k, in.Bias)
	}
	c.last = a
	lap(PhaseRouter)

	p, err := Permute(a, t, k, e)
	if err != nil {
		return res, err
	}
	for r, tok := range p.Token {
		copy(c.xp[r*h:(r+1)*h], c.x[int(tok)*h:(int(tok)+1)*h])
	}
	res.Rows = p.Counts
	lap(PhasePermute)
	if err := ctx.Err(); err != nil {
		return res, err
	}

	res.ExpertGEMM = make([]time.Duration, e)
	for ex := 0; ex < e; ex++ {
		n := p.Counts[ex]
		if n == 0 {
			continue
		}
		t0 := time.Now()
		o := p.Offsets[ex]
		blas32.Gemm(blas.NoTrans, blas.NoTrans, 1, general(n, h, c.xp[o*h:]),
			general(h, f, c.w1[ex*h*f:]), 0, general(n, f, c.h[o*f:]))
		res.ExpertGEMM[ex] += time.Since(t0)
	}
	c.round(c.h)
	lap(PhaseGEMM1)

	Activate(c.h, s.Act)
	c.round(c.h)
	lap(PhaseAct)
	if err := ctx.Err(); err != nil {
		return res, err
	}

	for ex := 0; ex < e; ex++ {
		n := p.Counts[ex]
		if n == 0 {
			continue
		}
		t0 := time.Now()
		o := p.Offsets[ex]
		blas32.Gemm(blas.NoTrans, blas.NoTrans, 1, general(n, f, c.h[o*f:]),
			general(f, h, c.w2[ex*f*h:]), 0, general(n, h, c.y[o*h:]))
		res.ExpertGEMM[ex] += time.Since(t0)
	}
	c.round(c.y)
	lap(PhaseGEMM2)

	Combine(c.out, c.y, a, p, t, k, h)
	c.round(c.out)
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
