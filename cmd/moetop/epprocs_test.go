package main

import (
	"bufio"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/moetop/moetop/kernels/cuda"
	"github.com/moetop/moetop/recording"
	"github.com/moetop/moetop/stream"
)

// launcherVars are what a launcher such as torchrun sets; tests start from
// none of them.
var launcherVars = []string{"RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"}

func clearLauncher(t *testing.T) {
	for _, v := range launcherVars {
		t.Setenv(v, "")
	}
}

// checkEPFlags parses args, with env as the launcher's variables, into the
// expert-parallel flags (and more, where more registers other flags), and
// checks them, failing the test on an error.
func checkEPFlags(t *testing.T, args []string, env map[string]string, more func(*flag.FlagSet)) *epFlags {
	t.Helper()
	clearLauncher(t)
	for k, v := range env {
		t.Setenv(k, v)
	}
	var f epFlags
	fs := flag.NewFlagSet("moetop", flag.ContinueOnError)
	f.register(fs)
	if more != nil {
		more(fs)
	}
	if err := fs.Parse(args); err != nil {
		t.Fatal(err)
	}
	if err := f.check(fs); err != nil {
		t.Fatal(err)
	}
	return &f
}

func TestOneProcessPerRankBadInput(t *testing.T) {
	cases := []struct {
		name string
		args []string
		env  map[string]string
		want string
	}{
		{"a rank beyond the world", []string{"--ep", "2", "--rank", "2", "--world", "2"}, nil, "invalid --rank 2 for a world of 2"},
		{"a negative rank", []string{"--rank", "-1", "--world", "2"}, nil, "invalid --rank -1"},
		{"an empty world", []string{"--rank", "0", "--world", "0"}, nil, "invalid --world 0"},
		{"a coordinator without rank or world", []string{"--coordinator", "127.0.0.1:1234"}, nil,
			"--coordinator needs --rank and --world"},
		{"a rank without a world", []string{"--rank", "1"}, nil, "--rank needs --world N"},
		{"a coordinator without a port", []string{"--rank", "0", "--world", "2", "--coordinator", "node0"}, nil,
			`invalid --coordinator "node0"`},
		{"a port out of range", []string{"--rank", "0", "--world", "2", "--coordinator", "node0:70000"}, nil,
			"invalid --coordinator"},
		{"port 0 on a rank that must dial it", []string{"--rank", "1", "--world", "2", "--coordinator", "127.0.0.1:0"}, nil,
			"need the port rank 0 listens on"},
		{"ranks that are not the world", []string{"--ep", "4", "--rank", "0", "--world", "2"}, nil, "--ep must equal --world"},
		{"a launcher's rank that is not a number", []string{"--ep", "2"}, map[string]string{"RANK": "first", "WORLD_SIZE": "2"},
			`RANK="first"`},
		{"a launcher's world that differs from --ep", []string{"--ep", "2"}, map[string]string{"RANK": "0", "WORLD_SIZE": "3"},
			"--ep 2 with a world of 3 processes"},
		{"a bad local rank", []string{"--rank", "0", "--world", "2"}, map[string]string{"LOCAL_RANK": "-3"}, "LOCAL_RANK=-3"},
		{"a GPU backend", []string{"--rank", "0", "--world", "2", "--backend", "loop"}, nil, "--backend cpu"},
		{"a GPU backend without opting in", []string{"--rank", "1", "--world", "2", "--backend", "loop"}, nil,
			"set MOETOP_UNVERIFIED_GPU_EP=1 to try it"},
		{"GPUs named in a process of one rank", []string{"--rank", "1", "--world", "2", "--gpus", "0,1"}, nil,
			"each process picks its own with --device"},
		{"GPUs named under a launcher", []string{"--gpus", "0,1"}, map[string]string{"RANK": "0", "WORLD_SIZE": "2"},
			"--gpus names the GPUs of a run whose ranks are all in this process"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			clearLauncher(t)
			for k, v := range c.env {
				t.Setenv(k, v)
			}
			args := c.args
			if !slices.Contains(args, "--backend") {
				args = slices.Concat(args, []string{"--backend", "cpu"})
			}
			code, _, stderr := runCLI(t, args...)
			if code != 2 || !strings.Contains(stderr, c.want) || strings.Count(strings.TrimSpace(stderr), "\n") > 0 {
				t.Errorf("exit %d, stderr %q; want exit 2 and one line saying %q", code, stderr, c.want)
			}
		})
	}
}

// One process per GPU drives the GPU of its local rank, unless --device
// names one (CUDA_VISIBLE_DEVICES giving each process its own GPU makes it
// device 0 there).
func TestARankDrivesTheGPUOfItsLocalRank(t *testing.T) {
	cases := []struct {
		name string
		args []string
		env  map[string]string
		want int
	}{
		{"the launcher's local rank", []string{"--ep", "4"}, map[string]string{"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1"}, 1},
		{"--device over the local rank", []string{"--ep", "2", "--device", "0"}, map[string]string{"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1"}, 0},
		{"no local rank: --device's default", []string{"--rank", "1", "--world", "2"}, nil, 0},
		{"no local rank: --device", []string{"--rank", "1", "--world", "2", "--device", "2"}, nil, 2},
		{"one process of every rank keeps --device", []string{"--ep", "2", "--device", "1"}, map[string]string{"LOCAL_RANK": "3"}, 1},
	}
	saved := cudaOptions
	t.Cleanup(func() { cudaOptions = saved })
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			checkEPFlags(t, c.args, c.env, gpuFlags)
			if cudaOptions.Device != c.want {
				t.Errorf("device %d, want %d", cudaOptions.Device, c.want)
			}
		})
	}
}

func TestLauncherVariablesMakeARankWhenEPIsAsked(t *testing.T) {
	cases := []struct {
		name      string
		args      []string
		env       map[string]string
		multi     bool
		rank      int
		world     int
		coord     string
		localRank int
	}{
		{"torchrun's variables with --ep", []string{"--ep", "2"},
			map[string]string{"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1", "MASTER_ADDR": "node7", "MASTER_PORT": "29500"},
			true, 1, 2, "node7:29731", 1},
		{"flags over the variables", []string{"--ep", "2", "--rank", "0", "--coordinator", "10.0.0.1:4000"},
			map[string]string{"RANK": "1", "WORLD_SIZE": "2", "MASTER_ADDR": "node7"},
			true, 0, 2, "10.0.0.1:4000", -1},
		{"the world from --ep", []string{"--ep", "3", "--rank", "2"}, nil, true, 2, 3, "127.0.0.1:29731", -1},
		{"the ranks from --world", []string{"--world", "2", "--rank", "0"}, nil, true, 0, 2, "127.0.0.1:29731", -1},
		{"the variables without --ep are someone else's", nil,
			map[string]string{"RANK": "1", "WORLD_SIZE": "2"}, false, -1, 0, "", 0},
		{"--ep alone is one process", []string{"--ep", "4"}, nil, false, -1, 0, "", 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := checkEPFlags(t, c.args, c.env, nil)
			if f.multi != c.multi || (c.multi && (f.rank != c.rank || f.world != c.world || f.ranks != c.world ||
				f.coordinator != c.coord || f.localRank != c.localRank)) {
				t.Errorf("multi %v rank %d world %d ep %d coordinator %q local rank %d; want %v %d %d %d %q %d",
					f.multi, f.rank, f.world, f.ranks, f.coordinator, f.localRank, c.multi, c.rank, c.world, c.world, c.coord, c.localRank)
			}
		})
	}
}

// buildMoetop builds the program into a folder of the test's.
func buildMoetop(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds and runs the program as several processes")
	}
	bin := filepath.Join(t.TempDir(), "moetop")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// rankProc is one moetop process of a run, its stderr kept line by line.
type rankProc struct {
	cmd  *exec.Cmd
	mu   sync.Mutex
	text strings.Builder
	done chan error
}

func startRank(t *testing.T, bin string, args ...string) *rankProc {
	t.Helper()
	return startRankEnv(t, bin, nil, args...)
}

// startRankEnv starts a rank with env added to this process's environment
// (less a launcher's variables).
func startRankEnv(t *testing.T, bin string, env []string, args ...string) *rankProc {
	t.Helper()
	p := &rankProc{cmd: exec.Command(bin, args...), done: make(chan error, 1)}
	for _, kv := range os.Environ() {
		if !slices.ContainsFunc(launcherVars, func(v string) bool { return strings.HasPrefix(kv, v+"=") }) {
			p.cmd.Env = append(p.cmd.Env, kv)
		}
	}
	p.cmd.Env = append(p.cmd.Env, env...)
	pipe, err := p.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(pipe)
		for sc.Scan() {
			p.mu.Lock()
			p.text.WriteString(sc.Text() + "\n")
			p.mu.Unlock()
		}
		p.done <- p.cmd.Wait()
	}()
	t.Cleanup(func() { p.cmd.Process.Kill() })
	return p
}

func (p *rankProc) stderr() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.text.String()
}

// waitFor waits for a line matching re and returns its first group.
func (p *rankProc) waitFor(t *testing.T, re *regexp.Regexp) string {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if m := re.FindStringSubmatch(p.stderr()); m != nil {
			return m[len(m)-1]
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("no line matching %q in 30s; stderr:\n%s", re, p.stderr())
	return ""
}

// wait waits for the process to exit and returns its exit code.
func (p *rankProc) wait(t *testing.T, within time.Duration) int {
	t.Helper()
	select {
	case err := <-p.done:
		if ee, ok := err.(*exec.ExitError); ok {
			return ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		return 0
	case <-time.After(within):
		t.Fatalf("still running after %v; stderr:\n%s", within, p.stderr())
		return -1
	}
}

var listening = regexp.MustCompile(`coordinator listening on (\S+);`)

// Two processes over TCP record what one process of two ranks records:
// every step with both ranks' phases and traffic, and the same rows.
func TestTwoProcessesRecordBothRanks(t *testing.T) {
	bin := buildMoetop(t)
	dir := t.TempDir()
	log := filepath.Join(dir, "ranks.jsonl")
	layer := append([]string{"--window", "0"}, epLayer...)
	r0 := startRank(t, bin, append([]string{"--ep", "2", "--rank", "0", "--world", "2", "--coordinator", "127.0.0.1:0",
		"--steps", "5", "--record", log}, layer...)...)
	addr := r0.waitFor(t, listening)
	r1 := startRank(t, bin, append([]string{"--ep", "2", "--rank", "1", "--world", "2", "--coordinator", addr}, layer...)...)
	if code := r0.wait(t, time.Minute); code != 0 {
		t.Fatalf("rank 0 exit %d:\n%s", code, r0.stderr())
	}
	if code := r1.wait(t, time.Minute); code != 0 {
		t.Fatalf("rank 1 exit %d:\n%s", code, r1.stderr())
	}
	if s := r1.stderr(); !strings.Contains(s, "running headless") || !strings.Contains(s, "the run ended after 5 steps") {
		t.Errorf("rank 1's status:\n%s", s)
	}

	// The same run in one process.
	clearLauncher(t)
	one := filepath.Join(dir, "one.jsonl")
	if code, _, e := runCLI(t, append([]string{"--ep", "2", "--steps", "5", "--record", one}, layer...)...); code != 0 {
		t.Fatalf("one process: exit %d: %s", code, e)
	}
	want := samples(t, one)
	got := samples(t, log)
	if len(got) != 5 || len(want) != 5 {
		t.Fatalf("%d samples from two processes, %d from one; want 5 each", len(got), len(want))
	}
	for i, s := range got {
		if !slices.Equal(s.Rows, want[i].Rows) {
			t.Errorf("step %d: rows %v over two processes, %v in one", i, s.Rows, want[i].Rows)
		}
		if d := s.Phases.Devices(); !slices.Equal(d, []int{0, 1}) {
			t.Errorf("step %d: phases on devices %v, want 0 and 1", i, d)
		}
		for _, dev := range []int{0, 1} {
			for _, p := range []string{stream.PhaseDispatch, stream.PhaseWait, stream.PhaseCombine, stream.PhaseGEMM1} {
				if !hasPhase(s.Phases, p, dev) {
					t.Errorf("step %d: no %s phase on rank %d", i, p, dev)
				}
			}
		}
		if len(s.Ranks) != 2 {
			t.Fatalf("step %d: %d rank stats, want 2", i, len(s.Ranks))
		}
		for r, st := range s.Ranks {
			w := want[i].Ranks[r]
			if st.Rank != r || st.RecvRows != w.RecvRows || st.RecvTokens != w.RecvTokens || st.SentBytes != w.SentBytes {
				t.Errorf("step %d: rank stat %+v over two processes, %+v in one", i, st, w)
			}
		}
	}
}

func samples(t *testing.T, path string) []stream.Sample {
	t.Helper()
	l, err := recording.OpenLog(path)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	var out []stream.Sample
	if _, err := l.Each(func(_ int, s stream.Sample) error { out = append(out, s); return nil }); err != nil {
		t.Fatal(err)
	}
	return out
}

// A rank killed mid-run ends rank 0 at once, with a line naming it, and
// leaves a log that reads to its last step.
func TestAKilledRankEndsRankZero(t *testing.T) {
	bin := buildMoetop(t)
	log := filepath.Join(t.TempDir(), "killed.jsonl")
	const timeout = 5 * time.Second
	r0 := startRank(t, bin, append([]string{"--ep", "2", "--rank", "0", "--world", "2", "--coordinator", "127.0.0.1:0",
		"--duration", "2m", "--ep-timeout", timeout.String(), "--record", log}, epLayer...)...)
	addr := r0.waitFor(t, listening)
	r1 := startRank(t, bin, append([]string{"--ep", "2", "--rank", "1", "--world", "2", "--coordinator", addr,
		"--ep-timeout", timeout.String()}, epLayer...)...)
	r1.waitFor(t, regexp.MustCompile(`(running headless)`))
	time.Sleep(time.Second) // some steps, and a flush of the log
	r1.cmd.Process.Signal(syscall.SIGKILL)
	killed := time.Now()
	code := r0.wait(t, 10*time.Second)
	took := time.Since(killed)
	lines := strings.Split(strings.TrimSpace(r0.stderr()), "\n")
	last := lines[len(lines)-1]
	if code != 1 || !strings.Contains(last, "rank 1") || !strings.Contains(last, "killed") {
		t.Errorf("rank 0 exit %d, last line %q; want exit 1 and a line naming the killed rank 1", code, last)
	}
	if took > timeout {
		t.Errorf("rank 0 took %v to end, more than --ep-timeout %v", took, timeout)
	}
	if got := samples(t, log); len(got) == 0 || len(got[len(got)-1].Ranks) != 2 {
		t.Errorf("the log holds %d samples; want the steps before the kill, each with both ranks", len(got))
	}
}

// twoGPUs skips unless this machine has two CUDA devices and NCCL, and
// returns what runs the program: this test binary (TestMain runs main), so
// that the test needs no Go toolchain where the GPUs are.
func twoGPUs(t *testing.T) (bin string, env []string) {
	t.Helper()
	ids, err := cuda.DeviceIDs("")
	if err != nil {
		t.Skipf("skipping: %v", err) // it says "no CUDA device: why"
	}
	if len(ids) < 2 {
		t.Skipf("no CUDA device: %d found, the test needs 2", len(ids))
	}
	if _, err := cuda.LoadNCCL(""); err != nil {
		t.Skipf("no CUDA device: NCCL cannot be loaded: %v", err)
	}
	return os.Args[0], []string{"MOETOP_TEST_MAIN=1", cuda.UnverifiedGPUEPEnv + "=1", cuda.NVLSEnv + "=0"}
}

var gpuEPLayer = []string{"--backend", "loop", "--experts", "16", "--top-k", "2", "--tokens", "256", "--hidden", "256",
	"--ffn", "512", "--routing", "hot:0:0.45", "--window", "0"}

// Two processes, one GPU each (rank 1 on the GPU of its LOCAL_RANK), record
// every step with both ranks, as one process of two GPU ranks does.
func TestTwoGPUProcessesRecordBothRanks(t *testing.T) {
	bin, env := twoGPUs(t)
	dir := t.TempDir()
	log := filepath.Join(dir, "gpus.jsonl")
	r0 := startRankEnv(t, bin, env, append([]string{"--ep", "2", "--rank", "0", "--world", "2", "--coordinator", "127.0.0.1:0",
		"--steps", "5", "--record", log, "--force"}, gpuEPLayer...)...)
	addr := r0.waitFor(t, listening)
	r1 := startRankEnv(t, bin, append(env, "LOCAL_RANK=1"), append([]string{"--ep", "2", "--rank", "1", "--world", "2",
		"--coordinator", addr}, gpuEPLayer...)...)
	if code := r0.wait(t, 2*time.Minute); code != 0 {
		t.Fatalf("rank 0 exit %d:\n%s\nrank 1:\n%s", code, r0.stderr(), r1.stderr())
	}
	if code := r1.wait(t, time.Minute); code != 0 {
		t.Fatalf("rank 1 exit %d:\n%s", code, r1.stderr())
	}
	if s := r1.stderr(); !strings.Contains(s, "running headless") || !strings.Contains(s, "the run ended after 5 steps") {
		t.Errorf("rank 1's status:\n%s", s)
	}
	got := samples(t, log)
	if len(got) != 5 {
		t.Fatalf("%d samples, want 5", len(got))
	}
	for i, s := range got {
		if d := s.Phases.Devices(); !slices.Equal(d, []int{0, 1}) {
			t.Errorf("step %d: phases on devices %v, want 0 and 1", i, d)
		}
		rows, sum := 0, 0
		for _, r := range s.Ranks {
			rows += r.RecvRows
		}
		for _, r := range s.Rows {
			sum += r
		}
		if len(s.Ranks) != 2 || rows != 2*256*2 || sum != rows {
			t.Errorf("step %d: %d ranks ran %d rows, experts got %d; want 2 ranks × 256 tokens × top-2", i, len(s.Ranks), rows, sum)
		}
	}
}

// A GPU rank killed mid-run ends rank 0 within --ep-timeout, with a line
// naming it: rank 0's wait in NCCL ends through the session's loss of it.
func TestAKilledGPURankEndsRankZero(t *testing.T) {
	bin, env := twoGPUs(t)
	const timeout = 10 * time.Second
	r0 := startRankEnv(t, bin, env, append([]string{"--ep", "2", "--rank", "0", "--world", "2", "--coordinator", "127.0.0.1:0",
		"--duration", "2m", "--ep-timeout", timeout.String(), "--record", filepath.Join(t.TempDir(), "killed.jsonl"), "--force"},
		gpuEPLayer...)...)
	addr := r0.waitFor(t, listening)
	r1 := startRankEnv(t, bin, env, append([]string{"--ep", "2", "--rank", "1", "--world", "2", "--coordinator", addr,
		"--device", "1", "--ep-timeout", timeout.String()}, gpuEPLayer...)...)
	r1.waitFor(t, regexp.MustCompile(`(running headless)`))
	time.Sleep(5 * time.Second) // past NCCL's init, some steps
	r1.cmd.Process.Signal(syscall.SIGKILL)
	killed := time.Now()
	code := r0.wait(t, timeout+10*time.Second)
	took := time.Since(killed)
	lines := strings.Split(strings.TrimSpace(r0.stderr()), "\n")
	last := lines[len(lines)-1]
	if code != 1 || !strings.Contains(last, "rank 1") {
		t.Errorf("rank 0 exit %d, last line %q; want exit 1 and a line naming rank 1", code, last)
	}
	if took > timeout+2*time.Second {
		t.Errorf("rank 0 took %v to end, more than --ep-timeout %v", took, timeout)
	}
}
