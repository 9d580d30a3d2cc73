package cuda

import (
	"bytes"
	"debug/elf"
	_ "embed"
	"encoding/binary"
	"errors"
	"strings"
	"testing"

	"github.com/moetop/moetop/kernels"
)

//go:embed testkernels.cu
var testKernelsSource string

// testProgram is the launch-path test kernels; TMA and clusters need
// sm_90, and compiling them arch-specific exercises that option too.
var testProgram = Program{
	Name:         "testkernels.cu",
	What:         "launch-path test kernels",
	Source:       hopperPTX + testKernelsSource,
	ArchSpecific: true,
	Kernels:      []string{"tma_tile", "big_smem", "cluster_pair", "echo_params"},
}

// needNVRTC skips where libnvrtc cannot be opened: NVRTC needs no GPU, so
// these tests run wherever the library is, a GPU machine or not.
func needNVRTC(t *testing.T) {
	t.Helper()
	if err := LoadNVRTC(""); err != nil {
		if errors.Is(err, kernels.ErrNoGPU) {
			t.Skipf("libnvrtc cannot be loaded, and these tests need it (not a GPU): %v", err)
		}
		t.Fatal(err)
	}
}

// emCUDA is the ELF machine of a CUBIN.
const emCUDA = 190

// cudaELF makes a CUBIN readable by debug/elf: CUDA keeps its own ABI
// version where ELF has its version (1), which debug/elf refuses.
func cudaELF(cubin []byte) []byte {
	b := bytes.Clone(cubin)
	if len(b) >= 24 {
		b[elf.EI_VERSION] = byte(elf.EV_CURRENT)
		binary.LittleEndian.PutUint32(b[20:], uint32(elf.EV_CURRENT)) // e_version
	}
	return b
}

// TestNVRTCBuildsCUBINsWithTheKernels compiles each program with NVRTC
// alone (no driver, no cuobjdump) and reads the CUBIN as ELF: a CUDA
// object whose symbol table has every kernel the program promises.
func TestNVRTCBuildsCUBINsWithTheKernels(t *testing.T) {
	needNVRTC(t)
	for _, c := range []struct {
		name         string
		p            Program
		major, minor int
	}{
		{"the test kernels compile for sm_90a", testProgram, 9, 0},
		{"layer.cu compiles for sm_90", layerProgram, 9, 0},
		{"layer.cu compiles for sm_80", layerProgram, 8, 0},
		{"the read-bandwidth kernel compiles for sm_90", bandwidthProgram, 9, 0},
		{"the Hopper grouped GEMM compiles for sm_90a", hopperProgram, 9, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			b := &Builder{} // memory only: compiles every time
			cubin, err := b.CUBIN(c.p, c.major, c.minor)
			if err != nil {
				t.Fatal(err)
			}
			f, err := elf.NewFile(bytes.NewReader(cudaELF(cubin)))
			if err != nil {
				t.Fatalf("the CUBIN is not ELF: %v", err)
			}
			if f.Machine != emCUDA {
				t.Errorf("ELF machine %d, want EM_CUDA (%d)", f.Machine, emCUDA)
			}
			syms, err := f.Symbols()
			if err != nil {
				t.Fatal(err)
			}
			have := map[string]bool{}
			for _, s := range syms {
				if elf.ST_TYPE(s.Info) == elf.STT_FUNC {
					have[s.Name] = true
				}
			}
			for _, k := range c.p.Kernels {
				if !have[k] {
					t.Errorf("kernel %s is not in the CUBIN", k)
				}
			}
		})
	}
}

// TestNVRTCReportsTheCompileLog: a program that does not compile fails
// with NVRTC's log, naming the call, the program and the line.
func TestNVRTCReportsTheCompileLog(t *testing.T) {
	needNVRTC(t)
	p := Program{Name: "broken.cu", Source: "extern \"C\" __global__ void k() { undeclared(); }\n"}
	_, err := (&Builder{}).CUBIN(p, 9, 0)
	if err == nil {
		t.Fatal("a broken program compiled")
	}
	for _, want := range []string{"nvrtcCompileProgram", "broken.cu", "undeclared"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
}
