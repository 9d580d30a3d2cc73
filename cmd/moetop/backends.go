package main

import (
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/moetop/moetop/kernels"
)

// backendNames are the backends --backend accepts.
var backendNames = []string{"auto", "cpu", "grouped", "loop", "streams", "padded"}

// gpuOpener opens a named CUDA backend; nil until the CUDA backends are
// linked in (kernels/cuda), and it returns kernels.ErrNoGPU without a GPU.
var gpuOpener func(name string) (kernels.Backend, error)

// openBackend opens the named backend. auto takes the GPU when there is
// one and otherwise falls back to the CPU reference, saying why on stderr.
func openBackend(name string, stderr io.Writer) (kernels.Backend, string, error) {
	valid := false
	for _, n := range backendNames {
		valid = valid || n == name
	}
	if !valid {
		return nil, "", usagef("invalid --backend %q; want one of %s", name, strings.Join(backendNames, ", "))
	}
	if name == "cpu" {
		return cpuBackend(), "", nil
	}
	var err error = fmt.Errorf("%w: moetop was built without CUDA support", kernels.ErrNoGPU)
	if gpuOpener != nil {
		gname := name
		if gname == "auto" {
			gname = "grouped"
		}
		var b kernels.Backend
		if b, err = gpuOpener(gname); err == nil {
			return b, "", nil
		}
	}
	if name != "auto" || !errors.Is(err, kernels.ErrNoGPU) {
		return nil, "", fmt.Errorf("backend %s: %w", name, err)
	}
	reason := oneLine(err.Error())
	fmt.Fprintf(stderr, "moetop: %s; using the cpu reference backend\n", reason)
	return cpuBackend(), reason, nil
}

func cpuBackend() *kernels.CPU {
	c := kernels.NewCPU()
	c.MemAvailable = hostMemAvailable
	return c
}
