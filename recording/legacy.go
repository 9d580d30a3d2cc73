package recording

import (
	"encoding/json"

	"github.com/moetop/moetop/stream"
)

// moetop/1 wrote a fixed six phases as an object and one memory section;
// moetop/2 lists phases with a device and memory per device. Everything
// else kept its name and meaning, so a v1 line decodes into the v2 sample
// with these two fields read the old way.

// phasesV1 is moetop/1's "phases_ms".
type phasesV1 struct {
	Router  float64 `json:"router"`
	Permute float64 `json:"permute"`
	GEMM1   float64 `json:"gemm1"`
	Act     float64 `json:"act"`
	GEMM2   float64 `json:"gemm2"`
	Combine float64 `json:"combine"`
}

// sampleV1 shadows the fields moetop/1 spelled differently: encoding/json
// prefers the shallower field of the same name.
type sampleV1 struct {
	stream.Sample
	PhasesMS *phasesV1      `json:"phases_ms"`
	Memory   *stream.Memory `json:"memory"`
}

// decodeSample reads a sample line of the given schema major version.
func decodeSample(line []byte, major int) (stream.Sample, error) {
	if major >= 2 {
		var s stream.Sample
		err := json.Unmarshal(line, &s)
		return s, err
	}
	var v sampleV1
	if err := json.Unmarshal(line, &v); err != nil {
		return stream.Sample{}, err
	}
	s := v.Sample
	if p := v.PhasesMS; p != nil {
		ms := []float64{p.Router, p.Permute, p.GEMM1, p.Act, p.GEMM2, p.Combine}
		s.Phases = make(stream.Phases, len(ms))
		for i, name := range stream.LayerPhases {
			s.Phases[i] = stream.PhaseTime{Phase: name, MS: ms[i]}
		}
	}
	if v.Memory != nil {
		s.Memory = []stream.Memory{*v.Memory}
	}
	return s, nil
}
