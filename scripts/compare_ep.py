#!/usr/bin/env python3
"""Per (shape, dist, N), moetop's expert path over N ranks beside the EP peer's, from
`moetop bench --ep N --format json` and torch_ep_peer.py --json taken on the same machine
(scripts/gpu-run.sh epbench).

    compare_ep.py FILE.json [FILE.json ...]

Each file is moetop's or the peer's (moetop's results carry "case" and "backend"); files of
several interleaved rounds are pooled, and each figure of each side is its best round's (highest
GB/s, lowest ms). Per case: dispatch and combine GB/s of both and moetop's over the peer's
(target: at least 0.95x), and the step, dispatch + gemm + wait + combine on both sides (target:
moetop's at most the peer's). Neither step has a router in it. They differ in one way: the
peer's gemm phase gathers the received rows into expert order and back (two index_select) and
copies the result into its send buffer, while moetop's GEMMs read the rows where they arrived
and write them where combine sends them from; so gemm and step time the same work plus, on
the peer's side, that reordering.
A figure off its target is marked MISS. GB/s on both sides are the most bytes a rank sends to
other ranks over the slowest rank's phase, nccl-tests' bus bandwidth for an even all-to-all.
Exit status 0 whatever the figures; 2 for a file that cannot be read.
"""
import json
import sys

GBPS_TARGET = 0.95


def fail(msg):
    print(f"compare_ep: {msg}", file=sys.stderr)
    sys.exit(2)


def load(paths):
    ours, peer, failed = {}, {}, []
    for path in paths:
        try:
            rows = json.load(open(path))
        except (OSError, ValueError) as e:
            fail(f"{path}: {e}")
        if not isinstance(rows, list):
            fail(f"{path}: not a list of results")
        for i, r in enumerate(rows):
            if not isinstance(r, dict) or any(k not in r for k in ("shape", "dist", "world")):
                fail(f"{path}: result {i} lacks shape, dist or world: not bench --ep's or torch_ep_peer.py's JSON")
            key = (r["shape"], r["dist"], int(r["world"]))
            side = ours if "case" in r and "backend" in r else peer
            if side is ours and r.get("status") != "ok":
                failed.append((key, r.get("status"), r.get("error", "")))
                continue
            best = side.setdefault(key, dict(r))
            for k in ("dispatch_gbps", "combine_gbps", "gemm_tflops"):
                best[k] = max(best.get(k) or 0, r.get(k) or 0)
            for k in ("dispatch_ms", "gemm_ms", "wait_ms", "combine_ms", "step_ms"):
                if r.get(k):
                    best[k] = min(best.get(k) or r[k], r[k])
    return ours, peer, failed


def ratio(a, b):
    return a / b if a and b else None


def main(paths):
    if not paths:
        fail("usage: compare_ep.py MOETOP.json ... PEER.json ...")
    ours, peer, failed = load(paths)
    keys = sorted(set(ours) | set(peer), key=lambda k: (k[2], k[0], k[1]))
    print(f"{'shape':10s} {'dist':10s} {'N':>2s}  {'dispatch GB/s moetop/peer':>27s}  "
          f"{'combine GB/s moetop/peer':>27s}  {'step ms moetop/peer':>24s}  {'gemm TF':>11s}")
    misses = compared = 0
    for k in keys:
        m, p = ours.get(k), peer.get(k)
        if m is None or p is None:
            print(f"{k[0]:10s} {k[1]:10s} {k[2]:2d}  only {'moetop' if m else 'the peer'} ran it")
            continue
        compared += 1
        cells, miss = [], []
        for f, name in (("dispatch_gbps", "dispatch"), ("combine_gbps", "combine")):
            q = ratio(m.get(f), p.get(f))
            if q is None or q < GBPS_TARGET:
                miss.append(name)
            cells.append(f"{m.get(f) or 0:8.1f}/{p.get(f) or 0:8.1f}=" + (f"{q:5.2f}x" if q else "    -"))
        q = ratio(m.get("step_ms"), p.get("step_ms"))
        if q is None or q > 1:
            miss.append("step")
        cells.append(f"{m.get('step_ms') or 0:7.3f}/{p.get('step_ms') or 0:7.3f}=" + (f"{q:5.2f}x" if q else "    -"))
        cells.append(f"{m.get('gemm_tflops') or 0:4.0f}/{p.get('gemm_tflops') or 0:4.0f}")
        misses += bool(miss)
        print(f"{k[0]:10s} {k[1]:10s} {k[2]:2d}  {cells[0]:>27s}  {cells[1]:>27s}  {cells[2]:>24s}  {cells[3]:>11s}"
              + (f"  MISS {','.join(miss)}" if miss else ""))
    for k, status, err in failed:
        print(f"{k[0]:10s} {k[1]:10s} {k[2]:2d}  moetop: {status} {err}")
    ceilings = sorted({(r["world"], r["alltoall_gbps"]) for r in ours.values() if r.get("alltoall_gbps")})
    for n, g in ceilings:
        print(f"all-to-all ceiling over {n} ranks: {g:.1f} GB/s (nccl-tests' bus bandwidth, measured by moetop at its start)")
    print(f"{compared} cases on both sides, {misses} off target (GB/s at least {GBPS_TARGET}x the peer's, step at most the peer's)")


if __name__ == "__main__":
    main([a for a in sys.argv[1:] if a != "--"])
