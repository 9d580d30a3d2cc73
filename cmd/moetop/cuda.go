package main

import "github.com/moetop/moetop/kernels/cuda"

// cudaOptions are set by --cuda-lib-dir and --device before a backend opens.
var cudaOptions = cuda.Options{TimeExperts: true}
