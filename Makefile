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

# A minute of fuzzing the log readers (a whole log, then one line). Go
# minimises each new input for up to -fuzzminimizetime (60 s by default),
# which stalls on inputs this size.
# Every fuzzer of what a user hands moetop (logs, traces, dumps,
# placements, what the coordinator reads off the wire) and of the view
# drawing whatever a log holds, FUZZTIME each.
FUZZTIME ?= 20s
FUZZERS := recording:FuzzOpenLog recording:FuzzSampleLine tui:FuzzView trace:FuzzRead trace:FuzzUnpickle \
	trace:FuzzImportTorch trace:FuzzImportTables trace:FuzzImportFLAME ep:FuzzParsePlacement ep:FuzzDecodeMsg
fuzz:
	@set -e; for f in $(FUZZERS); do pkg=$${f%%:*}; name=$${f#*:}; \
		echo "fuzz $$name ($$pkg, $(FUZZTIME))"; \
		$(GO) test -run '^$$' -fuzz "^$$name$$" -fuzztime $(FUZZTIME) -fuzzminimizetime 2s ./$$pkg; done

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

# What scripts/gpu-run.sh runs: moetop, the CUDA test binary, and the
# PyTorch peer script (PEER=FILE) when there is one; without it the bench
# times moetop alone. Nothing CUDA is needed to build them.
PEER ?= ../shared/peer/torch_moe_peer.py
gpu-bins: build
	$(GO) test -c -o $(BIN)/cuda.test ./kernels/cuda
	$(GO) test -c -o $(BIN)/nvml.test ./nvml
	@if [ -f "$(PEER)" ]; then cp "$(PEER)" $(BIN)/torch_moe_peer.py; \
	else echo "no peer script at $(PEER) (set PEER=FILE): the bench will run without the PyTorch comparison"; fi
	@for p in hf_layer_peer.py torch_ep_peer.py; do \
		if [ -f "$(dir $(PEER))$$p" ]; then cp "$(dir $(PEER))$$p" $(BIN)/; fi; done

# On a machine with an NVIDIA GPU: the GPU tests, moetop check, a recorded
# run, then the bench beside the peer. Logs and results go to RESULTS (a
# folder; by default ./results-DATE), a summary to the terminal;
# scripts/gpu-run.sh says what each part does.
RESULTS ?=
gpu-verify: gpu-bins
	bash scripts/gpu-run.sh $(if $(RESULTS),--out "$(RESULTS)") check live bench

clean:
	rm -rf $(BIN)
