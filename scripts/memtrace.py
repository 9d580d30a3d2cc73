#!/usr/bin/env python3
"""Device memory used (NVML) and OOM events over a recorded run, in order:
shows whether memory returns to its level after each out-of-memory step.
usage: memtrace.py LOG.jsonl"""
import json, sys

first = None
for line in open(sys.argv[1]):
    try:
        r = json.loads(line)
    except ValueError:
        continue
    t = r.get("type")
    if t == "header":
        continue
    ts = r.get("time", "")[11:23]
    if t == "event":
        print(f"{ts}  step {r['step']:5d}  EVENT {r['kind']}: {r['msg'][:90]}")
    elif t == "sample":
        g = r.get("gpu")
        if g and g.get("devices"):
            used = g["devices"][0].get("mem_used_bytes", 0) / 2**30
            print(f"{ts}  step {r['step']:5d}  mem used {used:6.2f} GiB  rows[0] {r['rows'][0] if r.get('rows') else '-'}  skipped {r.get('skipped', False)}")
