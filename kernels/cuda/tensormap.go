package cuda

/*
#include "calls.h"
*/
import "C"

import (
	"errors"
	"fmt"
	"unsafe"
)

// TensorMap is an encoded CUtensorMap: the descriptor a TMA copy
// (cp.async.bulk.tensor) reads, opaque, 128 bytes. Pass it to a kernel by
// value with Args.TensorMap, to a `const __grid_constant__` parameter.
type TensorMap [128]byte

// TensorDataType is CUtensorMapDataType.
type TensorDataType int32

// CUtensorMapDataType values (cuda.h).
const (
	TensorUint8       TensorDataType = 0  // CU_TENSOR_MAP_DATA_TYPE_UINT8
	TensorUint16      TensorDataType = 1  // CU_TENSOR_MAP_DATA_TYPE_UINT16
	TensorUint32      TensorDataType = 2  // CU_TENSOR_MAP_DATA_TYPE_UINT32
	TensorInt32       TensorDataType = 3  // CU_TENSOR_MAP_DATA_TYPE_INT32
	TensorUint64      TensorDataType = 4  // CU_TENSOR_MAP_DATA_TYPE_UINT64
	TensorInt64       TensorDataType = 5  // CU_TENSOR_MAP_DATA_TYPE_INT64
	TensorFloat16     TensorDataType = 6  // CU_TENSOR_MAP_DATA_TYPE_FLOAT16
	TensorFloat32     TensorDataType = 7  // CU_TENSOR_MAP_DATA_TYPE_FLOAT32
	TensorFloat64     TensorDataType = 8  // CU_TENSOR_MAP_DATA_TYPE_FLOAT64
	TensorBFloat16    TensorDataType = 9  // CU_TENSOR_MAP_DATA_TYPE_BFLOAT16
	TensorFloat32FTZ  TensorDataType = 10 // CU_TENSOR_MAP_DATA_TYPE_FLOAT32_FTZ
	TensorTFloat32    TensorDataType = 11 // CU_TENSOR_MAP_DATA_TYPE_TFLOAT32
	TensorTFloat32FTZ TensorDataType = 12 // CU_TENSOR_MAP_DATA_TYPE_TFLOAT32_FTZ
)

var tensorTypeInfo = map[TensorDataType]struct {
	name  string
	bytes int
	float bool
}{
	TensorUint8: {"uint8", 1, false}, TensorUint16: {"uint16", 2, false}, TensorUint32: {"uint32", 4, false},
	TensorInt32: {"int32", 4, false}, TensorUint64: {"uint64", 8, false}, TensorInt64: {"int64", 8, false},
	TensorFloat16: {"float16", 2, true}, TensorFloat32: {"float32", 4, true}, TensorFloat64: {"float64", 8, true},
	TensorBFloat16: {"bfloat16", 2, true}, TensorFloat32FTZ: {"float32-ftz", 4, true},
	TensorTFloat32: {"tfloat32", 4, true}, TensorTFloat32FTZ: {"tfloat32-ftz", 4, true},
}

func (t TensorDataType) String() string {
	if i, ok := tensorTypeInfo[t]; ok {
		return i.name
	}
	return fmt.Sprintf("TensorDataType(%d)", int32(t))
}

// Bytes is the size of one element.
func (t TensorDataType) Bytes() int { return tensorTypeInfo[t].bytes }

// Interleave is CUtensorMapInterleave.
type Interleave int32

const (
	InterleaveNone Interleave = 0 // CU_TENSOR_MAP_INTERLEAVE_NONE
	Interleave16B  Interleave = 1 // CU_TENSOR_MAP_INTERLEAVE_16B
	Interleave32B  Interleave = 2 // CU_TENSOR_MAP_INTERLEAVE_32B
)

// Swizzle is CUtensorMapSwizzle: how a tile's 16-byte chunks are permuted
// in shared memory, so that wgmma reads it without bank conflicts.
type Swizzle int32

const (
	SwizzleNone Swizzle = 0 // CU_TENSOR_MAP_SWIZZLE_NONE
	Swizzle32B  Swizzle = 1 // CU_TENSOR_MAP_SWIZZLE_32B
	Swizzle64B  Swizzle = 2 // CU_TENSOR_MAP_SWIZZLE_64B
	Swizzle128B Swizzle = 3 // CU_TENSOR_MAP_SWIZZLE_128B
)

// span is the bytes of the swizzle pattern; a tile's inner row may not be
// wider.
func (s Swizzle) span() int {
	return map[Swizzle]int{Swizzle32B: 32, Swizzle64B: 64, Swizzle128B: 128}[s]
}

// L2Promotion is CUtensorMapL2promotion: the L2 sector size fetched.
type L2Promotion int32

const (
	L2PromotionNone L2Promotion = 0 // CU_TENSOR_MAP_L2_PROMOTION_NONE
	L2Promotion64B  L2Promotion = 1 // CU_TENSOR_MAP_L2_PROMOTION_L2_64B
	L2Promotion128B L2Promotion = 2 // CU_TENSOR_MAP_L2_PROMOTION_L2_128B
	L2Promotion256B L2Promotion = 3 // CU_TENSOR_MAP_L2_PROMOTION_L2_256B
)

// OOBFill is CUtensorMapFloatOOBfill: what a tile holds where it reaches
// past the tensor.
type OOBFill int32

const (
	OOBFillZero OOBFill = 0 // CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE: zeros
	OOBFillNaN  OOBFill = 1 // CU_TENSOR_MAP_FLOAT_OOB_FILL_NAN_REQUEST_ZERO_FMA (float types only)
)

// TiledTensor describes a tensor in global memory and the tile (box) one
// TMA copy moves, for cuTensorMapEncodeTiled. Dimension 0 is the innermost
// (contiguous) one: a row-major rows×cols matrix is Dims {cols, rows},
// Strides {cols·elementBytes}.
type TiledTensor struct {
	DataType TensorDataType
	Address  DevicePtr // 16-byte aligned (32 with Interleave32B)
	Dims     []uint64  // elements per dimension, 1 to 5 of them
	// Strides are the bytes from one index to the next of dimensions
	// 1…rank−1 (dimension 0 is contiguous): rank−1 values, multiples of 16.
	Strides []uint64
	Box     []uint32 // tile elements per dimension, 1 to 256 each
	// ElementStrides step through the box (1 to 8); nil means all 1.
	ElementStrides []uint32
	Interleave     Interleave
	Swizzle        Swizzle
	L2Promotion    L2Promotion
	OOBFill        OOBFill
}

// ErrTensorMap is a tensor description cuTensorMapEncodeTiled would refuse.
var ErrTensorMap = errors.New("bad tensor map")

// Validate checks the rules cuTensorMapEncodeTiled documents, so that a bad
// description fails with a sentence rather than CUDA_ERROR_INVALID_VALUE.
func (t TiledTensor) Validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrTensorMap, fmt.Sprintf(format, args...))
	}
	info, ok := tensorTypeInfo[t.DataType]
	if !ok {
		return bad("unknown data type %d", t.DataType)
	}
	rank := len(t.Dims)
	if rank < 1 || rank > 5 {
		return bad("rank %d: a tensor map has 1 to 5 dimensions", rank)
	}
	if t.Interleave != InterleaveNone && rank < 3 {
		return bad("interleaved layouts need rank 3 or more, not %d", rank)
	}
	if t.Interleave < InterleaveNone || t.Interleave > Interleave32B {
		return bad("unknown interleave %d", t.Interleave)
	}
	if t.Swizzle < SwizzleNone || t.Swizzle > Swizzle128B {
		return bad("unknown swizzle %d", t.Swizzle)
	}
	if t.L2Promotion < L2PromotionNone || t.L2Promotion > L2Promotion256B {
		return bad("unknown L2 promotion %d", t.L2Promotion)
	}
	if t.OOBFill != OOBFillZero && t.OOBFill != OOBFillNaN {
		return bad("unknown out-of-bounds fill %d", t.OOBFill)
	}
	if t.OOBFill == OOBFillNaN && !info.float {
		return bad("NaN fill needs a floating-point type, not %v", t.DataType)
	}
	align := uint64(16)
	if t.Interleave == Interleave32B {
		align = 32
	}
	if t.Address == 0 || uint64(t.Address)%align != 0 {
		return bad("address %#x is not %d-byte aligned", uint64(t.Address), align)
	}
	if len(t.Strides) != rank-1 {
		return bad("%d strides for rank %d: give one per dimension after the first", len(t.Strides), rank)
	}
	if len(t.Box) != rank {
		return bad("%d box sizes for rank %d", len(t.Box), rank)
	}
	if t.ElementStrides != nil && len(t.ElementStrides) != rank {
		return bad("%d element strides for rank %d", len(t.ElementStrides), rank)
	}
	for i, d := range t.Dims {
		if d == 0 || d > 1<<32 {
			return bad("dimension %d has %d elements: 1 to 2^32", i, d)
		}
	}
	for i, s := range t.Strides {
		if s%align != 0 || s >= 1<<40 {
			return bad("stride %d is %d bytes: a multiple of %d below 2^40", i+1, s, align)
		}
	}
	if rank > 1 && t.Strides[0] < t.Dims[0]*uint64(info.bytes) {
		return bad("stride 1 is %d bytes, less than a row of %d %v elements (strides are in bytes)", t.Strides[0], t.Dims[0], t.DataType)
	}
	for i, b := range t.Box {
		if b == 0 || b > 256 {
			return bad("box dimension %d is %d: 1 to 256", i, b)
		}
	}
	inner := int(t.Box[0]) * info.bytes
	if t.Interleave == InterleaveNone {
		if inner%16 != 0 {
			return bad("the box's inner dimension is %d bytes: a multiple of 16 without interleave", inner)
		}
		if span := t.Swizzle.span(); span != 0 && inner > span {
			return bad("the box's inner dimension is %d bytes, wider than the %d-byte swizzle", inner, span)
		}
	}
	for i, e := range t.ElementStrides {
		if e == 0 || e > 8 {
			return bad("element stride %d is %d: 1 to 8", i, e)
		}
	}
	return nil
}

// EncodeTiled validates t and encodes it with cuTensorMapEncodeTiled (CUDA
// 12.0+ driver). No context needs to be current.
func EncodeTiled(t TiledTensor) (TensorMap, error) {
	var m TensorMap
	if err := t.Validate(); err != nil {
		return m, err
	}
	if err := needSymbol(C.cu.cuTensorMapEncodeTiled != nil, "cuTensorMapEncodeTiled", "a CUDA 12.0 driver"); err != nil {
		return m, err
	}
	es := t.ElementStrides
	if es == nil {
		es = []uint32{1, 1, 1, 1, 1}[:len(t.Dims)]
	}
	// The driver reads strides even for rank 1; give it a valid array.
	strides := append(append([]uint64(nil), t.Strides...), 0)
	r := C.moetop_encode_tiled(unsafe.Pointer(&m[0]), C.int(t.DataType), C.cuuint32_t(len(t.Dims)), C.CUdeviceptr(t.Address),
		(*C.cuuint64_t)(unsafe.Pointer(&t.Dims[0])), (*C.cuuint64_t)(unsafe.Pointer(&strides[0])),
		(*C.cuuint32_t)(unsafe.Pointer(&t.Box[0])), (*C.cuuint32_t)(unsafe.Pointer(&es[0])),
		C.int(t.Interleave), C.int(t.Swizzle), C.int(t.L2Promotion), C.int(t.OOBFill))
	if err := check(fmt.Sprintf("cuTensorMapEncodeTiled(%v, dims %v, box %v)", t.DataType, t.Dims, t.Box), r); err != nil {
		return TensorMap{}, err
	}
	return m, nil
}
