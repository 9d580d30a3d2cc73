#!/usr/bin/env bash
# Checks, times and compares moetop on a machine with an NVIDIA GPU, from a
# checkout of this repository. `make gpu-verify` builds what it needs and runs
# it; to run it by hand, build first with `make gpu-bins` (bin/moetop,
# bin/cuda.test, bin/nvml.test and, when the Makefile finds it, the peer script
# bin/torch_moe_peer.py, which needs PyTorch with CUDA).
# Full logs and results go to DIR, a short summary to stdout.
#
#   usage: scripts/gpu-run.sh [--out DIR] [--peer FILE] [--baseline BIN] [PART ...]
#     --out DIR    where results go (default ./results-YYYYmmdd-HHMMSS)
#     --peer FILE  the PyTorch peer script (default bin/torch_moe_peer.py);
#                  without it, bench and hybrid time moetop alone
#     --baseline BIN  another moetop build to time beside this one (regress), or a moetop/1 build (v1log)
#     PART         check live bench report overhead hybrid device1 oomsample
#                  regress layers decode hopper hopperbench ep epbench v1log
#                  (epbench: bench --ep N beside torch_ep_peer.py, found
#                  beside --peer, on 2 and 4 GPUs), or all
#                  (= check live bench, the default)
set -u
usage() { sed -n '/^#   usage:/,/^#.*(= check/s/^# \{0,1\}//p' "$0"; }

DIR=./results-$(date +%Y%m%d-%H%M%S)
PEER=
BASELINE=
parts=()
while [ $# -gt 0 ]; do
  case $1 in
    --out) [ $# -ge 2 ] || { echo "gpu-run: --out needs a folder" >&2; exit 2; }; DIR=$2; shift 2;;
    --out=*) DIR=${1#--out=}; shift;;
    --peer) [ $# -ge 2 ] || { echo "gpu-run: --peer needs a file" >&2; exit 2; }; PEER=$2; shift 2;;
    --peer=*) PEER=${1#--peer=}; shift;;
    --baseline=*) BASELINE=${1#--baseline=}; shift;;
    --baseline) [ $# -ge 2 ] || { echo "gpu-run: --baseline needs a moetop binary" >&2; exit 2; }; BASELINE=$2; shift 2;;
    -h|--help) usage; exit 0;;
    check|live|bench|report|overhead|hybrid|device1|oomsample|regress|layers|decode|hopper|hopperbench|ep|epbench|v1log|all) parts+=("$1"); shift;;
    *) echo "gpu-run: unknown argument $1 (want check, live, bench, report, overhead, hybrid, device1, oomsample, regress, layers, decode, hopper, hopperbench, ep, epbench, v1log, all, --out DIR, --peer FILE, --baseline BIN)" >&2; exit 2;;
  esac
done
[ ${#parts[@]} -gt 0 ] || parts=(all)

# Check what the run needs before anything is written.
root=$(cd "$(dirname "$0")/.." && pwd) || exit 2
for b in bin/moetop bin/cuda.test; do
  [ -x "$root/$b" ] || { echo "gpu-run: $root/$b is missing: run make gpu-bins first" >&2; exit 2; }
done
command -v nvidia-smi >/dev/null || { echo "gpu-run: nvidia-smi not found: this needs a machine with an NVIDIA GPU and its driver" >&2; exit 2; }

# --out and --peer are taken from where the script was started; the parts
# run from the repository root.
mkdir -p "$DIR" || { echo "gpu-run: cannot create $DIR" >&2; exit 2; }
DIR=$(cd "$DIR" && pwd)
case $PEER in "") PEER=$root/bin/torch_moe_peer.py;; /*) ;; *) PEER=$PWD/$PEER;; esac
case $BASELINE in ""|/*) ;; *) BASELINE=$PWD/$BASELINE;; esac
cd "$root" || exit 2

export PYTHONUNBUFFERED=1 TERM=xterm-256color
step() { echo; echo "=== $*"; }

# have_peer: whether the peer script is there; if not, says so.
have_peer() {
  [ -f "$PEER" ] && return 0
  echo "(no peer script at $PEER: moetop alone; pass --peer FILE to compare with PyTorch)"
  return 1
}

run_check() {
  step "GPU tests"
  (cd kernels/cuda && ../../bin/cuda.test -test.v -test.count=1 -test.timeout 300s 2>&1) > "$DIR/cuda-test.log"
  grep -E "^(--- |ok|FAIL|PASS)|predicted" "$DIR/cuda-test.log" | head -40
  if [ -x bin/nvml.test ]; then
    step "NVML tests on the card"
    (cd nvml && ../bin/nvml.test -test.v -test.count=1 2>&1) > "$DIR/nvml-test.log"
    grep -E "^(--- |ok|FAIL|PASS)" "$DIR/nvml-test.log" | head -20
  fi
  step "moetop check"
  bin/moetop check --cases 4 > "$DIR/check.txt" 2>&1; echo "check exit $?"
  tail -1 "$DIR/check.txt"; grep FAIL "$DIR/check.txt" | head -10
}

run_live() {
  step "a recorded GPU run, with nvidia-smi and moetop devices taken during it"
  bin/moetop --record "$DIR/live.jsonl.zst" --duration 25s --force > "$DIR/live-record.log" 2>&1 &
  pid=$!
  sleep 14
  nvidia-smi --query-gpu=memory.used,memory.total,utilization.gpu,power.draw,temperature.gpu,clocks.sm --format=csv | tee "$DIR/smi-during.csv"
  bin/moetop devices | tee "$DIR/devices-during.txt"
  wait $pid; echo "record exit $?"; cat "$DIR/live-record.log"
  bin/moetop summary "$DIR/live.jsonl.zst" | tee "$DIR/live-summary.txt"

  step "padded past the card's memory: OOM events, the run goes on"
  # dsv3's layer with zipf:1.2 pads to ~68 GB at 8192 tokens: enough on an
  # 80 GB card, twice that on a 141 GB one.
  total=$(nvidia-smi --query-gpu=memory.total --format=csv,noheader,nounits | head -1)
  tokens=8192; [ "$total" -gt 100000 ] && tokens=16384
  nvidia-smi --query-gpu=memory.used --format=csv,noheader | tee "$DIR/oom-mem-before.txt"
  bin/moetop --backend padded --tokens $tokens --hidden 7168 --ffn 2048 --experts 256 --top-k 8 \
    --routing zipf:1.2 --interval 100ms --record "$DIR/oom.jsonl" --duration 20s --force 2>&1 | tail -2
  nvidia-smi --query-gpu=memory.used --format=csv,noheader | tee "$DIR/oom-mem-after.txt"
  bin/moetop summary "$DIR/oom.jsonl" | tee "$DIR/oom-summary.txt" | grep -E "steps|OOM|headroom|padded"
  python3 scripts/memtrace.py "$DIR/oom.jsonl" | tee "$DIR/oom-memtrace.txt" | tail -12

  step "auto on many experts: which backend does the calibration pick?"
  for experts in 128 256; do
    if [ $experts = 128 ]; then layer=(--tokens 8192 --hidden 2048 --ffn 768 --experts 128 --top-k 8)
    else layer=(--tokens 4096 --hidden 7168 --ffn 2048 --experts 256 --top-k 8); fi
    bin/moetop "${layer[@]}" --record "$DIR/auto.jsonl" --steps 50 --force 2>&1 | grep -E "auto picked|recorded"
  done

  if command -v tmux >/dev/null; then
    step "the TUI on the GPU, in tmux 120x40"
    # A server of its own, so a tmux the user has open is left alone.
    T=(tmux -L moetop-gpu-run)
    "${T[@]}" new -d -s g -x 120 -y 40 "cd '$PWD' && bin/moetop 2> '$DIR/tui-stderr.txt'; sleep 30"
    sleep 20; "${T[@]}" capture-pane -p -t g > "$DIR/tui-1.txt"
    "${T[@]}" send-keys -t g b; sleep 6; "${T[@]}" capture-pane -p -t g > "$DIR/tui-2-backend.txt"
    "${T[@]}" send-keys -t g +; sleep 6; "${T[@]}" capture-pane -p -t g > "$DIR/tui-3-tokens.txt"
    "${T[@]}" send-keys -t g q; sleep 1; "${T[@]}" kill-server 2>/dev/null
    cat "$DIR/tui-1.txt"; tail -2 "$DIR/tui-2-backend.txt"; head -2 "$DIR/tui-3-tokens.txt"
  else
    step "the TUI capture is skipped: no tmux on PATH"
  fi
}

run_bench() {
  step "bench beside the peer on the same shapes and counts"
  shapes=(--shape seed-max:65536:4224:16896:8:3 --shape mixtral:8192:4096:14336:8:2 --shape seed-mid:16384:512:2048:8:4
          --shape qwen3-moe:8192:2048:768:128:8 --shape dsv3:4096:7168:2048:256:8)
  bin/moetop bench "${shapes[@]}" --dist uniform,seed-uneven,zipf:1.2 --format json --out "$DIR/moetop-bench.json" 2> "$DIR/moetop-bench.log"
  tail -5 "$DIR/moetop-bench.log"
  bin/moetop bench --shape qwen3-moe:8192:2048:768:128:8 --shape dsv3:4096:7168:2048:256:8 --dist uniform,zipf:1.2 \
    --backends loop,streams --no-graphs --format json --out "$DIR/moetop-nographs.json" 2> "$DIR/moetop-nographs.log"
  have_peer || return
  python3 "$PEER" "${shapes[@]}" --dist uniform --dist seed-uneven --dist zipf:1.2 --json "$DIR/peer.json" > "$DIR/peer.log" 2>&1
  tail -15 "$DIR/peer.log"
  python3 scripts/compare.py "$DIR/moetop-bench.json" "$DIR/peer.json" "$DIR/moetop-nographs.json" | tee "$DIR/compare.txt"
}

run_overhead() {
  step "bench's own overhead against a bare loop of the same cublasGemmEx calls"
  (cd kernels/cuda && ../../bin/cuda.test -test.run '^$' -test.bench BenchOverhead -test.benchtime 1x 2>&1) | tee "$DIR/overhead.txt" | grep -E "Benchmark|ok|FAIL"
}

run_hybrid() {
  step "hybrid: GemmEx for busy experts, one grouped call for the tail, beside the peer"
  (cd kernels/cuda && ../../bin/cuda.test -test.count=1 2>&1) > "$DIR/cuda-test.log"; tail -1 "$DIR/cuda-test.log"
  grep -E "^--- FAIL" "$DIR/cuda-test.log"
  bin/moetop check --backends hybrid --cases 6 > "$DIR/check-hybrid.txt" 2>&1; tail -1 "$DIR/check-hybrid.txt"
  shapes=(--shape mixtral:8192:4096:14336:8:2 --shape qwen3-moe:8192:2048:768:128:8 --shape dsv3:4096:7168:2048:256:8)
  bin/moetop bench "${shapes[@]}" --dist uniform,seed-uneven,zipf:1.2 --format json --out "$DIR/moetop-bench.json" 2> "$DIR/moetop-bench.log"
  tail -6 "$DIR/moetop-bench.log"
  if have_peer; then
    python3 "$PEER" "${shapes[@]}" --dist uniform --dist seed-uneven --dist zipf:1.2 --json "$DIR/peer.json" > "$DIR/peer.log" 2>&1
    python3 scripts/compare.py "$DIR/moetop-bench.json" "$DIR/peer.json" | tee "$DIR/compare.txt"
  fi
  python3 - "$DIR/moetop-bench.json" <<'PY'
import json, sys
for r in json.load(open(sys.argv[1])):
    if r["backend"] in ("hybrid", "streams", "grouped", "loop") and r["status"] == "ok":
        print(f"{r['case']['name']:10s} {r['dist']:11s} {r['backend']:8s} {r['tflops']:6.1f}")
PY
}

run_device1() {
  step "--device 1 runs on GPU 1 only, and the log says so"
  n=$(nvidia-smi --query-gpu=index --format=csv,noheader | wc -l)
  if [ "$n" -lt 2 ]; then echo "(one GPU here: skipped)"; return; fi
  bin/moetop devices | tee "$DIR/devices.txt"
  bin/moetop --device 1 --record "$DIR/device1.jsonl" --duration 15s --force > "$DIR/device1.log" 2>&1 &
  pid=$!
  sleep 10
  nvidia-smi --query-gpu=index,uuid,pci.bus_id,memory.used,utilization.gpu --format=csv | tee "$DIR/device1-smi.csv"
  wait $pid; echo "record exit $?"
  python3 - "$DIR/device1.jsonl" "$DIR/device1-smi.csv" <<'PY'
import csv, json, sys
h = json.loads(open(sys.argv[1]).readline())
smi = list(csv.DictReader(open(sys.argv[2]), skipinitialspace=True))
uuid1 = smi[1]["uuid"]
d = (h.get("devices") or [{}])[0]
print("header device:", d)
print("GPU 1 uuid:", uuid1, "| match:", d.get("uuid") == uuid1, "| cuda ordinal 1:", d.get("cuda") == 1)
print("GPU 0 during the run:", smi[0]["memory.used [MiB]"], smi[0]["utilization.gpu [%]"])
PY
}

run_oomsample() {
  step "the out-of-memory loop with fast sampling (an NVML crash before the fix): three runs"
  for i in 1 2 3; do
    bin/moetop --backend padded --tokens 32768 --hidden 7168 --ffn 2048 --experts 256 --top-k 8 \
      --routing hot:0:0.125 --interval 50ms --record "$DIR/oom$i.jsonl" --duration 15s --force > "$DIR/oom$i.log" 2>&1
    echo "run $i exit $? $(grep -c SIGSEGV "$DIR/oom$i.log") SIGSEGV lines; $(tail -1 "$DIR/oom$i.log")"
  done
}

run_regress() {
  step "this build beside --baseline, interleaved, on the default and a fine-grained layer"
  if [ -z "$BASELINE" ]; then echo "(no --baseline BIN: skipped)"; return; fi
  for round in 1 2; do
    for which in base this; do
      b=bin/moetop; [ $which = base ] && b=$BASELINE
      "$b" bench --shape mixtral:8192:4096:14336:8:2 --shape qwen3-moe:8192:2048:768:128:8 --dist uniform,zipf:1.2 \
        --format json --out "$DIR/regress-$round-$which.json" 2>> "$DIR/regress.log"
    done
  done
  python3 - "$DIR"/regress-*.json <<'PY'
import json, sys
best = {}
for path in sys.argv[1:]:
    which = "this" if path.endswith("-this.json") else "baseline"
    for r in json.load(open(path)):
        if r.get("status") == "ok":
            k = (r["case"]["name"], r["dist"], r["backend"], which)
            best[k] = max(best.get(k, 0), r["tflops"])
for (name, dist, be, which), tf in sorted(best.items()):
    if which == "this" and (name, dist, be, "baseline") in best:
        base = best[(name, dist, be, "baseline")]
        print(f"{name:10s} {dist:9s} {be:8s} {tf:7.1f} vs {base:7.1f} TFLOP/s  {tf / base:5.3f}x")
PY
}

run_hopper() {
  step "hopper: our grouped GEMM's tests, its SASS, moetop check, the kernel alone, then beside the others"
  # The tests in the order to read their failures: weights, dense GEMM,
  # grouped GEMM, the backend against the CPU reference.
  (cd kernels/cuda && MOETOP_HOPPER_CUBIN="$DIR/hopper.cubin" ../../bin/cuda.test -test.run Hopper -test.v -test.count=1 -test.timeout 300s 2>&1) \
    > "$DIR/hopper-test.log"
  grep -E "^(--- |ok|FAIL|PASS)|registers|got .*want|values off" "$DIR/hopper-test.log" | head -60
  objdump=$(command -v cuobjdump || echo /usr/local/cuda/bin/cuobjdump)
  if [ -x "$objdump" ] && [ -f "$DIR/hopper.cubin" ]; then
    "$objdump" -sass "$DIR/hopper.cubin" > "$DIR/hopper.sass"
    echo "SASS: $(grep -c HGMMA "$DIR/hopper.sass") HGMMA, $(grep -c UTMALDG "$DIR/hopper.sass") UTMALDG," \
      "$(grep -cE '\b(LDL|STL)\b' "$DIR/hopper.sass") local loads/stores (want 0)"
  fi
  # MOETOP_UNVERIFIED_HOPPER=1: the backend refuses to run without it until
  # a run like this one has checked it. check has no activation flag: its
  # first four cases of each dtype are gelu, silu, swiglu and geglu, and the
  # rest draw any, so 12 cases check the gated epilogue several times over;
  # the count of gated lines says so.
  MOETOP_UNVERIFIED_HOPPER=1 timeout 240 bin/moetop check --backends hopper --dtypes bf16,fp16 --cases 12 > "$DIR/check-hopper.txt" 2>&1
  echo "check exit $?"; tail -3 "$DIR/check-hopper.txt"; grep FAIL "$DIR/check-hopper.txt" | head -10
  echo "gated cases checked: $(grep -cE '\b(swiglu|geglu)\b' "$DIR/check-hopper.txt")"
  # The kernel alone: prefill (8192 tokens) and decode (128), plain, gated
  # gemm1 and the gemm2 after it; _chosen marks what the backend runs.
  (cd kernels/cuda && ../../bin/cuda.test -test.run '^$' -test.bench HopperGEMM -test.benchtime 20x 2>&1) \
    | tee "$DIR/hopper-bench.txt" | grep -E "Benchmark|ok|FAIL"
}

run_hopperbench() {
  step "hopper beside the other backends and the peer: prefill and decode shapes, gelu and swiglu"
  # dsv3-decode and qwen3-moe-decode average 4 and 8 rows an expert: the
  # backend runs its 64-row decode tiles there, 128-row tiles elsewhere.
  shapes=(--shape qwen3-moe:8192:2048:768:128:8 --shape olmoe:16384:2048:1024:64:8 --shape dsv3:4096:7168:2048:256:8
          --shape dsv3-decode:128:7168:2048:256:8 --shape qwen3-moe-decode:128:2048:768:128:8
          --shape mixtral:8192:4096:14336:8:2)
  MOETOP_UNVERIFIED_HOPPER=1 bin/moetop bench "${shapes[@]}" --dist uniform,seed-uneven,zipf:1.2 \
    --backends hopper,grouped,loop,streams,padded,hybrid --format json --out "$DIR/moetop-bench.json" 2> "$DIR/moetop-bench.log"
  tail -6 "$DIR/moetop-bench.log"
  # Gated (SwiGLU): the epilogue's act(gate)·up, prefill and decode.
  gated=(--shape qwen3-moe:8192:2048:768:128:8 --shape dsv3-decode:128:7168:2048:256:8
         --shape qwen3-moe-decode:128:2048:768:128:8 --shape mixtral-decode:128:4096:14336:8:2)
  MOETOP_UNVERIFIED_HOPPER=1 bin/moetop bench "${gated[@]}" --act swiglu --dist uniform,zipf:1.2 \
    --backends hopper,grouped,loop,hybrid --format json --out "$DIR/moetop-bench-swiglu.json" 2> "$DIR/moetop-bench-swiglu.log"
  tail -6 "$DIR/moetop-bench-swiglu.log"
  if have_peer; then
    python3 "$PEER" "${shapes[@]}" --dist uniform --dist seed-uneven --dist zipf:1.2 --json "$DIR/peer.json" > "$DIR/peer.log" 2>&1
    python3 scripts/compare.py "$DIR/moetop-bench.json" "$DIR/peer.json" | tee "$DIR/compare.txt"
    python3 "$PEER" "${gated[@]}" --gated --dist uniform --dist zipf:1.2 --json "$DIR/peer-swiglu.json" > "$DIR/peer-swiglu.log" 2>&1
    python3 scripts/compare.py "$DIR/moetop-bench-swiglu.json" "$DIR/peer-swiglu.json" | tee "$DIR/compare-swiglu.txt"
  fi
}

run_layers() {
  step "whole layers of published models, prefill and decode, beside Hugging Face transformers' MoE blocks"
  hf=$(dirname "$PEER")/hf_layer_peer.py
  for m in mixtral-8x7b qwen3-30b-a3b deepseek-v3; do
    for t in 4096 128; do
      timeout 120 bin/moetop --model $m --tokens $t --steps 300 --window 0 --record "$DIR/layer-$m-$t.jsonl" --force > "$DIR/layer-$m-$t.log" 2>&1
      echo "$m $t tokens: exit $? $(tail -1 "$DIR/layer-$m-$t.log")"
      bin/moetop summary --json "$DIR/layer-$m-$t.jsonl" > "$DIR/layer-$m-$t.json" 2>> "$DIR/layer-$m-$t.log"
    done
  done
  if [ -f "$hf" ]; then
    timeout 240 python3 "$hf" --model mixtral --model qwen3-moe --model deepseek-v3 --tokens 4096 --tokens 128 --json "$DIR/hf-layers.json" > "$DIR/hf-layers.log" 2>&1
    tail -20 "$DIR/hf-layers.log"
  else
    echo "(no $hf: copy shared/peer/hf_layer_peer.py beside the peer to compare)"
  fi
  python3 scripts/layers.py "$DIR" "$DIR/hf-layers.json" | tee "$DIR/layers.txt"
}

run_decode() {
  step "gated (SwiGLU) presets at decode and prefill sizes beside the peer's --gated, with GB/s and the roofline"
  shapes=(--shape mixtral-8x7b@128:128:4096:14336:8:2 --shape qwen3-30b-a3b@128:128:2048:768:128:8
          --shape deepseek-v3@128:128:7168:2048:256:8 --shape qwen3-30b-a3b:8192:2048:768:128:8)
  bin/moetop bench "${shapes[@]}" --act swiglu --dist uniform,zipf:1.2 --format json --out "$DIR/decode-moetop.json" 2> "$DIR/decode-moetop.log"
  tail -12 "$DIR/decode-moetop.log"
  have_peer || return
  python3 "$PEER" "${shapes[@]}" --gated --dist uniform --dist zipf:1.2 --json "$DIR/decode-peer.json" > "$DIR/decode-peer.log" 2>&1
  tail -12 "$DIR/decode-peer.log"
  python3 scripts/compare.py "$DIR/decode-moetop.json" "$DIR/decode-peer.json" | tee "$DIR/decode-compare.txt"
}

# ep_procs NAME STEPS RANK1_ENV [FLAGS...]: one process per GPU on this host,
# rank 0 on GPU 0 recording NAME.jsonl, rank 1 in the background with the
# environment RANK1_ENV (LOCAL_RANK=1, or CUDA_VISIBLE_DEVICES=1 with
# --device 0). Each is bounded by a timeout: a rank that hangs cannot hold
# the script.
ep_procs() {
  local name=$1 steps=$2 env1=$3; shift 3
  local coord=127.0.0.1:29731 r1 c0 c1
  env $env1 timeout 180 bin/moetop --ep 2 --rank 1 --world 2 --coordinator $coord --backend loop "$@" \
    > "$DIR/$name-rank1.log" 2>&1 &
  r1=$!
  timeout 180 bin/moetop --ep 2 --rank 0 --world 2 --coordinator $coord --backend loop --steps "$steps" --window 0 \
    --record "$DIR/$name.jsonl" --force "$@" > "$DIR/$name-rank0.log" 2>&1
  c0=$?
  wait $r1; c1=$?
  echo "rank 0 exit $c0: $(tail -1 "$DIR/$name-rank0.log")"
  echo "rank 1 ($env1) exit $c1: $(tail -1 "$DIR/$name-rank1.log")"
  [ $c0 -eq 0 ] && bin/moetop summary "$DIR/$name.jsonl" 2>&1 | tail -25
}

run_ep() {
  step "expert parallelism over 2 GPUs through NCCL (not yet checked on GPUs: opted in here)"
  n=$(nvidia-smi --query-gpu=index --format=csv,noheader | wc -l)
  if [ "$n" -lt 2 ]; then echo "(one GPU here: skipped)"; return; fi
  export NCCL_NVLS_ENABLE=0 MOETOP_UNVERIFIED_GPU_EP=1
  # TwoGPU: one process of both ranks, and two processes (the test runs
  # itself again as rank 1) against one and against the CPU reference.
  (cd kernels/cuda && timeout 600 ../../bin/cuda.test -test.run TwoGPU -test.v -test.count=1 2>&1) > "$DIR/ep-test.log"
  grep -E "^(--- |ok|FAIL|PASS)" "$DIR/ep-test.log" | head -20
  timeout 120 bin/moetop --ep 2 --backend loop --steps 200 --window 0 --record "$DIR/ep2.jsonl" --force 2>&1 | tail -2
  bin/moetop summary "$DIR/ep2.jsonl" 2>&1 | tail -25

  step "one process per GPU: rank 1 on the GPU of its LOCAL_RANK, then alone in CUDA_VISIBLE_DEVICES"
  ep_procs ep2procs 200 LOCAL_RANK=1
  ep_procs ep2procs-visible 50 CUDA_VISIBLE_DEVICES=1 --device 0

  step "one process per GPU: rank 1 killed mid-run ends rank 0 within --ep-timeout"
  # Not under timeout: the kill must reach moetop itself (it ends it anyway).
  bin/moetop --ep 2 --rank 1 --world 2 --coordinator 127.0.0.1:29731 --backend loop --device 1 \
    --ep-timeout 10s > "$DIR/ep2kill-rank1.log" 2>&1 &
  local r1=$!
  timeout 120 bin/moetop --ep 2 --rank 0 --world 2 --coordinator 127.0.0.1:29731 --backend loop --duration 2m \
    --ep-timeout 10s --record "$DIR/ep2kill.jsonl" --force > "$DIR/ep2kill-rank0.log" 2>&1 &
  local r0=$! start
  sleep 20
  kill -9 $r1; start=$(date +%s)
  wait $r0; local c0=$?
  echo "rank 0 exit $c0 $(( $(date +%s) - start ))s after the kill (want 1, within 10s): $(tail -1 "$DIR/ep2kill-rank0.log")"
  unset MOETOP_UNVERIFIED_GPU_EP
}

run_epbench() {
  step "bench --ep N beside torch_ep_peer.py: the expert path over N GPUs, same shapes and counts (moetop's GPU ranks are not yet checked on GPUs: opted in here)"
  n=$(nvidia-smi --query-gpu=index --format=csv,noheader | wc -l)
  if [ "$n" -lt 2 ]; then echo "(one GPU here: skipped)"; return; fi
  worlds=(2); [ "$n" -ge 4 ] && worlds=(2 4)
  peer=$(dirname "$PEER")/torch_ep_peer.py
  [ -f "$peer" ] || echo "(no $peer: moetop alone; make gpu-bins copies it beside the peer)"
  # NCCL_NVLS_ENABLE=0 for both sides: moetop sets it itself, the peer's
  # NCCL reads it from here (NVLS needs NVSwitch multicast; see kernels/cuda/nccl.go).
  export NCCL_NVLS_ENABLE=0
  # First that the rows come back through their experts, then the timing.
  (cd kernels/cuda && MOETOP_UNVERIFIED_GPU_EP=1 timeout 300 ../../bin/cuda.test -test.run TwoGPUExchange -test.v -test.count=1 2>&1) \
    > "$DIR/epbench-test.log"
  grep -E "^(--- |ok|FAIL|PASS)|all-to-all" "$DIR/epbench-test.log" | head -20
  shapes=(--shape mixtral:8192:4096:14336:8:2 --shape qwen3-moe:8192:2048:768:128:8 --shape dsv3:4096:7168:2048:256:8)
  rm -f "$DIR"/epbench-*.json
  # Two rounds, moetop and the peer in turn, so that neither has the card
  # to itself in a better minute.
  for round in 1 2; do
    for w in "${worlds[@]}"; do
      MOETOP_UNVERIFIED_GPU_EP=1 timeout 600 bin/moetop bench --ep "$w" "${shapes[@]}" --dist uniform,zipf:1.2,hot:0:0.5 \
        --format json --out "$DIR/epbench-$round-n$w-moetop.json" --force 2>> "$DIR/epbench-moetop.log"
      echo "moetop bench --ep $w, round $round: exit $?"
      if [ -f "$peer" ]; then
        timeout 600 python3 -m torch.distributed.run --nproc-per-node "$w" "$peer" "${shapes[@]}" \
          --dist uniform --dist zipf:1.2 --dist hot:0:0.5 --json "$DIR/epbench-$round-n$w-peer.json" >> "$DIR/epbench-peer.log" 2>&1
        echo "torch_ep_peer.py on $w GPUs, round $round: exit $?"
      fi
    done
  done
  tail -4 "$DIR/epbench-moetop.log"
  files=("$DIR"/epbench-*.json)
  [ -e "${files[0]}" ] || { echo "(no results)"; return; }
  python3 scripts/compare_ep.py "${files[@]}" | tee "$DIR/epbench-compare.txt"
}

run_v1log() {
  step "a GPU log written by --baseline (a moetop/1 build), with what it prints of it, for recording/testdata/v1"
  if [ -z "$BASELINE" ]; then echo "(no --baseline BIN: skipped)"; return; fi
  # Relative names, so the summaries name the file as the tests give it.
  (cd "$DIR" && timeout 60 "$BASELINE" --backend grouped --tokens 2048 --steps 30 --interval 100ms \
      --record gpu-v1.jsonl --force > gpu-v1-record.log 2>&1 &&
    "$BASELINE" summary gpu-v1.jsonl > gpu-v1.summary.golden &&
    "$BASELINE" summary --json gpu-v1.jsonl > gpu-v1.summary-json.golden &&
    "$BASELINE" export gpu-v1.jsonl --format csv --out gpu-v1.csv.golden &&
    "$BASELINE" export gpu-v1.jsonl --format perfetto --out gpu-v1.perfetto.golden)
  echo "exit $?: $(head -c 120 "$DIR/gpu-v1.jsonl")"
  echo "copy $DIR/gpu-v1.* into recording/testdata/v1 and add gpu-v1 to cmd/moetop/v1logs_test.go"
}

run_report() {
  step "the founding report's grid"
  bin/moetop bench --grid report --dist uniform,seed-uneven,zipf:1.2 --reps 5 --warmup 1 --format json \
    --out "$DIR/report.json" 2> "$DIR/report.log"
  tail -6 "$DIR/report.log"
  python3 scripts/report.py "$DIR/report.json" | tee "$DIR/report.txt"
}

step "card"
nvidia-smi --query-gpu=name,driver_version,memory.used,memory.total,power.draw,temperature.gpu,clocks.sm --format=csv | tee "$DIR/nvidia-smi.csv"
for w in "${parts[@]}"; do
  case $w in
    check) run_check;; live) run_live;; bench) run_bench;; report) run_report;; overhead) run_overhead;; hybrid) run_hybrid;;
    device1) run_device1;; oomsample) run_oomsample;; regress) run_regress;; layers) run_layers;; decode) run_decode;; ep) run_ep;; epbench) run_epbench;; hopper) run_hopper;; hopperbench) run_hopperbench;; v1log) run_v1log;;
    all) run_check; run_live; run_bench;;
  esac
done
echo; echo "results in $DIR"
