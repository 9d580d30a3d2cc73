# moetop. Every target works on a fresh machine with Go and gcc (cgo).
GO       ?= go
BIN      ?= bin
VERSION  ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS  := -X main.version=$(VERSION)
export CGO_ENABLED = 1
# go-nvml's generated cgo calls deprecated NVML functions; the warnings are noise.
export CGO_CFLAGS ?= -O2 -g -Wno-deprecated-declarations

.PHONY: run build test bench fuzz lint gpu-bins gpu-verify clean

# Opens the live view: on the GPU when there is one, otherwise on the CPU
# reference backend.
run: build
	$(BIN)/moetop $(ARGS)

build:
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN)/moetop ./cmd/moetop

test:
	$(GO) vet ./...
	$(GO) test -count=1 ./...

bench:
	$(GO) test -run '^$$' -bench . -benchtime 2s ./...

# A minute of fuzzing the log reader. Go minimises each new input for up
# to -fuzzminimizetime (60 s by default), which stalls on inputs this size.
fuzz:
	$(GO) test -run '^$$' -fuzz FuzzOpenLog -fuzztime 60s -fuzzminimizetime 2s ./recording

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

# What the GPU machine needs: the binary, the CUDA test binary and the peer
# script, in one ignored folder to pass to the device tool's carry.
gpu-bins: build
	$(GO) test -c -o $(BIN)/cuda.test ./kernels/cuda
	cp ../shared/peer/torch_moe_peer.py $(BIN)/ 2>/dev/null || echo "peer script not found beside the repo (../shared/peer)"

# On the GPU machine: check, time and compare with the peer in one go
# (scripts/gpu-run.sh says what each part does; logs go to $$OUT).
gpu-verify:
	bash scripts/gpu-run.sh check live bench

clean:
	rm -rf $(BIN)
