package cuda

import "time"

// loop is the founding report's kernel 1: cublasGemmEx once per expert.
type loop struct{ ev expertEvents }

func (l *loop) timesExperts() bool { return true }
func (l *loop) graphable() bool    { return true }

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
		n, k, x, w, y := b.operands(e, second)
		if err := b.gemmEx(b.handle, rows, n, k, x, w, y); err != nil {
			return err
		}
		if err := l.ev.mark(b.timing, l.ev.end[g], e, b.stream); err != nil {
			return err
		}
	}
	return nil
}

func (l *loop) expertTimes(b *Backend) ([]time.Duration, error) { return l.ev.times(b.counts) }
func (l *loop) teardown(*Backend)                               { l.ev.destroy() }
