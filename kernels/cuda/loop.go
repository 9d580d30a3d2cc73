package cuda

import (
	"time"

	"github.com/moetop/moetop/kernels"
)

func init() {
	register(kernels.Registration{
		Name:  "loop",
		Doc:   "cublasGemmEx per expert; a repeated load is replayed as a CUDA graph",
		Order: 20,
		// One GemmEx pair over all rows is a plain dense GEMM pair: the
		// reference the view's "% of dense" divides by.
		Dense: true,
		Plan:  loopPlan,
	}, func() runner { return &loop{} })
}

// loopPlan: the dense rows and one handle.
func loopPlan(s kernels.Shape, _ []int) ([]kernels.Buffer, error) {
	b := append(gpuCommon(s), kernels.DenseRows(s, uint64(s.DType.Size()))...)
	return append(b, kernels.Workspaces(1), kernels.Handles(1)), nil
}

// loop is the founding report's kernel 1: cublasGemmEx once per expert.
type loop struct{ ev expertEvents }

func (l *loop) timesExperts() bool          { return true }
func (l *loop) graphable() bool             { return true }
func (l *loop) buffers() []kernels.BufferID { return nil }

func (l *loop) setup(b *Backend) error {
	if b.opts.TimeExperts {
		return l.ev.create(b.s.Experts)
	}
	return nil
}

func (l *loop) gemm(b *Backend, second bool) error {
	g := 0
	if second {
		g = 1
	}
	for e, rows := range b.counts {
		if rows == 0 {
			continue
		}
		if err := l.ev.mark(b.timing, l.ev.start[g], e, b.stream); err != nil {
			return err
		}
		n, k, ldx, x, w, y := b.operands(e, second)
		if err := b.gemmEx(b.handle, rows, n, k, ldx, x, w, y); err != nil {
			return err
		}
		if err := l.ev.mark(b.timing, l.ev.end[g], e, b.stream); err != nil {
			return err
		}
	}
	return nil
}

func (l *loop) expertTimes(b *Backend) ([]time.Duration, error) { return l.ev.times(b.counts) }
func (l *loop) teardown(b *Backend)                             { l.ev.destroy(b.rel) }
