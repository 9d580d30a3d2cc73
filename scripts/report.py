#!/usr/bin/env python3
"""What the founding report's grid shows, from `moetop bench --grid report --format json`:
uneven vs uniform per backend, where grouped beats loop, and padded's OOMs against the
memory model's prediction. usage: report.py REPORT.json"""
import json, statistics, sys
from collections import defaultdict

rs = json.load(open(sys.argv[1]))
by = defaultdict(dict)
for r in rs:
    by[(r["case"]["name"], r["dist"])][r["backend"]] = r
backends = sorted({r["backend"] for r in rs if r["backend"] != "dense"})

print("median TFLOP/s over the grid's cases, by distribution (ok results only):")
for b in backends:
    cells = []
    for d in ("uniform", "seed-uneven", "zipf:1.2"):
        v = [m[b]["tflops"] for (c, dd), m in by.items() if dd == d and b in m and m[b]["status"] == "ok"]
        cells.append(f"{d} {statistics.median(v):6.1f}" if v else f"{d}   -")
    print(f"  {b:8s} " + "  ".join(cells))

print("uneven (seed-uneven) over uniform, same case and backend: cases where uneven is faster")
for b in backends:
    faster = total = 0
    for (c, d), m in by.items():
        if d != "seed-uneven" or b not in m or m[b]["status"] != "ok":
            continue
        u = by.get((c, "uniform"), {}).get(b)
        if u and u["status"] == "ok":
            total += 1
            faster += m[b]["tflops"] > u["tflops"]
    print(f"  {b:8s} {faster}/{total}")

wins = [(c, d, m["grouped"]["tflops"], m["loop"]["tflops"]) for (c, d), m in by.items()
        if "grouped" in m and "loop" in m and m["grouped"]["status"] == m["loop"]["status"] == "ok"
        and m["grouped"]["tflops"] > m["loop"]["tflops"]]
print(f"grouped beats loop in {len(wins)} of {sum(1 for m in by.values() if 'grouped' in m)} results")
for c, d, g, l in sorted(wins, key=lambda w: w[2] / w[3], reverse=True)[:8]:
    print(f"  {c:22s} {d:11s} grouped {g:6.1f} loop {l:6.1f} ({g / l:.2f}x)")

pad = [m["padded"] for m in by.values() if "padded" in m]
oom = [p for p in pad if p["status"] in ("oom", "predicted-oom")]
pred = [p for p in pad if p["predicted_oom"]]
print(f"padded: {len(oom)} of {len(pad)} results out of memory ({100 * len(oom) / max(1, len(pad)):.0f}%); "
      f"predicted {len(pred)}; predicted and ran anyway: {sum(1 for p in pred if p['status'] == 'ok')}; "
      f"OOM not predicted: {sum(1 for p in oom if not p['predicted_oom'])}")
for b in backends:
    rsb = [m[b] for m in by.values() if b in m]
    ok = sum(1 for r in rsb if r["status"] == "ok")
    print(f"pass rate {b:8s} {ok}/{len(rsb)}")
