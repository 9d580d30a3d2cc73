package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/moetop/moetop/ep"
	"github.com/moetop/moetop/kernels"
	"github.com/moetop/moetop/kernels/cuda"
	"github.com/moetop/moetop/profiler"
	"github.com/moetop/moetop/stream"
	"github.com/moetop/moetop/tui"
)

// epFlags are the expert-parallel flags of the live run.
type epFlags struct {
	ranks     int
	placement string
	timeout   time.Duration

	// One process per rank (multi is set by check once rank and world
	// are known, from flags or the launcher's variables).
	rank, world int
	coordinator string
	// localRank is LOCAL_RANK, -1 when unset: on GPUs, the device the
	// rank drives unless --device says otherwise.
	localRank int
	multi     bool

	// Ranks on GPUs, all in this process: --gpus names their devices
	// (default 0 … N−1); onGPU is set once backend chose that path.
	gpus    string
	devices []int
	onGPU   bool
}

func (f *epFlags) register(fs *flag.FlagSet) {
	fs.IntVar(&f.ranks, "ep", 0, "run the layer expert-parallel over N ranks, each holding --tokens tokens (0: off)")
	fs.StringVar(&f.placement, "placement", "", "with --ep: JSON `FILE` of expert → [ranks] (replicas allowed; default: contiguous blocks)")
	fs.DurationVar(&f.timeout, "ep-timeout", 30*time.Second, "with --ep: how long a rank waits for the others before the run ends (processes also wait at least 1m for every rank to join)")
	fs.IntVar(&f.rank, "rank", 0, "one process per rank: this process's rank, 0 … N−1; rank 0 shows, records and ends the run (its --steps, --duration), the others run headless until it does (default: $RANK). On GPUs (--backend loop) each process drives --device, by default $LOCAL_RANK")
	fs.IntVar(&f.world, "world", 0, "one process per rank: how many processes (ranks) the run has, = --ep (default: $WORLD_SIZE, else --ep)")
	fs.StringVar(&f.gpus, "gpus", "", fmt.Sprintf("with --ep and a GPU backend: the CUDA `ORDINALS` of the ranks, one per GPU, all in this process, such as 0,1 (default 0 … N−1; sets --ep when it is not given). Not yet checked on GPUs: needs %s=1", cuda.UnverifiedGPUEPEnv))
	fs.StringVar(&f.coordinator, "coordinator", "", fmt.Sprintf("one process per rank: `HOST:PORT` where rank 0 listens and the others connect (default: $MASTER_ADDR or 127.0.0.1, port %d: moetop's own port, since a launcher such as torchrun holds $MASTER_PORT for its store)", ep.DefaultPort))
}

// check validates the flags against each other before anything is opened,
// and resolves a multi-process run from the flags or, when --ep runs
// under a launcher, from RANK, WORLD_SIZE, LOCAL_RANK and MASTER_ADDR.
func (f *epFlags) check(fs *flag.FlagSet) error {
	set := map[string]bool{}
	fs.Visit(func(fl *flag.Flag) { set[fl.Name] = true })
	switch {
	case f.ranks < 0:
		return usagef("invalid --ep %d; want 0 (off) or the number of ranks", f.ranks)
	case f.timeout <= 0:
		return usagef("invalid --ep-timeout %s; want a positive duration such as 30s", f.timeout)
	}
	launcher := (f.ranks > 0 || f.gpus != "") && os.Getenv("RANK") != "" && os.Getenv("WORLD_SIZE") != ""
	multi := set["rank"] || set["world"] || set["coordinator"] || launcher
	if f.gpus != "" && multi {
		return usagef("--gpus names the GPUs of a run whose ranks are all in this process; with one process per GPU (--rank, --world or a launcher's RANK) each process picks its own with --device (default: LOCAL_RANK, else 0)")
	}
	if f.gpus != "" {
		if err := f.parseGPUs(); err != nil {
			return err
		}
	}
	if multi {
		if err := f.resolve(set); err != nil {
			return err
		}
		// One process per GPU: each drives the GPU of its local rank,
		// unless --device names one (as when CUDA_VISIBLE_DEVICES gives
		// each process its own GPU, which it sees as device 0).
		if !set["device"] && f.localRank >= 0 {
			cudaOptions.Device = f.localRank
		}
	}
	if f.ranks == 0 && f.placement != "" {
		return usagef("--placement needs --ep N")
	}
	return nil
}

// parseGPUs reads --gpus: distinct ordinals, as many as --ep when given.
func (f *epFlags) parseGPUs() error {
	seen := map[int]bool{}
	for _, field := range strings.Split(f.gpus, ",") {
		d, err := strconv.Atoi(strings.TrimSpace(field))
		if err != nil || d < 0 {
			return usagef("invalid --gpus %q; want CUDA device ordinals such as 0,1", f.gpus)
		}
		if seen[d] {
			return usagef("invalid --gpus %q: device %d named twice (one rank per GPU)", f.gpus, d)
		}
		seen[d] = true
		f.devices = append(f.devices, d)
	}
	switch {
	case f.ranks == 0:
		f.ranks = len(f.devices)
	case f.ranks != len(f.devices):
		return usagef("--ep %d with --gpus %s (%d GPUs): one rank per GPU, so they must agree (or leave --ep out)", f.ranks, f.gpus, len(f.devices))
	}
	return nil
}

// resolve fills rank, world, coordinator and localRank for a run of one
// process per rank.
func (f *epFlags) resolve(set map[string]bool) error {
	given := "--coordinator"
	for _, n := range []string{"world", "rank"} {
		if set[n] {
			given = "--" + n
		}
	}
	missing := "--rank and --world"
	switch {
	case set["rank"] && !set["world"]:
		missing = "--world N (or --ep N)"
	case set["world"] && !set["rank"]:
		missing = "--rank R"
	}
	need := usagef("%s needs %s (or RANK and WORLD_SIZE from a launcher such as torchrun)", given, missing)
	envInt := func(name string) (int, bool, error) {
		v := os.Getenv(name)
		if v == "" {
			return 0, false, nil
		}
		n, err := strconv.Atoi(strings.TrimSpace(v))
		if err != nil {
			return 0, false, usagef("%s=%q from the launcher is not a whole number", name, v)
		}
		return n, true, nil
	}
	if !set["rank"] {
		r, ok, err := envInt("RANK")
		if err != nil {
			return err
		}
		if !ok {
			return need
		}
		f.rank = r
	}
	if !set["world"] {
		w, ok, err := envInt("WORLD_SIZE")
		switch {
		case err != nil:
			return err
		case ok:
			f.world = w
		case f.ranks > 0:
			f.world = f.ranks
		default:
			return need
		}
	}
	switch {
	case f.world < 1:
		return usagef("invalid --world %d; want the number of processes, at least 1", f.world)
	case f.rank < 0 || f.rank >= f.world:
		return usagef("invalid --rank %d for a world of %d; want 0 … %d", f.rank, f.world, f.world-1)
	case f.ranks == 0:
		f.ranks = f.world
	case f.ranks != f.world:
		return usagef("--ep %d with a world of %d processes: each process is one rank, so --ep must equal --world (or leave --ep out)", f.ranks, f.world)
	}
	if !set["coordinator"] {
		host := os.Getenv("MASTER_ADDR")
		if host == "" {
			host = "127.0.0.1"
		}
		f.coordinator = net.JoinHostPort(host, strconv.Itoa(ep.DefaultPort))
	}
	_, port, err := net.SplitHostPort(f.coordinator)
	p, perr := strconv.Atoi(port)
	switch {
	case err != nil || perr != nil || p < 0 || p > 65535:
		return usagef("invalid --coordinator %q; want HOST:PORT, such as node0:%d", f.coordinator, ep.DefaultPort)
	case p == 0 && f.rank > 0:
		return usagef("invalid --coordinator %q for rank %d: the other ranks need the port rank 0 listens on", f.coordinator, f.rank)
	}
	f.localRank = -1
	if lr, ok, err := envInt("LOCAL_RANK"); err != nil {
		return err
	} else if ok {
		if lr < 0 {
			return usagef("LOCAL_RANK=%d from the launcher is not a local rank", lr)
		}
		f.localRank = lr
	}
	f.multi = true
	return nil
}

// backend opens the expert-parallel layer. Its ranks run the CPU
// reference, all in this process over an in-process transport, or one
// rank per process over TCP (multi); or, once the user opts into the path
// not yet checked on GPUs, on GPUs over NCCL, one rank per GPU of this
// process or one process per GPU (multi). A run that asks for a GPU
// backend without opting in is told so rather than silently moved to the
// CPU.
func (f *epFlags) backend(ctx context.Context, name string, cfg profiler.Config, stderr io.Writer) (kernels.Backend, string, error) {
	ref, _ := kernels.Reference()
	gpu, err := f.wantsGPU(name, ref.Name)
	if err != nil {
		return nil, "", err
	}
	if f.ranks > cfg.Experts {
		return nil, "", usagef("invalid --ep %d; want at most one rank per expert (%d experts)", f.ranks, cfg.Experts)
	}
	var p *ep.Placement
	if f.placement != "" {
		var err error
		p, err = ep.ReadPlacement(f.placement, cfg.Experts, f.ranks)
		if errors.Is(err, ep.ErrBadPlacement) || errors.Is(err, os.ErrNotExist) {
			return nil, "", usagef("%v", err)
		}
		if err != nil {
			return nil, "", err
		}
	}
	switch {
	case gpu && f.multi:
		return f.joinGPU(ctx, cfg, p, stderr)
	case gpu:
		return f.gpuBackend(p)
	case !f.multi:
		return &ep.CPUBackend{Ranks: f.ranks, Timeout: f.timeout, Placement: p},
			fmt.Sprintf("expert-parallel over %d ranks on the CPU reference", f.ranks), nil
	}
	sess, hosts, err := f.join(ctx, ref.Name, cfg, p, false, stderr)
	if err != nil {
		return nil, "", err
	}
	return &ep.ProcBackend{Session: sess, Placement: p},
		fmt.Sprintf("expert-parallel over %d processes on the CPU reference (hosts %s)", f.world, hosts), nil
}

// wantsGPU says whether the ranks run on GPUs: with --backend loop, or
// auto with GPUs present, and only once the user opted in
// (cuda.GPUEPAllowed); --backend cpu, and auto without opting in, keep
// them on the CPU reference.
func (f *epFlags) wantsGPU(name, ref string) (bool, error) {
	gate := cuda.GPUEPAllowed()
	switch {
	case name == ref:
		if f.gpus != "" {
			return false, usagef("--gpus needs a GPU backend (--backend loop); --backend %s runs the ranks on the CPU", ref)
		}
		return false, nil
	case name == "auto" && f.gpus == "":
		if gate != nil {
			return false, nil
		}
		ids, err := cuda.DeviceIDs(cudaOptions.LibDir)
		return err == nil && len(ids) > 0, nil
	case name == "auto" || name == "loop":
		if gate != nil {
			return false, usagef("--ep over GPUs: %v (or use --backend %s)", gate, ref)
		}
		return true, nil
	}
	if reg, ok := kernels.Lookup(name); ok && reg.NeedsGPU {
		if gate != nil {
			return false, usagef("--ep over GPUs: %v (or use --backend %s)", gate, ref)
		}
		return false, usagef("--ep over GPUs runs each rank's experts through the loop backend for now; use --backend loop (or --backend %s)", ref)
	}
	return false, usagef("--ep runs its ranks on the CPU reference or, on GPUs, the loop backend; use --backend %s or --backend loop", ref)
}

// gpuBackend is every rank on its own GPU of this process: NCCL must load
// and the GPUs must be there, or the run ends with one line.
func (f *epFlags) gpuBackend(p *ep.Placement) (kernels.Backend, string, error) {
	ids, err := cuda.DeviceIDs(cudaOptions.LibDir)
	if err != nil {
		return nil, "", usagef("--ep %d over GPUs: %s", f.ranks, oneLine(err.Error()))
	}
	devs := f.devices
	if devs == nil {
		for d := range f.ranks {
			devs = append(devs, d)
		}
	}
	if len(ids) < f.ranks {
		return nil, "", usagef("--ep %d needs %d GPUs, one per rank; %d found (moetop devices lists them)", f.ranks, f.ranks, len(ids))
	}
	for _, d := range devs {
		if d >= len(ids) {
			return nil, "", usagef("--gpus %s: there is no device %d (%d found; moetop devices lists them)", f.gpus, d, len(ids))
		}
	}
	if _, err := cuda.LoadNCCL(cudaOptions.LibDir); err != nil {
		return nil, "", usagef("--ep over GPUs: %s", oneLine(err.Error()))
	}
	f.onGPU = true
	return &cuda.EPBackend{Devices: devs, Placement: p, Timeout: f.timeout, Options: cudaOptions},
		fmt.Sprintf("expert-parallel over %d GPUs %v through NCCL (not yet checked on GPUs: %s=1)", len(devs), devs, cuda.UnverifiedGPUEPEnv), nil
}

// joinGPU makes this process its rank of a run of one process per GPU,
// on the GPU --device names (by default its LOCAL_RANK, else 0): the
// device and NCCL must be there before it joins, so that a rank that
// cannot run says so at once rather than holding the others up. Rank 0
// makes the NCCL unique id once every rank has joined, and the
// coordinator hands it to all.
func (f *epFlags) joinGPU(ctx context.Context, cfg profiler.Config, p *ep.Placement, stderr io.Writer) (kernels.Backend, string, error) {
	dev := cudaOptions.Device
	ids, err := cuda.DeviceIDs(cudaOptions.LibDir)
	if err != nil {
		return nil, "", usagef("--ep %d over GPUs, rank %d: %s", f.ranks, f.rank, oneLine(err.Error()))
	}
	if dev < 0 || dev >= len(ids) {
		return nil, "", usagef("rank %d: there is no CUDA device %d (%d found; moetop devices lists them); each process drives --device, by default its LOCAL_RANK: pass --device 0 when CUDA_VISIBLE_DEVICES gives each process one GPU", f.rank, dev, len(ids))
	}
	// LoadNCCL sets NCCL_NVLS_ENABLE=0 first (unless the user set it).
	if _, err := cuda.LoadNCCL(cudaOptions.LibDir); err != nil {
		return nil, "", usagef("--ep over GPUs, rank %d: %s", f.rank, oneLine(err.Error()))
	}
	sess, hosts, err := f.join(ctx, "loop", cfg, p, true, stderr)
	if err != nil {
		return nil, "", err
	}
	be, err := cuda.NewEPProcess(sess, dev, p, f.timeout, cudaOptions)
	if err != nil {
		sess.Abort(err)
		sess.Close()
		return nil, "", err
	}
	f.onGPU = true
	return be, fmt.Sprintf("expert-parallel over %d processes, one GPU each (this one on device %d), through NCCL (hosts %s; not yet checked on GPUs: %s=1)",
		f.world, dev, hosts, cuda.UnverifiedGPUEPEnv), nil
}

// join makes this process its rank of the run, and names the ranks'
// hosts. CPU ranks exchange rows over a TCP mesh between every pair; GPU
// ranks over NCCL, whose unique id rank 0 makes once all have joined and
// the coordinator hands every rank.
func (f *epFlags) join(ctx context.Context, backend string, cfg profiler.Config, p *ep.Placement, gpu bool, stderr io.Writer) (*ep.Session, string, error) {
	agreed := p
	if agreed == nil {
		var err error
		if agreed, err = ep.Contiguous(cfg.Experts, f.world); err != nil {
			return nil, "", usagef("%v", err)
		}
	}
	spec := ep.Spec{World: f.world, Version: version, Backend: backend, Layer: cfg.Layer()}
	for e := range agreed.Experts() {
		spec.Placement = append(spec.Placement, agreed.Replicas(e))
	}
	host, _ := os.Hostname()
	jc := ep.JoinConfig{Rank: f.rank, World: f.world, Addr: f.coordinator, Spec: spec, Host: host, LocalRank: f.localRank,
		Timeout: f.timeout, JoinTimeout: max(f.timeout, time.Minute), Mesh: !gpu}
	if gpu && f.rank == 0 {
		jc.Blob = cuda.UniqueIDBlob
	}
	if f.rank == 0 {
		ln, err := ep.Listen(f.coordinator)
		if err != nil {
			return nil, "", err
		}
		jc.Listener = ln
		fmt.Fprintf(stderr, "moetop: rank 0 of %d: coordinator listening on %s; waiting for %d more rank(s)\n",
			f.world, ln.Addr(), f.world-1)
	} else {
		fmt.Fprintf(stderr, "moetop: rank %d of %d: joining the coordinator at %s\n", f.rank, f.world, f.coordinator)
	}
	sess, err := ep.Join(ctx, jc)
	switch {
	case err != nil && ctx.Err() != nil:
		return nil, "", errInterrupted
	case errors.Is(err, ep.ErrMismatch):
		return nil, "", usagef("%v", err)
	case err != nil:
		return nil, "", err
	}
	var hosts []string
	for _, peer := range sess.Peers() {
		hosts = append(hosts, peer.Host)
	}
	return sess, strings.Join(hosts, ", "), nil
}

// errInterrupted is a run stopped (by a signal) before it started.
var errInterrupted = errors.New("interrupted while joining the run")

// describe records the run's ranks and placement in the header, so that a
// recording can be rebalanced later (moetop placement).
func (f *epFlags) describe(h *stream.Header, be kernels.Backend) {
	var p *ep.Placement
	switch b := be.(type) {
	case *ep.CPUBackend:
		h.Ranks, p = b.Ranks, b.Placement
	case *ep.ProcBackend:
		h.Ranks, p = b.Session.World(), b.Placement
	case *ep.SessionBackend:
		h.Ranks, p = b.Session.World(), b.Placement
	case *cuda.EPBackend:
		h.Ranks, p = b.Ranks(), b.Placement
	default:
		return
	}
	if p != nil {
		h.Placement = make([][]int, p.Experts())
		for e := range h.Placement {
			h.Placement[e] = append([]int(nil), p.Replicas(e)...)
		}
	}
}

// headless is a rank other than 0 of a run of one process per rank: rank 0
// alone shows, records and serves the run.
func (f *epFlags) headless() bool { return f.multi && f.rank > 0 }

// follow runs a headless rank until rank 0 ends the run, with a line when
// it does. Its own --steps and --duration do not apply: a launcher gives
// every rank the same command line, and a rank that stopped on its own
// clock would break the run for the others.
func (f *epFlags) follow(ctx context.Context, loop *profiler.Loop, stderr io.Writer) error {
	fmt.Fprintf(stderr, "moetop: rank %d of %d joined; running headless (rank 0 shows and records the run)\n", f.rank, f.world)
	n := 0
	err := drive(ctx, loop, 0, observer(func(s stream.Sample) { n += s.StepCount() }))
	switch {
	case errors.Is(err, ep.ErrEnded):
		fmt.Fprintf(stderr, "moetop: rank %d of %d: the run ended after %d steps (%s)\n", f.rank, f.world, n, oneLine(err.Error()))
		return nil
	case err == nil:
		fmt.Fprintf(stderr, "moetop: rank %d of %d: done after %d steps\n", f.rank, f.world, n)
	}
	return err
}

// fixedControl answers the view's keys in a run of one process per rank:
// the other processes cannot follow a change of layer, backend or pace
// made on rank 0.
type fixedControl struct{}

func (fixedControl) Do(tui.Request) (string, error) {
	return "", errors.New("not available with one process per rank: every rank keeps the layer it started with")
}

// inProcess is how many ranks the memory check counts on one device: all
// of --ep N's when they run here on the CPU, one when each rank is its own
// process or its own GPU. (Each GPU also holds the exchange's receive
// buffers, which the check does not count yet.)
func (f *epFlags) inProcess() int {
	if f.ranks > 1 && !f.multi && !f.onGPU {
		return f.ranks
	}
	return 1
}
