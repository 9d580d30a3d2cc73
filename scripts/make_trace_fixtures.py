#!/usr/bin/env python3
"""Write the torch.save fixtures of moetop's trace importers, without torch.

torch.save (PyTorch >= 1.6, pickle protocol 2) writes a zip archive, stored
without compression, each record's data aligned to 64 bytes:

    archive/data.pkl     the object, pickled; a tensor is
                         torch._utils._rebuild_tensor_v2(storage, offset,
                         size, stride, requires_grad, OrderedDict())
                         and its storage the persistent id
                         ('storage', torch.LongStorage, '0', 'cpu', numel)
    archive/byteorder    b"little"
    archive/data/0 ...   each storage's raw little-endian elements
    archive/version      b"3\\n"

This script makes the same bytes with the standard library alone: stand-in
modules named torch and torch._utils make Python's own pickler write the
same GLOBAL opcodes torch's objects do, and a Pickler subclass writes the
persistent ids. Newer torch adds .format_version, .storage_alignment and
.data/ records, which readers ignore.

Usage: python3 scripts/make_trace_fixtures.py [OUTDIR]   (default trace/testdata)
The Go tests (trace/import_test.go) check the numbers below; change both.
"""

import collections
import os
import pickle
import struct
import sys
import types
import zipfile

# --- stand-ins that pickle under torch's names --------------------------------

torch = types.ModuleType("torch")
torch_utils = types.ModuleType("torch._utils")
torch._utils = torch_utils
sys.modules["torch"] = torch
sys.modules["torch._utils"] = torch_utils


def _rebuild_tensor_v2(*args):
    raise RuntimeError("a stand-in: load these files with torch or moetop")


_rebuild_tensor_v2.__module__ = "torch._utils"
_rebuild_tensor_v2.__qualname__ = "_rebuild_tensor_v2"
torch_utils._rebuild_tensor_v2 = _rebuild_tensor_v2

# dtype -> (storage class, struct format)
DTYPES = {"int64": ("LongStorage", "q"), "int32": ("IntStorage", "i")}
for _cls, _ in DTYPES.values():
    _c = type(_cls, (), {"__module__": "torch"})
    _c.__qualname__ = _cls
    setattr(torch, _cls, _c)


class Storage:
    """A storage: pickled as torch's persistent id, written as data/KEY."""

    def __init__(self, dtype, values, location="cpu"):
        self.dtype, self.values, self.location = dtype, list(values), location

    def raw(self):
        return struct.pack("<%d%s" % (len(self.values), DTYPES[self.dtype][1]), *self.values)


class Tensor:
    """A tensor viewing a storage at an offset with strides, as torch's."""

    def __init__(self, storage, shape, offset=0, stride=None):
        if stride is None:  # contiguous
            stride, n = [], 1
            for d in reversed(shape):
                stride.insert(0, n)
                n *= d
        self.storage, self.shape, self.offset, self.stride = storage, shape, offset, stride

    def __reduce_ex__(self, protocol):
        return (_rebuild_tensor_v2, (self.storage, self.offset, tuple(self.shape),
                                     tuple(self.stride), False, collections.OrderedDict()))


def tensor(dtype, shape, values):
    return Tensor(Storage(dtype, values), shape)


def save(obj, path):
    """Write obj the way torch.save(obj, path) lays it out."""
    storages = {}

    class Pickler(pickle.Pickler):
        def persistent_id(self, obj):
            if not isinstance(obj, Storage):
                return None
            key = storages.setdefault(id(obj), (str(len(storages)), obj))[0]
            cls = getattr(torch, DTYPES[obj.dtype][0])
            return ("storage", cls, key, obj.location, len(obj.values))

    buf = __import__("io").BytesIO()
    Pickler(buf, protocol=2).dump(obj)
    records = [("data.pkl", buf.getvalue()), ("byteorder", b"little")]
    for key, st in sorted(storages.values(), key=lambda ks: int(ks[0])):
        records.append(("data/" + key, st.raw()))
    records.append(("version", b"3\n"))

    with open(path, "wb") as f, zipfile.ZipFile(f, "w", zipfile.ZIP_STORED) as z:
        for name, data in records:
            info = zipfile.ZipInfo("archive/" + name, date_time=(1980, 1, 1, 0, 0, 0))
            # Like torch's writer, pad the local header's extra field so the
            # record's data starts on a 64-byte boundary.
            start = f.tell() + 30 + len(info.filename) + 4
            pad = -start % 64
            info.extra = struct.pack("<HH", 0x4246, pad) + b"Z" * pad  # "FB"
            z.writestr(info, data)


# --- the fixtures ----------------------------------------------------------------


def sglang_stat(out):
    # SGLang stat mode: logical_count [passes, layers, experts], int32.
    # Layer 0 is dense (all zero); passes 4 and 5 are an unfilled ring buffer.
    passes, layers, experts = 6, 4, 8
    vals = []
    for p in range(passes):
        for l in range(layers):
            for e in range(experts):
                vals.append(0 if l == 0 or p >= 4 else (p + 1) * 10 + l * 100 + e)
    save({"rank": 0,
          "logical_count": tensor("int32", [passes, layers, experts], vals),
          "average_utilization_rate_over_window": None},
         os.path.join(out, "sglang_stat.pt"))


def sglang_per_token(out):
    # SGLang per_token mode: a record per forward pass, topk_ids_of_layer
    # [layers, tokens, 8] of physical experts padded with -1 (here k = 2),
    # and the map from 6 physical experts to 4 logical ones.
    layers, tokens, slots, physical = 2, 5, 8, 6
    records = []
    for p in range(2):
        ids = []
        for l in range(layers):
            for t in range(tokens):
                ids += [(t + l + p) % physical, (2 * t + 1) % physical] + [-1] * (slots - 2)
        records.append({
            "forward_pass_id": p, "rank": 0, "gatherer_key": "primary",
            "input_ids": list(range(tokens)), "positions": list(range(tokens)),
            "extend_seq_lens": [tokens], "forward_mode": 1, "misc_objects": [],
            "topk_ids_of_layer": tensor("int32", [layers, tokens, slots], ids),
        })
    p2l = [0, 1, 2, 3, 0, 1, 0, 1, 2, 3, 3, 2]
    save({"records": records,
          "last_physical_to_logical_map": tensor("int64", [layers, physical], p2l)},
         os.path.join(out, "sglang_per_token.pt"))


def vllm_window(out):
    # vLLM's expert_load_window [window, layers, physical] as a view into a
    # larger buffer (offset 12), int64, and physical_to_logical_map.
    window, layers, physical, offset = 3, 2, 6, 12
    vals = [7] * offset
    for w in range(window):
        for l in range(layers):
            for p in range(physical):
                vals.append(w * 100 + l * 10 + p + 1)
    load = Tensor(Storage("int64", vals), [window, layers, physical], offset=offset)
    p2l = [0, 1, 2, 3, 0, 1, 0, 1, 2, 3, 3, 2]
    save({"expert_load_window": load,
          "physical_to_logical_map": tensor("int64", [layers, physical], p2l)},
         os.path.join(out, "vllm_window.pt"))


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join("trace", "testdata")
    os.makedirs(out, exist_ok=True)
    sglang_stat(out)
    sglang_per_token(out)
    vllm_window(out)


if __name__ == "__main__":
    main()
