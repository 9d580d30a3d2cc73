package stream

import "time"

// Header describes a run: the first line of a log and the view's title.
type Header struct {
	Schema  string `json:"schema"`
	Version string `json:"moetop_version"`
	Host    string `json:"host"`
	// Device names what the layer runs on, as a person reads it.
	Device string `json:"device"`
	Driver string `json:"driver,omitempty"`
	CUDA   string `json:"cuda,omitempty"`
	CUBLAS string `json:"cublas,omitempty"`
	// Devices identifies each GPU of the run, in rank order (empty on the
	// CPU and in moetop/1 logs).
	Devices []DeviceID `json:"devices,omitempty"`
	Backend string     `json:"backend"`
	// BackendReason says why this backend runs (auto's calibration, or
	// why there is no GPU).
	BackendReason string    `json:"backend_reason,omitempty"`
	Config        Layer     `json:"config"`
	Start         time.Time `json:"start"`
	// DenseGEMMTFLOPS is a dense GEMM pair of the layer's FLOPs and
	// ReadGBps a read-mostly kernel's bandwidth, timed at start on the GPU
	// (0: not measured): the roofline's two ceilings.
	DenseGEMMTFLOPS float64 `json:"dense_gemm_tflops,omitempty"`
	ReadGBps        float64 `json:"read_gbps,omitempty"`
	// PeakTFLOPS is a large dense GEMM's rate, the card's compute ceiling:
	// a decode-sized layer's own dense GEMM pair is bound by memory and
	// would put the ceiling far too low.
	PeakTFLOPS float64 `json:"peak_tflops,omitempty"`
	// AllToAllGBps is the expert-parallel ranks' all-to-all ceiling: an
	// NCCL all-to-all of AllToAllBytes per rank between the run's GPUs,
	// measured at start, in nccl-tests' bus bandwidth (GB/s, 1e9 B/s: the
	// bytes that cross between ranks over the time, algbw × (n−1)/n), the
	// convention of a rank's dispatch and combine GB/s. 0: not measured
	// (CPU ranks, one rank, logs before it).
	AllToAllGBps  float64 `json:"alltoall_gbps,omitempty"`
	AllToAllBytes int64   `json:"alltoall_bytes,omitempty"`
	// Ranks is the number of expert-parallel ranks (0: not expert
	// parallel) and Placement each expert's ranks (absent: contiguous
	// blocks).
	Ranks     int     `json:"ranks,omitempty"`
	Placement [][]int `json:"placement,omitempty"`
	// Weights is the format a --model preset's weights are published in
	// (e.g. fp8-e4m3-block128), where moetop runs them in another dtype;
	// Notes say what of the model moetop does not model.
	Weights string   `json:"weights,omitempty"`
	Notes   []string `json:"notes,omitempty"`
	// Part numbers the files of a rotated recording (0: the first).
	Part int `json:"part,omitempty"`
}

// DeviceID ties a CUDA ordinal to the NVML device that reads it: the two
// numberings differ when CUDA_VISIBLE_DEVICES or the PCI order says so.
type DeviceID struct {
	// Rank is the device's place in the run (0 on a single GPU).
	Rank     int    `json:"rank"`
	CUDA     int    `json:"cuda"`
	NVML     int    `json:"nvml"`
	UUID     string `json:"uuid,omitempty"`
	PCIBusID string `json:"pci_bus_id,omitempty"`
	Name     string `json:"name,omitempty"`
}

// ComputeCeiling is the roofline's compute ceiling in TFLOP/s: the card's
// peak where it was measured, else the layer's dense GEMM pair (logs that
// predate the peak).
func (h Header) ComputeCeiling() float64 {
	if h.PeakTFLOPS > 0 {
		return h.PeakTFLOPS
	}
	return h.DenseGEMMTFLOPS
}
