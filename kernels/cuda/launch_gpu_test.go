package cuda

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/moetop/moetop/kernels"
)

// Launch-path tests on a GPU: each test kernel of testkernels.cu, checked
// against the host. They skip without a GPU, and the Hopper ones below
// sm_90.

// openGPU opens device 0, or skips saying why there is none.
func openGPU(t *testing.T) *Device {
	t.Helper()
	d, err := OpenDevice("", 0)
	if errors.Is(err, kernels.ErrNoGPU) {
		t.Skip(err)
	}
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// hopper opens device 0 and checks it is sm_90 or later; the device is
// closed when the test ends.
func hopper(t *testing.T) *Device {
	t.Helper()
	d := openGPU(t)
	t.Cleanup(func() {
		if err := d.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	if d.Major < 9 {
		t.Skipf("no CUDA device with sm_90: %s is sm_%d%d", d.Name, d.Major, d.Minor)
	}
	return d
}

// countingBuilder compiles with NVRTC, counting compiles, caching in dir.
func countingBuilder(dir string, calls *int, notice *bytes.Buffer) *Builder {
	return &Builder{Dir: dir, Notice: notice, Compile: func(r CompileRequest) ([]byte, error) {
		*calls++
		return CompileNVRTC(r)
	}}
}

// enterTest loads the test kernels on d and enters d for the rest of the
// test (Launch needs the context current on the calling thread).
func enterTest(t *testing.T, d *Device) *Module {
	t.Helper()
	var calls int
	m, err := d.LoadWith(countingBuilder(t.TempDir(), &calls, nil), testProgram)
	if err != nil {
		t.Fatal(err)
	}
	leave, err := d.Enter()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(leave)
	return m
}

func function(t *testing.T, m *Module, name string) *Function {
	t.Helper()
	f, err := m.Function(name)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// buffer allocates n bytes, filled from init when given, else zeros.
func buffer(t *testing.T, d *Device, n int, init []byte) DevicePtr {
	t.Helper()
	p, err := d.Alloc(n)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Free(p) })
	if init == nil {
		init = make([]byte, n)
	}
	if err := d.Upload(p, init); err != nil {
		t.Fatal(err)
	}
	return p
}

func download(t *testing.T, d *Device, p DevicePtr, n int) []byte {
	t.Helper()
	if err := d.Synchronize(); err != nil {
		t.Fatalf("the kernel failed: %v", err)
	}
	out := make([]byte, n)
	if err := d.Download(out, p); err != nil {
		t.Fatal(err)
	}
	return out
}

func u32s(b []byte) []uint32 {
	out := make([]uint32, len(b)/4)
	for i := range out {
		out[i] = binary.LittleEndian.Uint32(b[4*i:])
	}
	return out
}

func randomBytes(n int, seed uint64) []byte {
	rng := rand.New(rand.NewPCG(seed, 1))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	return b
}

// (a) A TMA tile copy through a tensor map and an mbarrier.
func TestTMAMovesTilesThroughSharedMemory(t *testing.T) {
	d := hopper(t)
	m := enterTest(t, d)
	const rows, cols = 100, 200 // neither a multiple of the 32×64 tile
	in := randomBytes(rows*cols*2, 1)
	src := buffer(t, d, len(in), in)
	out := buffer(t, d, len(in), bytes.Repeat([]byte{0xff}, len(in)))
	oob := buffer(t, d, 4, nil)
	tm, err := EncodeTiled(TiledTensor{DataType: TensorBFloat16, Address: src, Dims: []uint64{cols, rows},
		Strides: []uint64{cols * 2}, Box: []uint32{64, 32}, L2Promotion: L2Promotion128B})
	if err != nil {
		t.Fatal(err)
	}
	// Two tiles per block along the columns: 4 tiles of 64 cover 200.
	cfg := LaunchConfig{Grid: D((cols+127)/128, (rows+31)/32), Block: D(128)}
	if err := function(t, m, "tma_tile").Launch(cfg, tmaArgs(&tm, out, rows, cols, oob)); err != nil {
		t.Fatal(err)
	}
	got := download(t, d, out, len(in))
	if bad := countDiff(got, in, 2); bad > 0 {
		t.Errorf("%d of %d bf16 values differ from the input", bad, rows*cols)
	}
	if n := u32s(download(t, d, oob, 4))[0]; n != 0 {
		t.Errorf("%d values past the matrix's edge were not zero-filled", n)
	}
}

func countDiff(got, want []byte, width int) int {
	bad := 0
	for i := 0; i+width <= len(want); i += width {
		if !bytes.Equal(got[i:i+width], want[i:i+width]) {
			bad++
		}
	}
	return bad
}

// (b) 100 KiB of dynamic shared memory on a 3-D grid of 3-D blocks.
func TestMoreThan48KiBOfSharedMemoryOnA3DGrid(t *testing.T) {
	d := hopper(t)
	m := enterTest(t, d)
	const words = 100 << 10 / 4
	grid, block := D(3, 2, 2), D(8, 4, 2)
	nb := int(grid.count())
	in := randomBytes(4*words, 2)
	src := buffer(t, d, len(in), in)
	out := buffer(t, d, 4*words*nb, nil)
	where := buffer(t, d, 8*nb, nil)
	f := function(t, m, "big_smem")
	if err := f.Launch(LaunchConfig{Grid: grid, Block: block, SharedBytes: 4 * words}, bigSmemArgs(src, out, where, words)); err != nil {
		t.Fatal(err)
	}
	got, w, inw := u32s(download(t, d, out, 4*words*nb)), u32s(download(t, d, where, 8*nb)), u32s(in)
	for z := uint32(0); z < grid.Z; z++ {
		for y := uint32(0); y < grid.Y; y++ {
			for x := uint32(0); x < grid.X; x++ {
				b := x + grid.X*(y+grid.Y*z)
				if w[2*b] != x|y<<10|z<<20 || w[2*b+1] != uint32(block.count()) {
					t.Errorf("block %d (%d,%d,%d) recorded coordinates %#x and %d threads", b, x, y, z, w[2*b], w[2*b+1])
				}
				bad := 0
				for i := 0; i < words; i++ {
					if got[int(b)*words+i] != inw[words-1-i]^(b*2654435761) {
						bad++
					}
				}
				if bad > 0 {
					t.Errorf("block %d: %d of %d shared-memory words came back wrong", b, bad, words)
				}
			}
		}
	}
	if n := f.sharedOptIn.Load(); n != 4*words {
		t.Errorf("the kernel was allowed %d bytes of dynamic shared memory, want %d", n, 4*words)
	}
}

// (c) A cluster of two blocks reading each other's shared memory.
func TestAClusterOfTwoReadsItsPartnersSharedMemory(t *testing.T) {
	d := hopper(t)
	if !d.SupportsClusters() {
		t.Skipf("no CUDA device with cluster launch: %s", d.Name)
	}
	m := enterTest(t, d)
	const blocks, threads = 8, 256
	in := randomBytes(4*blocks*threads, 3)
	src := buffer(t, d, len(in), in)
	out := buffer(t, d, len(in), nil)
	rank := buffer(t, d, 4*blocks, nil)
	cfg := LaunchConfig{Grid: D(blocks), Block: D(threads), Cluster: D(2)}
	if err := function(t, m, "cluster_pair").Launch(cfg, clusterArgs(src, out, rank)); err != nil {
		t.Fatal(err)
	}
	got, ranks, inw := u32s(download(t, d, out, len(in))), u32s(download(t, d, rank, 4*blocks)), u32s(in)
	for b := 0; b < blocks; b++ {
		if want := uint32(b%2) | 2<<8; ranks[b] != want {
			t.Errorf("block %d: rank|size<<8 = %#x, want %#x", b, ranks[b], want)
		}
		partner := b ^ 1
		bad := 0
		for i := 0; i < threads; i++ {
			if got[b*threads+i] != inw[partner*threads+i] {
				bad++
			}
		}
		if bad > 0 {
			t.Errorf("block %d: %d of %d words are not its partner's", b, bad, threads)
		}
	}
}

// (d) A second run finds the CUBIN on disk and does not compile.
func TestASecondRunLoadsTheCUBINFromTheDiskCache(t *testing.T) {
	d := hopper(t)
	dir := t.TempDir()
	var calls int
	var notice bytes.Buffer
	if _, err := d.LoadWith(countingBuilder(dir, &calls, &notice), testProgram); err != nil {
		t.Fatal(err)
	}
	if calls != 1 || !strings.Contains(notice.String(), "moetop: compiling launch-path test kernels for sm_90a") {
		t.Fatalf("first run: %d compiles, notice %q", calls, notice.String())
	}
	// A second run: another device handle and a new builder (nothing in
	// memory), the same cache directory.
	d2 := openGPU(t)
	t.Cleanup(func() { d2.Close() }) // after its buffer is freed
	notice.Reset()
	m, err := d2.LoadWith(countingBuilder(dir, &calls, &notice), testProgram)
	if err != nil {
		t.Fatal(err)
	}
	if calls != 1 || notice.Len() != 0 {
		t.Fatalf("second run compiled: %d compiles in all, notice %q", calls, notice.String())
	}
	// And the cached CUBIN runs.
	leave, err := d2.Enter()
	if err != nil {
		t.Fatal(err)
	}
	defer leave()
	out := buffer(t, d2, 8*9, nil)
	if err := function(t, m, "echo_params").Launch(LaunchConfig{Grid: D(1), Block: D(1)}, echoArgs(out)); err != nil {
		t.Fatal(err)
	}
	if got := download(t, d2, out, 8*9); !bytes.Equal(got, le64(echoWant())) {
		t.Errorf("the cached kernel echoed % x", got)
	}
}

func le64(v []uint64) []byte {
	b := make([]byte, 8*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint64(b[8*i:], x)
	}
	return b
}

// Parameters of every size and alignment reach the kernel intact.
func TestParametersOfEverySizeReachTheKernel(t *testing.T) {
	d := hopper(t)
	m := enterTest(t, d)
	out := buffer(t, d, 8*9, nil)
	if err := function(t, m, "echo_params").Launch(LaunchConfig{Grid: D(1), Block: D(1)}, echoArgs(out)); err != nil {
		t.Fatal(err)
	}
	got, want := download(t, d, out, 8*9), echoWant()
	for i, w := range want {
		if g := binary.LittleEndian.Uint64(got[8*i:]); g != w {
			t.Errorf("parameter %d arrived as %#x, want %#x", i, g, w)
		}
	}
}

// With CUDA 12.4's cuFuncGetParamInfo, a wrong argument list is refused
// before the launch instead of faulting inside the kernel.
func TestAWrongArgumentListIsRefused(t *testing.T) {
	d := hopper(t)
	m := enterTest(t, d)
	f := function(t, m, "cluster_pair")
	if sizes, err := f.paramSizes(); err != nil || sizes == nil {
		t.Skipf("this driver does not report parameters (cuFuncGetParamInfo: %v)", err)
	}
	err := f.Launch(LaunchConfig{Grid: D(2), Block: D(256), Cluster: D(2)}, new(Args).Ptr(1).Ptr(2))
	if !errors.Is(err, ErrLaunch) {
		t.Fatalf("got %v, want ErrLaunch", err)
	}
}

// A module dies with its device: launching after Close is an error, not a
// launch on an unloaded module.
func TestAModuleIsUnloadedWithItsDevice(t *testing.T) {
	d := openGPU(t)
	if d.Major < 9 {
		d.Close()
		t.Skipf("no CUDA device with sm_90: %s", d.Name)
	}
	var calls int
	m, err := d.LoadWith(countingBuilder(t.TempDir(), &calls, nil), testProgram)
	if err != nil {
		t.Fatal(err)
	}
	f := function(t, m, "echo_params")
	if again, err := d.LoadWith(countingBuilder(t.TempDir(), &calls, nil), testProgram); err != nil || again != m {
		t.Errorf("loading the same program twice gave another module (err %v)", err)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if err := f.Launch(LaunchConfig{Grid: D(1), Block: D(1)}, echoArgs(0)); !errors.Is(err, ErrModuleClosed) {
		t.Errorf("launch after Close: %v, want ErrModuleClosed", err)
	}
	if _, err := d.Load(testProgram); !errors.Is(err, ErrModuleClosed) {
		t.Errorf("load after Close: %v, want ErrModuleClosed", err)
	}
}

// The read-bandwidth kernel compiles, runs and reports a figure a GPU of
// today can reach (an H100 reads about 3 TB/s, an H200 about 4.5).
func TestReadBandwidthOnTheGPU(t *testing.T) {
	d := openGPU(t)
	defer d.Close()
	gbps, err := d.ReadBandwidth(1<<30, 5)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%s: read bandwidth %.0f GB/s", d.Name, gbps)
	if gbps < 100 || gbps > 20000 {
		t.Errorf("read bandwidth %.0f GB/s is not a real card's", gbps)
	}
}
