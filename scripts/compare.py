#!/usr/bin/env python3
"""Per case, moetop's TFLOP/s over the peer's, from `moetop bench --format json`
and torch_moe_peer.py --json (the PyTorch peer) taken in the same run on one card
(scripts/gpu-run.sh bench).

Pairs: grouped/cublasg, loop/loop, padded/bmm, best moetop backend/gmm,
dense/dense (the two dense references should agree: a sanity check)."""
import json, sys

PAIRS = [("grouped", "cublasg"), ("loop", "loop"), ("padded", "bmm"), ("dense", "dense")]


def main(ours_path, peer_path, nographs_path=None):
    ours = json.load(open(ours_path))
    nog = {}
    if nographs_path:
        for r in json.load(open(nographs_path)):
            if r.get("status") == "ok":
                nog[(r["case"]["name"], r["dist"], r["backend"])] = r["tflops"]
    peer = json.load(open(peer_path))
    pv = {(p["shape"], p["dist"]): p["variants"] for p in peer}
    keys = []
    by = {}
    for r in ours:
        k = (r["case"]["name"], r["dist"])
        if k not in by:
            keys.append(k)
            by[k] = {}
        by[k][r["backend"]] = r
    head = f"{'case':10s} {'dist':9s}" + "".join(f" {a + '/' + b:>17s}" for a, b in PAIRS) + f" {'best/gmm':>17s}  best"
    print(head)
    for k in keys:
        m, p = by[k], pv.get(k, {})
        cells = []
        for a, b in PAIRS:
            ta = m.get(a, {}).get("tflops") if m.get(a, {}).get("status") == "ok" else None
            tb = p.get(b, {}).get("tflops")
            cells.append(fmt(ta, tb))
        ok = {n: r["tflops"] for n, r in m.items() if n != "dense" and r.get("status") == "ok"}
        best = max(ok, key=ok.get) if ok else None
        cells.append(fmt(ok.get(best), p.get("gmm", {}).get("tflops")))
        print(f"{k[0]:10s} {k[1]:9s}" + "".join(f" {c:>17s}" for c in cells) + f"  {best}")
    if nog:
        print("\nCUDA graph replay: TFLOP/s with graphs / without (same run)")
        for (c, d, b), t in sorted(nog.items()):
            g = by.get((c, d), {}).get(b, {})
            if g.get("status") == "ok":
                print(f"  {c:10s} {d:9s} {b:8s} {g['tflops']:6.1f} / {t:6.1f} = {g['tflops'] / t:.2f}x")


def fmt(a, b):
    if a is None and b is None:
        return "-"
    if a is None:
        return f"-/{b:.0f}"
    if b is None:
        return f"{a:.0f}/-"
    return f"{a:.0f}/{b:.0f}={a / b:.2f}x"


if __name__ == "__main__":
    if len(sys.argv) not in (3, 4):
        sys.exit("usage: compare.py MOETOP.json PEER.json [MOETOP-NOGRAPHS.json]")
    main(*sys.argv[1:])
