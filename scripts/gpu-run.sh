#!/usr/bin/env bash
# Runs on the GPU machine (the device tool), from the repository root, with
# bin/ built here by `make gpu-bins` (moetop, cuda.test, the peer script, and
# optionally bin/tmux from Debian's tmux package for the TUI capture).
# Checks, times and compares in one call; full logs go to $OUT, a short
# summary to stdout.
#   usage: scripts/gpu-run.sh [check] [live] [bench] [report] [overhead] [hybrid]
set -u
FINAL=${OUT:-/tmp/moetop-out}
OUT=$FINAL/w    # everything lands here; at the end it is bundled into one file
mkdir -p "$OUT"
trap 'tar -C "$FINAL" --exclude="*.jsonl*" -czf "$FINAL/logs.tgz" w && rm -rf "$OUT/"*.txt "$OUT/"*.log "$OUT/"*.csv' EXIT
export PYTHONUNBUFFERED=1 TERM=xterm-256color
step() { echo; echo "=== $*"; }
has() { case " $* " in *" all "*) return 0;; esac; return 1; }

run_check() {
  step "GPU tests"
  (cd kernels/cuda && ../../bin/cuda.test -test.v -test.count=1 2>&1) > "$OUT/cuda-test.log"
  grep -E "^(--- |ok|FAIL|PASS)|predicted" "$OUT/cuda-test.log" | head -40
  step "moetop check"
  bin/moetop check --cases 4 > "$OUT/check.txt" 2>&1; echo "check exit $?"
  tail -1 "$OUT/check.txt"; grep FAIL "$OUT/check.txt" | head -10
}

run_live() {
  step "a recorded GPU run, with nvidia-smi and moetop devices taken during it"
  bin/moetop --record "$OUT/live.jsonl.zst" --duration 25s --force > "$OUT/live-record.log" 2>&1 &
  pid=$!
  sleep 14
  nvidia-smi --query-gpu=memory.used,memory.total,utilization.gpu,power.draw,temperature.gpu,clocks.sm --format=csv | tee "$OUT/smi-during.csv"
  bin/moetop devices | tee "$OUT/devices-during.txt"
  wait $pid; echo "record exit $?"; cat "$OUT/live-record.log"
  bin/moetop summary "$OUT/live.jsonl.zst" | tee "$OUT/live-summary.txt"

  step "padded past the card's memory: OOM events, the run goes on"
  # dsv3's layer with zipf:1.2 pads to ~68 GB at 8192 tokens: enough on an
  # 80 GB card, twice that on a 141 GB one.
  total=$(nvidia-smi --query-gpu=memory.total --format=csv,noheader,nounits | head -1)
  tokens=8192; [ "$total" -gt 100000 ] && tokens=16384
  nvidia-smi --query-gpu=memory.used --format=csv,noheader | tee "$OUT/oom-mem-before.txt"
  bin/moetop --backend padded --tokens $tokens --hidden 7168 --ffn 2048 --experts 256 --top-k 8 \
    --routing zipf:1.2 --interval 100ms --record "$OUT/oom.jsonl" --duration 20s --force 2>&1 | tail -2
  nvidia-smi --query-gpu=memory.used --format=csv,noheader | tee "$OUT/oom-mem-after.txt"
  bin/moetop summary "$OUT/oom.jsonl" | tee "$OUT/oom-summary.txt" | grep -E "steps|OOM|headroom|padded"
  python3 scripts/memtrace.py "$OUT/oom.jsonl" | tee "$OUT/oom-memtrace.txt" | tail -12

  step "auto on many experts: which backend does the calibration pick?"
  for shape in "--tokens 8192 --hidden 2048 --ffn 768 --experts 128 --top-k 8" "--tokens 4096 --hidden 7168 --ffn 2048 --experts 256 --top-k 8"; do
    bin/moetop $shape --record "$OUT/auto.jsonl" --steps 50 --force 2>&1 | grep -E "auto picked|recorded"
  done

  if [ -x bin/tmux/root/usr/bin/tmux ]; then
    step "the TUI on the GPU, in tmux 120x40"
    T="env LD_LIBRARY_PATH=$PWD/bin/tmux/root/usr/lib/x86_64-linux-gnu $PWD/bin/tmux/root/usr/bin/tmux -S /tmp/moetop-tmux"
    $T new -d -s g -x 120 -y 40 "cd $PWD && bin/moetop 2> $OUT/tui-stderr.txt; sleep 30"
    sleep 20; $T capture-pane -p -t g > "$OUT/tui-1.txt"
    $T send-keys -t g b; sleep 6; $T capture-pane -p -t g > "$OUT/tui-2-backend.txt"
    $T send-keys -t g +; sleep 6; $T capture-pane -p -t g > "$OUT/tui-3-tokens.txt"
    $T send-keys -t g q; sleep 1; $T kill-server 2>/dev/null
    cat "$OUT/tui-1.txt"; tail -2 "$OUT/tui-2-backend.txt"; head -2 "$OUT/tui-3-tokens.txt"
  fi
}

run_bench() {
  step "bench beside the peer on the same shapes and counts"
  shapes="--shape seed-max:65536:4224:16896:8:3 --shape mixtral:8192:4096:14336:8:2 --shape seed-mid:16384:512:2048:8:4 --shape qwen3-moe:8192:2048:768:128:8 --shape dsv3:4096:7168:2048:256:8"
  bin/moetop bench $shapes --dist uniform,seed-uneven,zipf:1.2 --format json --out "$OUT/moetop-bench.json" 2> "$OUT/moetop-bench.log"
  tail -5 "$OUT/moetop-bench.log"
  bin/moetop bench --shape qwen3-moe:8192:2048:768:128:8 --shape dsv3:4096:7168:2048:256:8 --dist uniform,zipf:1.2 \
    --backends loop,streams --no-graphs --format json --out "$OUT/moetop-nographs.json" 2> "$OUT/moetop-nographs.log"
  python3 bin/torch_moe_peer.py $shapes --dist uniform --dist seed-uneven --dist zipf:1.2 --json "$OUT/peer.json" > "$OUT/peer.log" 2>&1
  tail -15 "$OUT/peer.log"
  python3 scripts/compare.py "$OUT/moetop-bench.json" "$OUT/peer.json" "$OUT/moetop-nographs.json" | tee "$OUT/compare.txt"
}

run_overhead() {
  step "bench's own overhead against a bare loop of the same cublasGemmEx calls"
  (cd kernels/cuda && ../../bin/cuda.test -test.run '^$' -test.bench BenchOverhead -test.benchtime 1x 2>&1) | tee "$OUT/overhead.txt" | grep -E "Benchmark|ok|FAIL"
}

run_hybrid() {
  step "hybrid: GemmEx for busy experts, one grouped call for the tail, beside the peer"
  (cd kernels/cuda && ../../bin/cuda.test -test.count=1 2>&1) > "$OUT/cuda-test.log"; tail -1 "$OUT/cuda-test.log"
  grep -E "^--- FAIL" "$OUT/cuda-test.log"
  bin/moetop check --backends hybrid --cases 6 > "$OUT/check-hybrid.txt" 2>&1; tail -1 "$OUT/check-hybrid.txt"
  shapes="--shape mixtral:8192:4096:14336:8:2 --shape qwen3-moe:8192:2048:768:128:8 --shape dsv3:4096:7168:2048:256:8"
  bin/moetop bench $shapes --dist uniform,seed-uneven,zipf:1.2 --format json --out "$OUT/moetop-bench.json" 2> "$OUT/moetop-bench.log"
  tail -6 "$OUT/moetop-bench.log"
  python3 bin/torch_moe_peer.py $shapes --dist uniform --dist seed-uneven --dist zipf:1.2 --json "$OUT/peer.json" > "$OUT/peer.log" 2>&1
  python3 scripts/compare.py "$OUT/moetop-bench.json" "$OUT/peer.json" | tee "$OUT/compare.txt"
  python3 - "$OUT/moetop-bench.json" <<'PY'
import json, sys
for r in json.load(open(sys.argv[1])):
    if r["backend"] in ("hybrid", "streams", "grouped", "loop") and r["status"] == "ok":
        print(f"{r['case']['name']:10s} {r['dist']:11s} {r['backend']:8s} {r['tflops']:6.1f}")
PY
}

run_report() {
  step "the founding report's grid"
  bin/moetop bench --grid report --dist uniform,seed-uneven,zipf:1.2 --reps 5 --warmup 1 --format json \
    --out "$OUT/report.json" 2> "$OUT/report.log"
  tail -6 "$OUT/report.log"
  python3 scripts/report.py "$OUT/report.json" | tee "$OUT/report.txt"
}

step "card"
nvidia-smi --query-gpu=name,driver_version,memory.used,memory.total,power.draw,temperature.gpu,clocks.sm --format=csv | tee "$OUT/nvidia-smi.csv"
for w in "${@:-all}"; do
  case $w in
    check) run_check;; live) run_live;; bench) run_bench;; report) run_report;; overhead) run_overhead;; hybrid) run_hybrid;;
    all) run_check; run_live; run_bench;;
    *) echo "unknown part $w"; exit 2;;
  esac
done
