package main

import (
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/moetop/moetop/kernels"
	"github.com/moetop/moetop/kernels/cuda"
	"github.com/moetop/moetop/profiler"
)

// backendNames are the backends --backend accepts.
var backendNames = []string{"auto", "cpu", "grouped", "loop", "streams", "padded", "hybrid"}

func checkBackendName(name string) error {
	for _, n := range backendNames {
		if n == name {
			return nil
		}
	}
	return usagef("invalid --backend %q; want one of %s", name, strings.Join(backendNames, ", "))
}

// gpuReason is why there is no usable GPU, or "" when there is one.
func gpuReason() string {
	d, err := cuda.OpenDevice(cudaOptions.LibDir, cudaOptions.Device)
	if err != nil {
		return oneLine(err.Error())
	}
	d.Close()
	return ""
}

// openBackend opens a backend by name: a CUDA one, or the CPU reference.
func openBackend(name string) (kernels.Backend, error) {
	if name == "cpu" {
		return cpuBackend(), nil
	}
	return cuda.New(name, cudaOptions)
}

// chooseBackend resolves auto: with a GPU, a short calibration of every
// CUDA backend on the layer picks the fastest; without one, the CPU
// reference, saying why on stderr. why goes into the header.
func chooseBackend(ctx context.Context, name string, cfg profiler.Config, noGPU string, stderr io.Writer) (b kernels.Backend, why string, err error) {
	switch {
	case name == "auto" && noGPU != "":
		fmt.Fprintf(stderr, "moetop: %s; using the cpu reference backend\n", noGPU)
		return cpuBackend(), "no GPU: " + noGPU, nil
	case name == "auto":
		fmt.Fprintf(stderr, "moetop: calibrating %s on %s ...\n", strings.Join(kernels.GPUBackends, ", "), cfg)
		cal, err := profiler.Calibrate(ctx, cfg, kernels.GPUBackends, openWithoutGraphs, 5)
		if err != nil {
			return nil, "", err
		}
		why = cal.Reason()
		fmt.Fprintf(stderr, "moetop: %s\n", why)
		name = cal.Best
	case name != "cpu" && noGPU != "":
		return nil, "", fmt.Errorf("backend %s needs a GPU: %s (use --backend cpu)", name, noGPU)
	}
	b, err = openBackend(name)
	if err != nil {
		return nil, "", fmt.Errorf("backend %s: %w", name, err)
	}
	return b, why, nil
}

// openWithoutGraphs opens a CUDA backend that issues every GEMM from the
// host, as the live loop effectively runs: its router's counts change every
// step, so a replayed graph of one fixed load would flatter loop and
// streams in a calibration or a reference measured on fixed loads.
func openWithoutGraphs(name string) (kernels.Backend, error) {
	o := cudaOptions
	o.NoGraphs = true
	return cuda.New(name, o)
}

func cpuBackend() *kernels.CPU {
	c := kernels.NewCPU()
	c.MemAvailable = hostMemAvailable
	return c
}
