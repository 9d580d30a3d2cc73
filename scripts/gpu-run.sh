#!/usr/bin/env bash
# Runs on the GPU machine (the device tool), from the repository root, with
# bin/ built by `make gpu-bins` here. Checks, times and compares with the
# peer in one call; full logs go to $OUT, a short table to stdout.
#   usage: scripts/gpu-run.sh [check|bench|all]
set -u
OUT=${OUT:-/tmp/moetop-out}
mkdir -p "$OUT"
what=${1:-all}
export PYTHONUNBUFFERED=1
step() { echo; echo "=== $*"; }

step "card"
nvidia-smi --query-gpu=name,memory.used,memory.total,utilization.gpu,power.draw,temperature.gpu,clocks.sm --format=csv | tee "$OUT/nvidia-smi.csv"
bin/moetop devices | tee "$OUT/devices.txt"

if [ "$what" = check ] || [ "$what" = all ]; then
  step "GPU tests"
  (cd kernels/cuda && ../../bin/cuda.test -test.v -test.count=1 2>&1) > "$OUT/cuda-test.log"
  grep -E "^(--- |ok|FAIL|PASS)|predicted" "$OUT/cuda-test.log" | head -60
  step "moetop check"
  bin/moetop check --cases 4 > "$OUT/check.txt" 2>&1; echo "check exit $?"
  tail -3 "$OUT/check.txt"; grep FAIL "$OUT/check.txt" | head -20
fi

if [ "$what" = bench ] || [ "$what" = all ]; then
  step "bench (moetop and the peer on the same shapes and counts)"
  shapes="--shape mixtral:8192:4096:14336:8:2 --shape seed-mid:16384:512:2048:8:4 --shape qwen3-moe:8192:2048:768:128:8 --shape dsv3:4096:7168:2048:256:8"
  bin/moetop bench $shapes --dist uniform,zipf:1.2 --format json --out "$OUT/moetop-bench.json" 2> "$OUT/moetop-bench.log"
  tail -6 "$OUT/moetop-bench.log"
  python3 bin/torch_moe_peer.py $shapes --dist uniform --dist zipf:1.2 --json "$OUT/peer.json" > "$OUT/peer.log" 2>&1
  tail -8 "$OUT/peer.log"
  python3 scripts/compare.py "$OUT/moetop-bench.json" "$OUT/peer.json" | tee "$OUT/compare.txt"
fi
