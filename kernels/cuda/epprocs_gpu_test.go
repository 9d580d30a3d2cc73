package cuda

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/moetop/moetop/ep"
	"github.com/moetop/moetop/kernels"
	"github.com/moetop/moetop/stream"
)

// The two-process GPU test runs this test binary again as rank 1: these
// variables tell the child where the coordinator is, which device it
// drives and where it writes what it computed.
const (
	childCoordinatorEnv = "MOETOP_TEST_EP_COORDINATOR"
	childDeviceEnv      = "MOETOP_TEST_EP_DEVICE"
	childOutEnv         = "MOETOP_TEST_EP_OUT"
)

var procsShape = kernels.Shape{Tokens: 37, Hidden: 64, FFN: 96, Experts: 8, TopK: 2, DType: kernels.FP32, Seed: 11}

const procsSteps = 3

// rankOutput is what a rank computed in its last step.
type rankOutput struct {
	Output  []float32
	IDs     []int32
	Weights []float32
	Rows    [][]int // the whole step's rows per expert, every step
}

// procsBias is the router bias of step i, the same on every rank (as the
// live loop's steering makes it from the gathered rows): a skew that moves.
func procsBias(i int) []float32 {
	b := make([]float32, procsShape.Experts)
	b[i%len(b)] = 0.5
	return b
}

// runRank is one process's rank: it joins the session, joins NCCL with
// the id rank 0 made, steps and keeps what it computed.
func runRank(ctx context.Context, jc ep.JoinConfig, device int, out *rankOutput) error {
	sess, err := ep.Join(ctx, jc)
	if err != nil {
		return err
	}
	be, err := NewEPProcess(sess, device, nil, 20*time.Second, Options{})
	if err != nil {
		sess.Close()
		return err
	}
	defer be.Close()
	if err := be.Prepare(ctx, procsShape); err != nil {
		return err
	}
	e := be.Rank.(*EPBackend)
	for i := range procsSteps {
		if err := e.Poison(); err != nil {
			return err
		}
		res, err := be.Step(ctx, kernels.StepInput{Bias: procsBias(i)})
		if err != nil {
			return fmt.Errorf("step %d: %w", i, err)
		}
		if len(res.Devices) != 2 {
			return fmt.Errorf("step %d: the whole step has %d ranks, want 2", i, len(res.Devices))
		}
		out.Rows = append(out.Rows, res.Rows)
	}
	if out.Output, err = e.Output(); err != nil {
		return err
	}
	a, err := e.Routing()
	out.IDs, out.Weights = a.IDs, a.Weights
	return err
}

// Two processes, one GPU each, joined through the coordinator and NCCL's
// ncclCommInitRank, compute what one process driving both GPUs computes,
// and that is the CPU reference over the whole batch.
func TestTwoGPUProcessesMatchOneProcessOfBothRanks(t *testing.T) {
	if addr := os.Getenv(childCoordinatorEnv); addr != "" {
		childRank(t, addr)
		return
	}
	devs := needGPUs(t, 2)
	t.Setenv(UnverifiedGPUEPEnv, "1")
	ln, err := ep.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	outFile := filepath.Join(t.TempDir(), "rank1.json")
	child := exec.Command(os.Args[0], "-test.run", "^TestTwoGPUProcessesMatchOneProcessOfBothRanks$", "-test.v")
	child.Env = append(os.Environ(), childCoordinatorEnv+"="+ln.Addr().String(), childDeviceEnv+"="+strconv.Itoa(devs[1]),
		childOutEnv+"="+outFile)
	var childLog strings.Builder
	child.Stdout, child.Stderr = &childLog, &childLog
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	childDone := make(chan error, 1)
	go func() { childDone <- child.Wait() }()
	t.Cleanup(func() { child.Process.Kill() })

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var mine rankOutput
	jc := ep.JoinConfig{Rank: 0, World: 2, Addr: ln.Addr().String(), Listener: ln, Host: "localhost", Timeout: 30 * time.Second,
		Blob: UniqueIDBlob, Spec: procsSpec()}
	if err := runRank(ctx, jc, devs[0], &mine); err != nil {
		t.Fatalf("rank 0: %v\nrank 1:\n%s", err, childLog.String())
	}
	select {
	case err := <-childDone:
		if err != nil {
			t.Fatalf("rank 1: %v\n%s", err, childLog.String())
		}
	case <-time.After(time.Minute):
		t.Fatalf("rank 1 still running\n%s", childLog.String())
	}
	raw, err := os.ReadFile(outFile)
	if err != nil {
		t.Fatalf("rank 1 left nothing: %v\n%s", err, childLog.String())
	}
	var theirs rankOutput
	if err := json.Unmarshal(raw, &theirs); err != nil {
		t.Fatal(err)
	}
	// Rank 1 may end early with ErrEnded and still write what it has.
	if len(theirs.Rows) != procsSteps || len(mine.Rows) != procsSteps {
		t.Fatalf("rank 0 ran %d steps, rank 1 %d; want %d each\nrank 1:\n%s", len(mine.Rows), len(theirs.Rows), procsSteps,
			childLog.String())
	}
	if len(theirs.Output) != len(mine.Output) || len(theirs.IDs) != len(mine.IDs) {
		t.Fatalf("rank 1 left %d outputs and %d routing slots, rank 0 %d and %d\nrank 1:\n%s", len(theirs.Output),
			len(theirs.IDs), len(mine.Output), len(mine.IDs), childLog.String())
	}
	for i := range procsSteps {
		if !slices.Equal(mine.Rows[i], theirs.Rows[i]) {
			t.Errorf("step %d: rank 0 has rows %v, rank 1 %v; every process returns the whole step", i, mine.Rows[i], theirs.Rows[i])
		}
	}

	// The same steps in one process driving both GPUs.
	one := &EPBackend{Devices: devs, Timeout: 20 * time.Second}
	defer one.Close()
	if err := one.Prepare(ctx, procsShape); err != nil {
		t.Fatal(err)
	}
	for i := range procsSteps {
		res, err := one.Step(ctx, kernels.StepInput{Bias: procsBias(i)})
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(res.Rows, mine.Rows[i]) {
			t.Errorf("step %d: rows %v over two processes, %v in one", i, mine.Rows[i], res.Rows)
		}
	}
	want, err := one.Output()
	if err != nil {
		t.Fatal(err)
	}
	got := append(slices.Clone(mine.Output), theirs.Output...)
	tol := procsShape.DType.Tolerance()
	if e := kernels.RelErr(got, want); !(e <= tol) {
		t.Errorf("two processes against one: rel err %.3g, tolerance %.0e", e, tol)
	}
	// And the CPU reference over the whole batch, routed as the GPUs did.
	whole := procsShape
	whole.Tokens *= 2
	cpu := kernels.NewCPU()
	if err := cpu.Prepare(ctx, whole); err != nil {
		t.Fatal(err)
	}
	route := kernels.Assignment{IDs: append(slices.Clone(mine.IDs), theirs.IDs...), Weights: append(slices.Clone(mine.Weights), theirs.Weights...)}
	if _, err := cpu.Step(ctx, kernels.StepInput{Fixed: &route}); err != nil {
		t.Fatal(err)
	}
	ref, _ := cpu.Output()
	if e := kernels.RelErr(got, ref); !(e <= tol) {
		t.Errorf("two processes against the CPU reference: rel err %.3g, tolerance %.0e", e, tol)
	}
}

func procsSpec() ep.Spec {
	s := procsShape
	return ep.Spec{World: 2, Version: "test", Backend: "loop", Layer: stream.Layer{Tokens: s.Tokens, Hidden: s.Hidden,
		FFN: s.FFN, Experts: s.Experts, TopK: s.TopK, DType: s.DType.String(), Act: s.Act.String(), Routing: "uniform", Seed: s.Seed}}
}

// childRank is rank 1, in the process the test started.
func childRank(t *testing.T, addr string) {
	dev, err := strconv.Atoi(os.Getenv(childDeviceEnv))
	if err != nil {
		t.Fatalf("%s: %v", childDeviceEnv, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var out rankOutput
	jc := ep.JoinConfig{Rank: 1, World: 2, Addr: addr, Host: "localhost", LocalRank: 1, Timeout: 30 * time.Second, Spec: procsSpec()}
	err = runRank(ctx, jc, dev, &out)
	if err != nil && !errors.Is(err, ep.ErrEnded) {
		t.Fatal(err)
	}
	raw, err := json.Marshal(out)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(os.Getenv(childOutEnv), raw, 0o644); err != nil {
		t.Fatal(err)
	}
}
