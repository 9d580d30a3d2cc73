package cuda

import (
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// ptxasKernel is what ptxas -v says of one kernel.
type ptxasKernel struct {
	name                    string
	registers, stack        int
	spillStores, spillLoads int
}

var (
	ptxasFunction = regexp.MustCompile(`Compiling entry function '(\w+)'`)
	ptxasStack    = regexp.MustCompile(`(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads`)
	ptxasRegs     = regexp.MustCompile(`Used (\d+) registers`)
)

// parsePtxas reads ptxas -v's report, kernel by kernel.
func parsePtxas(log string) []ptxasKernel {
	var out []ptxasKernel
	for _, line := range strings.Split(log, "\n") {
		if m := ptxasFunction.FindStringSubmatch(line); m != nil {
			out = append(out, ptxasKernel{name: m[1]})
			continue
		}
		if len(out) == 0 {
			continue
		}
		k := &out[len(out)-1]
		if m := ptxasStack.FindStringSubmatch(line); m != nil {
			k.stack, _ = strconv.Atoi(m[1])
			k.spillStores, _ = strconv.Atoi(m[2])
			k.spillLoads, _ = strconv.Atoi(m[3])
		}
		if m := ptxasRegs.FindStringSubmatch(line); m != nil {
			k.registers, _ = strconv.Atoi(m[1])
		}
	}
	return out
}

// The Hopper kernels compile for sm_90a with ptxas checking every inline
// PTX instruction, keep their accumulators in registers (no stack, no
// spills: a run-time index into the accumulator array would put it in
// local memory) and have setmaxnreg honoured (ptxas warns C7508 when the
// register count at entry is unknown).
func TestHopperKernelsCompileWithoutSpills(t *testing.T) {
	needNVRTC(t)
	opts, err := hopperProgram.options("sm_90a")
	if err != nil {
		t.Fatal(err)
	}
	cubin, log, err := CompileNVRTCLog(CompileRequest{Name: hopperProgram.Name, Source: hopperProgram.Source,
		Options: append(opts, "--ptxas-options=-v")})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("NVRTC log:\n%s", log)
	// C7508 is setmaxnreg ignored; "Potential Performance Loss" is wgmma
	// serialised by ptxas. Any warning is worth a look.
	if strings.Contains(strings.ToLower(log), "warning") {
		t.Errorf("ptxas warned:\n%s", log)
	}
	// For reading the SASS where cuobjdump is (HGMMA, UTMALDG, no LDL/STL).
	if path := os.Getenv("MOETOP_HOPPER_CUBIN"); path != "" {
		if err := os.WriteFile(path, cubin, 0o644); err != nil {
			t.Error(err)
		}
	}
	got := map[string]ptxasKernel{}
	for _, k := range parsePtxas(log) {
		got[k.name] = k
	}
	for _, name := range hopperProgram.Kernels {
		k, ok := got[name]
		if !ok {
			t.Errorf("ptxas reported nothing for %s", name)
			continue
		}
		t.Logf("%s: %d registers, %d bytes stack, %d/%d bytes spilled", name, k.registers, k.stack, k.spillStores, k.spillLoads)
		if k.stack != 0 || k.spillStores != 0 || k.spillLoads != 0 {
			t.Errorf("%s uses local memory: %d bytes stack, %d bytes spill stores, %d spill loads", name, k.stack, k.spillStores, k.spillLoads)
		}
		// The consumer's setmaxnreg.inc to 232 takes what the producer's
		// dec to 40 gave back: ·128 must cover (232-R)·128, so an
		// entry count under 136 would block the consumer forever.
		if !strings.Contains(name, "fill") && k.registers < 136 {
			t.Errorf("%s enters with %d registers: under 136, setmaxnreg.inc 232 would wait forever for registers the producer never frees", name, k.registers)
		}
	}
}
