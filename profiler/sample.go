package profiler

import (
	"time"

	"github.com/moetop/moetop/kernels"
	"github.com/moetop/moetop/stream"
)

// phaseNames maps the backends' phases to the stream's names.
var phaseNames = [kernels.NumPhases]string{
	kernels.PhaseRouter: stream.PhaseRouter, kernels.PhasePermute: stream.PhasePermute,
	kernels.PhaseGEMM1: stream.PhaseGEMM1, kernels.PhaseAct: stream.PhaseAct,
	kernels.PhaseGEMM2: stream.PhaseGEMM2, kernels.PhaseCombine: stream.PhaseCombine,
}

// PhasesOf converts a backend's durations into the stream's phase list on
// device.
func PhasesOf(d [kernels.NumPhases]time.Duration, device int) stream.Phases {
	p := make(stream.Phases, kernels.NumPhases)
	for i := range d {
		p[i] = stream.PhaseTime{Phase: phaseNames[i], Device: device, MS: float64(d[i]) / 1e6}
	}
	return p
}
