package cuda

/*
#include "calls.h"
*/
import "C"

import "time"

// expertEvents times each expert's GEMMs with a start and an end event per
// expert and GEMM, which stays right when experts run on several streams.
type expertEvents struct {
	start, end [2][]C.CUevent
}

func (t *expertEvents) create(experts int) error {
	for g := 0; g < 2; g++ {
		t.start[g], t.end[g] = make([]C.CUevent, experts), make([]C.CUevent, experts)
		for e := 0; e < experts; e++ {
			if err := check("cuEventCreate", C.call_cuEventCreate(&t.start[g][e], 0)); err != nil {
				return err
			}
			if err := check("cuEventCreate", C.call_cuEventCreate(&t.end[g][e], 0)); err != nil {
				return err
			}
		}
	}
	return nil
}

func (t *expertEvents) destroy(r *releaser) {
	for g := 0; g < 2; g++ {
		r.events(t.start[g])
		r.events(t.end[g])
		t.start[g], t.end[g] = nil, nil
	}
}

func (t *expertEvents) active() bool { return t.start[0] != nil }

func (t *expertEvents) mark(on bool, evs []C.CUevent, e int, s C.CUstream) error {
	if !on || evs == nil {
		return nil
	}
	return check("cuEventRecord(expert)", C.call_cuEventRecord(evs[e], s))
}

// times sums gemm1 and gemm2 per expert; experts with no rows get 0.
func (t *expertEvents) times(counts []int) ([]time.Duration, error) {
	if !t.active() {
		return nil, nil
	}
	out := make([]time.Duration, len(counts))
	for g := 0; g < 2; g++ {
		for e, c := range counts {
			if c == 0 {
				continue
			}
			var ms C.float
			if err := check("cuEventElapsedTime(expert)", C.call_cuEventElapsedTime(&ms, t.start[g][e], t.end[g][e])); err != nil {
				return nil, err
			}
			out[e] += time.Duration(float64(ms) * 1e6)
		}
	}
	return out, nil
}

// phaseSpan waits for event to and returns the milliseconds from event
// from to it: for benchmarks that time calls between the step's events.
func (b *Backend) phaseSpan(from, to int) (float64, error) {
	if err := check("cuEventSynchronize", C.call_cuEventSynchronize(b.events[to])); err != nil {
		return 0, err
	}
	var ms C.float
	err := check("cuEventElapsedTime", C.call_cuEventElapsedTime(&ms, b.events[from], b.events[to]))
	return float64(ms), err
}
