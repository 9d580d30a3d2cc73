package kernels

import "math"

// Tensors whose contents Fill generates. The GPU kernels compute the same
// values on the device (kernels/cuda/layer.cu), so the CPU reference and a GPU
// backend see identical inputs without copying gigabytes of weights.
const (
	TensorX      = 1
	TensorRouter = 2
	TensorW1     = 3
	TensorW2     = 4
	// The shared experts' weights: hidden × gemm1 columns, width × hidden.
	TensorSharedW1 = 5
	TensorSharedW2 = 6
)

// mix is splitmix64's finaliser: a counter-based generator needs no state,
// so any element can be computed independently on any device.
func mix(z uint64) uint64 {
	z += 0x9e3779b97f4a7c15
	z = (z ^ z>>30) * 0xbf58476d1ce4e5b9
	z = (z ^ z>>27) * 0x94d049bb133111eb
	return z ^ z>>31
}

// Fill returns element i of tensor t for seed: uniform on [-√3·scale, √3·scale)
// so that the variance is scale².
func Fill(seed uint64, t uint32, i uint64, scale float32) float32 {
	h := mix(seed ^ mix(uint64(t)<<40^i))
	u := float32(h>>40) * (1.0 / (1 << 24)) // [0,1) with 24 bits, exact in float32
	return (2*u - 1) * 1.7320508 * scale
}

// FillSlice fills dst with elements [0, len(dst)) of tensor t, rounded to d.
func FillSlice(dst []float32, seed uint64, t uint32, scale float32, d DType) {
	for i := range dst {
		dst[i] = d.Round(Fill(seed, t, uint64(i), scale))
	}
}

// Scales keep every layer's output near unit variance.
func ScaleX() float32                { return 1 }
func ScaleRouter(hidden int) float32 { return float32(1 / math.Sqrt(float64(hidden))) }
func ScaleW1(hidden int) float32     { return float32(1 / math.Sqrt(float64(hidden))) }
func ScaleW2(ffn int) float32        { return float32(1 / math.Sqrt(float64(ffn))) }

func float32NaN() float32 { return float32(math.NaN()) }
