package cuda

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"errors"
	"math"
	"strings"
	"testing"
)

// Go mirrors of testkernels.cu's structs: Value lays them out as C does.
type three struct{ B [3]uint8 }
type mixed struct {
	I int32
	J int64
	F float32
}

// The argument lists the GPU tests pass, shared with the layout test
// below, which checks them against the compiler's own parameter table.
func tmaArgs(m *TensorMap, out DevicePtr, rows, cols int, oob DevicePtr) *Args {
	return new(Args).TensorMap(m).Ptr(out).Int(rows).Int(cols).Ptr(oob)
}

func bigSmemArgs(in, out, where DevicePtr, words int) *Args {
	return new(Args).Ptr(in).Ptr(out).Ptr(where).Int(words)
}

func clusterArgs(in, out, rankOf DevicePtr) *Args { return new(Args).Ptr(in).Ptr(out).Ptr(rankOf) }

// echo_params's arguments and the words it must write back.
var echoIn = struct {
	a uint8
	b int16
	c three
	d float64
	m mixed
	e float32
	h uint16
}{0xAB, -12345, three{[3]uint8{1, 2, 3}}, math.Pi, mixed{-7, 1 << 40, 2.5}, -0.75, 0xBEEF}

func echoArgs(out DevicePtr) *Args {
	a := new(Args).U8(echoIn.a).U16(uint16(echoIn.b))
	Value(a, echoIn.c)
	a.F64(echoIn.d)
	Value(a, echoIn.m)
	return a.F32(echoIn.e).U16(echoIn.h).Ptr(out)
}

func echoWant() []uint64 {
	e := echoIn
	return []uint64{uint64(e.a), uint64(int64(e.b)), 0x030201, math.Float64bits(e.d), uint64(int64(e.m.I)),
		uint64(e.m.J), uint64(math.Float32bits(e.m.F)), uint64(math.Float32bits(e.e)), uint64(e.h)}
}

func TestArgsLayOutEachValueAtItsAlignment(t *testing.T) {
	var m TensorMap
	for i := range m {
		m[i] = byte(i)
	}
	for _, c := range []struct {
		name         string
		args         *Args
		offs, sizes  []uint32
		firstBytes   []byte // the buffer's start, where it says something
		wantErr      string
		wantBufBytes int
	}{
		{name: "an int after a byte is padded to 4", args: new(Args).U8(1).I32(-1),
			offs: []uint32{0, 4}, sizes: []uint32{1, 4}, firstBytes: []byte{1, 0, 0, 0, 0xff, 0xff, 0xff, 0xff}},
		{name: "a pointer after an int is padded to 8", args: new(Args).I32(7).Ptr(0x1122334455667788),
			offs: []uint32{0, 8}, sizes: []uint32{4, 8}, firstBytes: []byte{7, 0, 0, 0, 0, 0, 0, 0, 0x88, 0x77}},
		{name: "a tensor map after an int starts at 64", args: new(Args).I32(1).TensorMap(&m).U16(2),
			offs: []uint32{0, 64, 192}, sizes: []uint32{4, 128, 2}},
		{name: "a 3-byte struct needs no alignment", args: Value(new(Args).U8(9), three{[3]uint8{4, 5, 6}}),
			offs: []uint32{0, 1}, sizes: []uint32{1, 3}, firstBytes: []byte{9, 4, 5, 6}},
		{name: "a struct with a long long is 8-aligned and padded to 24", args: Value(new(Args).U16(1), mixed{1, 2, 3}),
			offs: []uint32{0, 8}, sizes: []uint32{2, 24}},
		{name: "floats are their IEEE bits", args: new(Args).F32(1).F64(-2),
			offs: []uint32{0, 8}, sizes: []uint32{4, 8}, firstBytes: []byte{0, 0, 0x80, 0x3f, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xc0}},
		{name: "raw bytes keep the alignment given", args: new(Args).U8(1).Bytes([]byte{1, 2, 3, 4, 5, 6}, 16),
			offs: []uint32{0, 16}, sizes: []uint32{1, 6}},
		{name: "an int out of range is refused", args: new(Args).Int(1 << 40), wantErr: "does not fit"},
		{name: "an alignment that is not a power of two is refused", args: new(Args).Bytes([]byte{1}, 3), wantErr: "power of two"},
		{name: "a struct holding a Go pointer is refused", args: Value(new(Args), struct{ P *int }{}), wantErr: "not a plain C value"},
		{name: "a string is refused", args: Value(new(Args), "x"), wantErr: "not a plain C value"},
		{name: "a Go int, whose size C does not share, is refused", args: Value(new(Args), 3), wantErr: "not a plain C value"},
		{name: "an empty struct is refused", args: Value(new(Args), struct{}{}), wantErr: "empty type"},
	} {
		t.Run(c.name, func(t *testing.T) {
			if c.wantErr != "" {
				if err := c.args.Err(); err == nil || !strings.Contains(err.Error(), c.wantErr) {
					t.Fatalf("error %v, want one saying %q", err, c.wantErr)
				}
				f := &Function{name: "k"}
				if err := f.Launch(LaunchConfig{Grid: D(1), Block: D(1)}, c.args); !errors.Is(err, ErrLaunch) {
					t.Errorf("Launch returned %v, want the building error as ErrLaunch", err)
				}
				return
			}
			if err := c.args.Err(); err != nil {
				t.Fatal(err)
			}
			if !equalU32(c.args.offs, c.offs) || !equalU32(c.args.sizes, c.sizes) {
				t.Errorf("offsets %v sizes %v, want %v %v", c.args.offs, c.args.sizes, c.offs, c.sizes)
			}
			if c.firstBytes != nil && !bytes.HasPrefix(c.args.buf, c.firstBytes) {
				t.Errorf("bytes % x, want them to start % x", c.args.buf, c.firstBytes)
			}
		})
	}
}

func TestArgsTensorMapBytesArePassedVerbatim(t *testing.T) {
	var m TensorMap
	for i := range m {
		m[i] = byte(255 - i)
	}
	a := new(Args).U8(0).TensorMap(&m)
	if got := a.buf[64:192]; !bytes.Equal(got, m[:]) {
		t.Fatalf("tensor map bytes changed: % x", got[:8])
	}
}

func TestArgsResetKeepsNothingButMemory(t *testing.T) {
	a := new(Args).Int(1 << 40).Ptr(1)
	a.Reset().U32(5)
	if a.Err() != nil || a.Len() != 1 || !bytes.Equal(a.buf, []byte{5, 0, 0, 0}) {
		t.Fatalf("after Reset: err %v, %d args, bytes % x", a.Err(), a.Len(), a.buf)
	}
}

func TestDimsFillMissingSizesWithOne(t *testing.T) {
	for _, c := range []struct {
		got, want Dim3
	}{{D(5), Dim3{5, 1, 1}}, {D(5, 6), Dim3{5, 6, 1}}, {D(5, 6, 7), Dim3{5, 6, 7}}} {
		if c.got != c.want {
			t.Errorf("got %v, want %v", c.got, c.want)
		}
	}
}

// knownParams is a Function whose parameter sizes are already known, as
// if the driver had answered cuFuncGetParamInfo.
func knownParams(sizes ...uint32) *Function {
	f := &Function{name: "k", params: sizes}
	f.paramsOnce.Do(func() {})
	return f
}

func TestLaunchRefusesShapesAndArgumentsTheKernelCannotTake(t *testing.T) {
	ok := LaunchConfig{Grid: D(4), Block: D(32)}
	for _, c := range []struct {
		name string
		f    *Function
		cfg  LaunchConfig
		args *Args
		want string
	}{
		{"a block with a zero dimension", knownParams(), LaunchConfig{Grid: D(1), Block: Dim3{32, 0, 1}}, nil, "zero dimension"},
		{"a cluster that does not divide the grid", knownParams(), LaunchConfig{Grid: D(3), Block: D(32), Cluster: D(2)}, nil, "does not divide"},
		{"a cluster with a zero dimension", knownParams(), LaunchConfig{Grid: D(4), Block: D(32), Cluster: Dim3{2, 0, 1}}, nil, "zero dimension"},
		{"negative shared memory", knownParams(), LaunchConfig{Grid: D(1), Block: D(1), SharedBytes: -1}, nil, "shared memory"},
		{"too few arguments", knownParams(8, 4), ok, new(Args).Ptr(1), "1 arguments for 2 parameters"},
		{"too many arguments", knownParams(8), ok, new(Args).Ptr(1).Ptr(2), "2 arguments for 1 parameters"},
		{"an int where the kernel takes a pointer", knownParams(8, 4), ok, new(Args).I32(1).I32(2), "argument 0 is 4 bytes, the parameter 8"},
	} {
		t.Run(c.name, func(t *testing.T) {
			args := c.args
			if args == nil {
				args = &Args{}
			}
			err := c.f.validate(c.cfg, args)
			if !errors.Is(err, ErrLaunch) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("got %v, want ErrLaunch saying %q", err, c.want)
			}
		})
	}
	t.Run("the layer kernels' 8-byte slots are not checked", func(t *testing.T) {
		a := Args{loose: true}
		a.U64(1)
		if err := knownParams(4, 4).validate(ok, &a); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("matching arguments pass", func(t *testing.T) {
		if err := knownParams(8, 4).validate(ok, new(Args).Ptr(1).I32(2)); err != nil {
			t.Fatal(err)
		}
	})
}

func TestAnEmptyGridLaunchesNothing(t *testing.T) {
	// No module, no driver: an empty grid must return before either.
	f := &Function{name: "k"}
	if err := f.Launch(LaunchConfig{Grid: Dim3{0, 1, 1}, Block: D(32)}, nil); err != nil {
		t.Fatal(err)
	}
}

// kernelParams reads a kernel's parameter table (EIATTR_KPARAM_INFO in
// .nv.info.<kernel>) from a CUBIN: what cuFuncGetParamInfo answers on a
// GPU, read here with NVRTC alone. Offsets are relative to the first
// parameter (the table's base is the constant bank's, not 64-aligned).
func kernelParams(t *testing.T, cubin []byte, kernel string) (offs, sizes []uint32) {
	t.Helper()
	f, err := elf.NewFile(bytes.NewReader(cudaELF(cubin)))
	if err != nil {
		t.Fatal(err)
	}
	s := f.Section(".nv.info." + kernel)
	if s == nil {
		t.Fatalf("no .nv.info.%s", kernel)
	}
	d, err := s.Data()
	if err != nil {
		t.Fatal(err)
	}
	type param struct{ ord, off, size uint32 }
	var ps []param
	// Records: format byte, attribute byte, then by format nothing (1), a
	// byte (2), two bytes (3), or a 16-bit length and that many bytes (4).
	for len(d) >= 2 {
		format, attr := d[0], d[1]
		var val []byte
		switch format {
		case 1:
			d = d[2:]
		case 2:
			val, d = d[2:3], d[3:]
		case 3:
			val, d = d[2:4], d[4:]
		case 4:
			n := int(binary.LittleEndian.Uint16(d[2:4]))
			val, d = d[4:4+n], d[4+n:]
		default:
			t.Fatalf("unknown .nv.info record format %d", format)
		}
		const kparamInfo = 0x17
		if attr == kparamInfo && format == 4 && len(val) >= 12 {
			ps = append(ps, param{uint32(binary.LittleEndian.Uint16(val[4:6])), uint32(binary.LittleEndian.Uint16(val[6:8])),
				(binary.LittleEndian.Uint32(val[8:12]) >> 18) & 0x3fff})
		}
	}
	offs, sizes = make([]uint32, len(ps)), make([]uint32, len(ps))
	for _, p := range ps {
		offs[p.ord], sizes[p.ord] = p.off, p.size
	}
	for i := len(offs) - 1; i >= 0; i-- {
		offs[i] -= offs[0]
	}
	return offs, sizes
}

// TestArgsMatchTheCompiledParameterLayout checks the argument lists the
// GPU tests pass against the parameter table NVRTC wrote for each kernel:
// same count, same sizes, same offsets from the first parameter.
func TestArgsMatchTheCompiledParameterLayout(t *testing.T) {
	needNVRTC(t)
	cubin, err := (&Builder{}).CUBIN(testProgram, 9, 0)
	if err != nil {
		t.Fatal(err)
	}
	var m TensorMap
	for _, c := range []struct {
		kernel string
		args   *Args
	}{
		{"tma_tile", tmaArgs(&m, 1, 2, 3, 4)},
		{"big_smem", bigSmemArgs(1, 2, 3, 4)},
		{"cluster_pair", clusterArgs(1, 2, 3)},
		{"echo_params", echoArgs(1)},
	} {
		t.Run(c.kernel, func(t *testing.T) {
			offs, sizes := kernelParams(t, cubin, c.kernel)
			got := make([]uint32, len(c.args.offs))
			for i := range got {
				got[i] = c.args.offs[i] - c.args.offs[0]
			}
			if !equalU32(sizes, c.args.sizes) || !equalU32(offs, got) {
				t.Errorf("kernel takes sizes %v at %v; Args gives %v at %v", sizes, offs, c.args.sizes, got)
			}
		})
	}
}

func equalU32(a, b []uint32) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
