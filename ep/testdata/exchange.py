#!/usr/bin/env python3
"""Writes exchange.json (kept gzipped), the plans ep.Exchange must match, from the EP peer's own code
(torch_ep_peer.py), so that the fixture cannot drift from what the peer times.

    python3 ep/testdata/exchange.py PATH/TO/torch_ep_peer.py | gzip -9n > ep/testdata/exchange.json.gz

The peer imports torch at the top and builds its plan inside run_shape among torch calls; this
reads count_rows, SEED_UNEVEN and, from run_shape's body, exactly the statements that make the
plan (L, counts, send, recv, local, remote_bytes and the loop that builds order, the received
rows in expert order) out of the file with ast, and runs them alone, so it needs no torch.

One case per (shape, dist, world; the big shapes at 2 and 4 ranks), with each rank's send (rows to each rank), recv (rows from
each rank), local (rows per local expert), remote_bytes (bf16 rows sent to other ranks) and,
for the small shapes at up to 4 ranks only, order.
"""
import ast
import json
import sys

PLAN = ["L", "counts", "send", "recv", "local", "remote_bytes", "order"]


def load(path):
    tree = ast.parse(open(path).read(), path)
    top, shape = [], None
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name == "count_rows":
            top.append(node)
        elif isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "SEED_UNEVEN" for t in node.targets):
            top.append(node)
        elif isinstance(node, ast.FunctionDef) and node.name == "run_shape":
            shape = node
    if len(top) != 2 or shape is None:
        sys.exit(f"{path}: no count_rows, SEED_UNEVEN or run_shape")
    # The statements of run_shape that store a name of the plan and touch no
    # torch: the plan as the peer makes it, without the tensors made from it.
    plan, got = [], set()
    for node in shape.body:
        names = {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}
        stored = {n.id for n in ast.walk(node) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
        if stored & set(PLAN) and "torch" not in names:
            plan.append(node)
            got |= stored
    if not set(PLAN) <= got:
        sys.exit(f"{path}: run_shape makes no {sorted(set(PLAN) - got)}")
    env = {}
    exec(compile(ast.Module(body=top, type_ignores=[]), path, "exec"), env)
    code = compile(ast.Module(body=plan, type_ignores=[]), path + ":run_shape", "exec")
    return code, env


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: exchange.py PATH/TO/torch_ep_peer.py")
    code, env = load(sys.argv[1])
    shapes = [("mixtral", 8192, 4096, 14336, 8, 2), ("qwen3-moe", 8192, 2048, 768, 128, 8),
              ("dsv3", 4096, 7168, 2048, 256, 8), ("small", 64, 32, 48, 8, 2), ("tiny", 40, 16, 16, 16, 4)]
    out = []
    for name, T, H, F, E, K in shapes:
        for d in ["uniform", "seed-uneven", "zipf:1.2", "hot:0:0.5", f"hot:{E - 1}:0.9"]:
            # The big shapes at the worlds the comparison runs (2 and 4); the
            # small ones at every world, which keeps the file small.
            for world in [1, 2, 4, 8] if E <= 16 else [2, 4]:
                if E % world:
                    continue
                case = {"shape": name, "tokens": T, "hidden": H, "ffn": F, "experts": E, "topk": K, "dist": d,
                        "world": world, "ranks": []}
                for rank in range(world):
                    g = dict(env, name=name, T=T, H=H, F=F, E=E, K=K, d=d, world=world, rank=rank)
                    exec(code, g)
                    case["counts"] = g["counts"]
                    r = {k: g[k] for k in ["send", "recv", "local", "remote_bytes"]}
                    if T * K <= 256 and world <= 4:
                        r["order"] = g["order"]
                    case["ranks"].append(r)
                out.append(case)
    sys.stdout.write("[\n" + ",\n".join(json.dumps(c, separators=(",", ":")) for c in out) + "\n]\n")


if __name__ == "__main__":
    main()
