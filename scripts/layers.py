#!/usr/bin/env python3
"""Compares moetop's whole-layer step with hf_layer_peer.py's MoE blocks.

usage: scripts/layers.py DIR [HF_JSON]

DIR holds `moetop summary --json` outputs named layer-MODEL-TOKENS.json;
HF_JSON is hf_layer_peer.py's --json file. For each model and token count it
prints moetop's step p50, the peer's fastest experts implementation, the
speed-up, and how close moetop's step is to its memory floor: the bytes its
phases move over the card's measured read bandwidth (the header's
read_gbps), which is what a decode step at a few rows per expert is bound by.
"""
import glob, json, os, re, sys

PEER_NAME = {"mixtral-8x7b": "mixtral", "qwen3-30b-a3b": "qwen3-moe", "deepseek-v3": "deepseek-v3"}


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    peer = {}
    if len(sys.argv) > 2 and os.path.exists(sys.argv[2]):
        for r in json.load(open(sys.argv[2])):
            if "ms" in r:
                k = (r["model"], r["tokens"])
                if k not in peer or r["ms"] < peer[k][0]:
                    peer[k] = (r["ms"], r["impl"])
    print(f"{'model':14s} {'tokens':>6s} {'backend':8s} {'moetop ms':>9s} {'peer ms':>8s} {'peer impl':10s} {'speed-up':>8s} {'mem floor':>9s}")
    for path in sorted(glob.glob(os.path.join(sys.argv[1], "layer-*.json"))):
        m = re.match(r"layer-(.+)-(\d+)\.json$", os.path.basename(path))
        if not m:
            continue
        model, tokens = m.group(1), int(m.group(2))
        try:
            s = json.load(open(path))
            b = s["backends"][0]
        except (ValueError, KeyError, IndexError, TypeError):
            print(f"{model:14s} {tokens:6d} (no summary: see its .log)")
            continue
        ms = b["step_p50_ms"]
        # bytes of a phase ≈ its median GB/s × its median ms (GB/s·ms = 1e6 B)
        moved = sum(p.get("gbps_median", 0) * p["median_ms"] * 1e6 for p in b.get("phases", []))
        gbps = s["header"].get("read_gbps", 0)
        floor = f"{100 * moved / (gbps * 1e6) / ms:8.0f}%" if gbps and moved else "        -"
        pk = peer.get((PEER_NAME.get(model, model), tokens))
        if pk:
            print(f"{model:14s} {tokens:6d} {b['backend']:8s} {ms:9.3f} {pk[0]:8.3f} {pk[1]:10s} {pk[0] / ms:7.2f}x {floor}")
        else:
            print(f"{model:14s} {tokens:6d} {b['backend']:8s} {ms:9.3f} {'-':>8s} {'-':10s} {'-':>8s} {floor}")


if __name__ == "__main__":
    main()
