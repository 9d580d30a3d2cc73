#!/usr/bin/env python3
"""Writes count_rows.json, the cases profiler.CappedCounts must match, from the peer's own
count_rows (torch_moe_peer.py), so that the fixture cannot drift from what the peer times.

    python3 profiler/testdata/count_rows.py PATH/TO/torch_moe_peer.py > profiler/testdata/count_rows.json

The peer imports torch at the top; this reads just count_rows and the constants it uses out of
the file with ast, so it runs where torch is not installed.

Each case is the peer's call count_rows(dist, tokens*topk, experts, cap=tokens), as its
run_shape makes it. counts is run-length encoded, [[count, how many experts], ...], to keep
256-expert cases small. A call the peer refuses (it raises) is a case with "error": true.
"""
import ast
import json
import sys

NEEDED = {"count_rows", "SEED_UNEVEN"}


def load_count_rows(path):
    tree = ast.parse(open(path).read(), path)
    keep = []
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name in NEEDED:
            keep.append(node)
        elif isinstance(node, ast.Assign) and any(getattr(t, "id", None) in NEEDED for t in node.targets):
            keep.append(node)
    names = {getattr(n, "name", None) for n in keep} | {t.id for n in keep if isinstance(n, ast.Assign) for t in n.targets}
    if not NEEDED <= names:
        sys.exit(f"{path}: no {sorted(NEEDED - names)}")
    env = {}
    exec(compile(ast.Module(body=keep, type_ignores=[]), path, "exec"), env)
    return env["count_rows"]


def rle(counts):
    out = []
    for c in counts:
        if out and out[-1][0] == c:
            out[-1][1] += 1
        else:
            out.append([c, 1])
    return out


def cases():
    """(dist, tokens, experts, topk). The cap binds wherever one expert's share of
    tokens*topk rows is more than tokens: zipf and hot loads with topk > 1."""
    seen = set()

    def add(*c):
        if c not in seen:
            seen.add(c)
            yield c

    # Every distribution at the bench's shapes (bench/grid.go, scripts/gpu-run.sh).
    for t, e, k in [(65536, 8, 3), (8192, 8, 2), (16384, 8, 4), (8192, 128, 8), (4096, 256, 8),
                    (1024, 8, 1), (16384, 64, 6)]:
        for d in ["uniform", "seed-uneven", "zipf:1.2", "zipf:0.7", "zipf:3", "hot:0:0.4",
                  f"hot:{e - 1}:0.9", "hot:3:0.125"]:
            yield from add(d, t, e, k)
    # zipf:1.2 and hot over a spread of sizes, top-k > 1: mostly capped.
    # Fewer sizes for many experts, whose counts take the most room in the file.
    for e in [8, 64, 128, 256]:
        for k in [2, 4, 8] if e == 8 else [2, 8]:
            for t in [1, 2, 3, 7, 100, 1000, 4095, 16384] if e == 8 else [1, 3, 100, 1000, 16384]:
                for d in ["zipf:1.2", f"hot:{e // 2}:0.3"]:
                    yield from add(d, t, e, k)
    # The remainder rules on experts that do not divide the rows.
    for t, e, k in [(37, 5, 1), (1000, 7, 1), (1000, 7, 3), (13, 7, 7)]:
        for d in ["uniform", "seed-uneven", "zipf:1.2", "zipf:3", "hot:2:0.6"]:
            yield from add(d, t, e, k)
    # What the peer refuses: more rows than experts × tokens, and a hot expert
    # with every weight, whose excess has nowhere to go.
    yield from add("uniform", 4, 8, 9)
    yield from add("hot:0:1", 64, 8, 2)


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: count_rows.py PATH/TO/torch_moe_peer.py")
    count_rows = load_count_rows(sys.argv[1])
    out = []
    for dist, t, e, k in cases():
        c = {"dist": dist, "tokens": t, "experts": e, "topk": k}
        try:
            c["counts"] = rle(count_rows(dist, t * k, e, cap=t))
        except (SystemExit, ZeroDivisionError):
            c["error"] = True
        out.append(c)
    sys.stdout.write("[\n" + ",\n".join(json.dumps(c, separators=(",", ":")) for c in out) + "\n]\n")


if __name__ == "__main__":
    main()
