package kernels

import (
	"fmt"
	"math"
	"strings"
)

// DType is the storage type of activations and weights.
type DType int

const (
	BF16 DType = iota
	FP16
	FP32
	// TF32 stores float32 and multiplies on the tensor cores in TF32.
	TF32
)

var dtypeNames = []string{"bf16", "fp16", "fp32", "tf32"}

func (d DType) String() string {
	if int(d) < 0 || int(d) >= len(dtypeNames) {
		return fmt.Sprintf("dtype(%d)", int(d))
	}
	return dtypeNames[d]
}

// ParseDType reads a dtype name.
func ParseDType(s string) (DType, error) {
	for i, n := range dtypeNames {
		if strings.EqualFold(s, n) {
			return DType(i), nil
		}
	}
	return 0, fmt.Errorf("unknown dtype %q (want one of %s)", s, strings.Join(dtypeNames, ", "))
}

// Size is the bytes one element takes in device memory.
func (d DType) Size() int {
	if d == BF16 || d == FP16 {
		return 2
	}
	return 4
}

// Tolerance is the relative error (‖out−ref‖/‖ref‖) a GPU result of this
// dtype must stay under against the float32 reference on the same rounded
// inputs. bf16 keeps 8 bits of mantissa, so two GEMMs and an activation whose
// intermediates are rounded land near 4e-3; fp16 keeps 11.
func (d DType) Tolerance() float64 {
	switch d {
	case BF16:
		return 2e-2
	case FP16:
		return 5e-3
	case TF32:
		return 5e-3
	default:
		return 1e-4
	}
}

// MarshalText makes DType a JSON string.
func (d DType) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

// UnmarshalText reads a JSON string.
func (d *DType) UnmarshalText(b []byte) error {
	v, err := ParseDType(string(b))
	if err != nil {
		return err
	}
	*d = v
	return nil
}

// Round returns v as stored in d and read back: what a GPU of that dtype
// sees, so that the reference computes on the same inputs.
func (d DType) Round(v float32) float32 {
	switch d {
	case BF16:
		return BF16ToFloat(FloatToBF16(v))
	case FP16:
		return HalfToFloat(FloatToHalf(v))
	}
	return v
}

// FloatToBF16 rounds to nearest even, as the CUDA kernels do.
func FloatToBF16(f float32) uint16 {
	u := math.Float32bits(f)
	if u&0x7fffffff > 0x7f800000 { // NaN stays NaN
		return uint16(u>>16) | 0x40
	}
	u += 0x7fff + (u>>16)&1
	return uint16(u >> 16)
}

// BF16ToFloat widens exactly.
func BF16ToFloat(h uint16) float32 { return math.Float32frombits(uint32(h) << 16) }

// FloatToHalf rounds to nearest even IEEE binary16.
func FloatToHalf(f float32) uint16 {
	u := math.Float32bits(f)
	sign := uint16(u>>16) & 0x8000
	exp := int32(u>>23&0xff) - 127 + 15
	man := u & 0x7fffff
	switch {
	case u&0x7fffffff > 0x7f800000:
		return sign | 0x7e00
	case u&0x7fffffff == 0x7f800000 || exp >= 31:
		return sign | 0x7c00
	case exp <= 0:
		if exp < -10 {
			return sign
		}
		man |= 0x800000
		shift := uint32(14 - exp)
		half := man >> shift
		rem := man & (1<<shift - 1)
		mid := uint32(1) << (shift - 1)
		if rem > mid || (rem == mid && half&1 == 1) {
			half++
		}
		return sign | uint16(half)
	}
	half := uint32(exp)<<10 | man>>13
	rem := man & 0x1fff
	if rem > 0x1000 || (rem == 0x1000 && half&1 == 1) {
		half++ // may carry into the exponent, which is still right
	}
	return sign | uint16(half)
}

// HalfToFloat widens exactly.
func HalfToFloat(h uint16) float32 {
	sign := uint32(h&0x8000) << 16
	exp := uint32(h>>10) & 0x1f
	man := uint32(h & 0x3ff)
	switch {
	case exp == 0:
		if man == 0 {
			return math.Float32frombits(sign)
		}
		f := float32(man) / 1024 / 16384
		if sign != 0 {
			f = -f
		}
		return f
	case exp == 31:
		return math.Float32frombits(sign | 0x7f800000 | man<<13)
	}
	return math.Float32frombits(sign | (exp+112)<<23 | man<<13)
}

// Activation is the expert FFN's nonlinearity. The gated forms (GLU
// variants) make gemm1 twice as wide: each row of h holds the gate's F
// columns then the up projection's F, and the activation writes
// act(gate) ⊙ up, F columns, over the gate's half (see ActivateRows).
type Activation int

const (
	GELU Activation = iota
	SiLU
	// SwiGLU is silu(x·Wg) ⊙ x·Wu: Mixtral, Qwen, DeepSeek, gpt-oss.
	SwiGLU
	// GeGLU is gelu(x·Wg) ⊙ x·Wu (erf GELU, as GELU).
	GeGLU
	numActivations
)

var activationNames = [numActivations]string{"gelu", "silu", "swiglu", "geglu"}

// ActivationNames lists the accepted spellings, for help and errors.
func ActivationNames() []string { return append([]string(nil), activationNames[:]...) }

func (a Activation) String() string {
	if a < 0 || a >= numActivations {
		return fmt.Sprintf("activation(%d)", int(a))
	}
	return activationNames[a]
}

// Valid says a is one of the known activations.
func (a Activation) Valid() bool { return a >= 0 && a < numActivations }

// Gated says the activation multiplies a gate by an up projection.
func (a Activation) Gated() bool { return a == SwiGLU || a == GeGLU }

// SiLUBased says the nonlinearity (of the gate, when gated) is SiLU, not GELU.
func (a Activation) SiLUBased() bool { return a == SiLU || a == SwiGLU }

// Columns is gemm1's output width for an FFN f wide: 2f when gated (gate
// and up side by side), else f.
func (a Activation) Columns(f int) int {
	if a.Gated() {
		return 2 * f
	}
	return f
}

// ParseActivation reads an activation's name.
func ParseActivation(s string) (Activation, error) {
	for i, n := range activationNames {
		if strings.EqualFold(s, n) {
			return Activation(i), nil
		}
	}
	return 0, fmt.Errorf("unknown activation %q (want one of %s)", s, strings.Join(activationNames[:], ", "))
}

// MarshalText makes Activation a JSON string.
func (a Activation) MarshalText() ([]byte, error) {
	if !a.Valid() {
		return nil, fmt.Errorf("cannot marshal %v", a)
	}
	return []byte(a.String()), nil
}

// UnmarshalText reads a JSON string.
func (a *Activation) UnmarshalText(b []byte) error {
	v, err := ParseActivation(string(b))
	if err != nil {
		return err
	}
	*a = v
	return nil
}
