package cuda

import (
	"errors"
	"strings"
	"testing"
)

// tile2D is a valid description: a 100×200 row-major bf16 matrix moved
// in 32×64 tiles, as the TMA test kernel does.
func tile2D() TiledTensor {
	return TiledTensor{DataType: TensorBFloat16, Address: 0x7f0000000000, Dims: []uint64{200, 100},
		Strides: []uint64{400}, Box: []uint32{64, 32}, L2Promotion: L2Promotion128B}
}

func TestTensorMapValidationSaysWhatIsWrong(t *testing.T) {
	for _, c := range []struct {
		name string
		edit func(*TiledTensor)
		want string // "" = valid
	}{
		{"a row-major bf16 matrix in 32×64 tiles is valid", func(*TiledTensor) {}, ""},
		{"element strides of 1 are valid", func(x *TiledTensor) { x.ElementStrides = []uint32{1, 1} }, ""},
		{"a 64-element bf16 row fits a 128-byte swizzle", func(x *TiledTensor) { x.Swizzle = Swizzle128B }, ""},
		{"NaN fill of a float type is valid", func(x *TiledTensor) { x.OOBFill = OOBFillNaN }, ""},
		{"rank 1 with no strides is valid", func(x *TiledTensor) { x.Dims, x.Strides, x.Box = []uint64{64}, nil, []uint32{64} }, ""},
		{"no dimensions", func(x *TiledTensor) { x.Dims = nil }, "rank 0"},
		{"six dimensions", func(x *TiledTensor) { x.Dims = make([]uint64, 6) }, "rank 6"},
		{"an unknown data type", func(x *TiledTensor) { x.DataType = 99 }, "unknown data type"},
		{"an unaligned address", func(x *TiledTensor) { x.Address += 8 }, "16-byte aligned"},
		{"a null address", func(x *TiledTensor) { x.Address = 0 }, "aligned"},
		{"a stride in elements instead of bytes", func(x *TiledTensor) { x.Strides = []uint64{208} }, "strides are in bytes"},
		{"a stride not a multiple of 16", func(x *TiledTensor) { x.Strides = []uint64{408} }, "multiple of 16"},
		{"one stride per dimension instead of one fewer", func(x *TiledTensor) { x.Strides = []uint64{2, 400} }, "2 strides for rank 2"},
		{"a box of 257", func(x *TiledTensor) { x.Box = []uint32{64, 257} }, "1 to 256"},
		{"a box with a zero", func(x *TiledTensor) { x.Box = []uint32{64, 0} }, "1 to 256"},
		{"a box row of 20 bytes", func(x *TiledTensor) { x.Box = []uint32{10, 32} }, "multiple of 16"},
		{"a box row wider than its swizzle", func(x *TiledTensor) { x.Swizzle = Swizzle64B }, "wider than the 64-byte swizzle"},
		{"a dimension of zero", func(x *TiledTensor) { x.Dims = []uint64{200, 0} }, "1 to 2^32"},
		{"an element stride of 9", func(x *TiledTensor) { x.ElementStrides = []uint32{1, 9} }, "1 to 8"},
		{"interleave on a 2-D tensor", func(x *TiledTensor) { x.Interleave = Interleave16B }, "rank 3 or more"},
		{"NaN fill of an integer type", func(x *TiledTensor) { x.DataType, x.OOBFill = TensorUint16, OOBFillNaN }, "floating-point"},
		{"an unknown swizzle", func(x *TiledTensor) { x.Swizzle = 7 }, "unknown swizzle"},
	} {
		t.Run(c.name, func(t *testing.T) {
			x := tile2D()
			c.edit(&x)
			err := x.Validate()
			if c.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if !errors.Is(err, ErrTensorMap) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("got %v, want ErrTensorMap saying %q", err, c.want)
			}
		})
	}
}

func TestEncodeTiledRefusesABadTensorBeforeTheDriver(t *testing.T) {
	x := tile2D()
	x.Box = nil
	if _, err := EncodeTiled(x); !errors.Is(err, ErrTensorMap) {
		t.Fatalf("got %v, want ErrTensorMap", err)
	}
}

func TestTensorDataTypesKnowTheirSize(t *testing.T) {
	for dt, want := range map[TensorDataType]int{TensorUint8: 1, TensorBFloat16: 2, TensorFloat16: 2, TensorFloat32: 4, TensorInt64: 8} {
		if got := dt.Bytes(); got != want {
			t.Errorf("%v: %d bytes, want %d", dt, got, want)
		}
	}
	if s := TensorBFloat16.String(); s != "bfloat16" {
		t.Errorf("BFloat16 prints as %q", s)
	}
}
