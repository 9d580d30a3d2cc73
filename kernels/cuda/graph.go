package cuda

/*
#include "calls.h"
*/
import "C"

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// graphs replays the expert GEMMs of a load seen before as a CUDA graph:
// with 128 or 256 experts a step issues hundreds of small GEMMs, and the
// host's launch overhead, not the GPU, sets the pace. A graph is captured
// the second time a load (the per-expert counts) appears, so a load that
// changes every step (the live router) pays nothing for capture; bench's
// fixed loads and a router that has settled replay graphs. The buffers do
// not move between Prepare calls, so a graph stays valid until the next.
type graphs struct {
	seen  map[string]bool
	execs map[string]C.CUgraphExec
}

const maxGraphs = 16

func graphsAvailable() bool {
	return C.cu.cuStreamBeginCapture_v2 != nil && C.cu.cuGraphInstantiateWithFlags != nil && C.cu.cuGraphLaunch != nil
}

func loadKey(counts []int, second bool) string {
	var b strings.Builder
	if second {
		b.WriteByte('2')
	}
	for _, c := range counts {
		b.WriteString(strconv.Itoa(c))
		b.WriteByte(',')
	}
	return b.String()
}

// run issues gemm on stream, through a graph when the load repeats.
func (g *graphs) run(stream C.CUstream, key string, gemm func() error) error {
	if g.execs == nil {
		g.seen, g.execs = map[string]bool{}, map[string]C.CUgraphExec{}
	}
	if exec, ok := g.execs[key]; ok {
		return check("cuGraphLaunch", C.call_cuGraphLaunch(exec, stream))
	}
	if !g.seen[key] || !graphsAvailable() {
		if len(g.seen) > 4*maxGraphs {
			g.seen = map[string]bool{}
		}
		g.seen[key] = true
		return gemm()
	}
	if len(g.execs) >= maxGraphs {
		if err := g.release(); err != nil {
			return err
		}
		g.seen, g.execs = map[string]bool{}, map[string]C.CUgraphExec{}
	}
	// Relaxed capture: cuBLAS may query the device while being captured.
	if err := check("cuStreamBeginCapture_v2", C.call_cuStreamBeginCapture_v2(stream, 2)); err != nil {
		return err
	}
	gerr := gemm()
	var graph C.CUgraph
	if err := check("cuStreamEndCapture", C.call_cuStreamEndCapture(stream, &graph)); err != nil || gerr != nil {
		if graph != nil {
			err = errors.Join(err, check("cuGraphDestroy", C.call_cuGraphDestroy(graph)))
		}
		if gerr != nil {
			return errors.Join(fmt.Errorf("capturing: %w", gerr), err)
		}
		return err
	}
	var exec C.CUgraphExec
	err := check("cuGraphInstantiateWithFlags", C.call_cuGraphInstantiateWithFlags(&exec, graph, 0))
	// The executable graph holds its own copy: the graph goes either way.
	err = errors.Join(err, check("cuGraphDestroy", C.call_cuGraphDestroy(graph)))
	if err != nil {
		if exec != nil {
			err = errors.Join(err, check("cuGraphExecDestroy", C.call_cuGraphExecDestroy(exec)))
		}
		return err
	}
	g.execs[key] = exec
	return check("cuGraphLaunch", C.call_cuGraphLaunch(exec, stream))
}

// release destroys every graph, going on past one that fails.
func (g *graphs) release() error {
	var errs []error
	for _, e := range g.execs {
		errs = append(errs, check("cuGraphExecDestroy", C.call_cuGraphExecDestroy(e)))
	}
	g.execs, g.seen = nil, nil
	return errors.Join(errs...)
}
