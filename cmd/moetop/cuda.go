package main

import (
	"github.com/moetop/moetop/kernels"
	"github.com/moetop/moetop/kernels/cuda"
)

// cudaOptions are set by --cuda-lib-dir and --device before a backend opens.
var cudaOptions = cuda.Options{TimeExperts: true}

func init() {
	gpuOpener = func(name string) (kernels.Backend, error) {
		return cuda.New(name, cudaOptions)
	}
}
