#!/usr/bin/env python3
"""Writes tests/data/smollm2_gguf_golden.json: what an independent GGUF reader (the PyPI
package `gguf`, GGUFReader and gguf.quants.dequantize) sees in SmolLM2-135M-Instruct.Q4_1.gguf.
tests/gguf_test.cpp compares the C++ reader and dequantiser against it.

Setup (outside the repository):
  python3 -m venv /work/venv-gguf && /work/venv-gguf/bin/pip install gguf numpy
  /work/venv-gguf/bin/python tests/golden/make_gguf_golden.py [--model PATH] [--out PATH]
"""
import argparse
import hashlib
import json
import os
from importlib.metadata import version

import numpy as np
from gguf import GGUFReader, GGUFValueType
from gguf.quants import dequantize

DEFAULT_MODEL = os.path.expanduser("~/.cache/indexshare/SmolLM2-135M-Instruct.Q4_1.gguf")
HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_OUT = os.path.join(HERE, "..", "data", "smollm2_gguf_golden.json")

# (tensor, rows): rows dequantised for the checksums.
ROWS = [
    ("token_embd.weight", [0, 1, 2, 100, 49151]),
    ("blk.0.attn_q.weight", [0, 575]),
    ("blk.0.attn_k.weight", [0, 191]),
    ("blk.7.attn_v.weight", [64]),
    ("blk.15.ffn_gate.weight", [1000]),
    ("blk.29.ffn_down.weight", [0, 575]),
    ("blk.0.attn_norm.weight", [0]),
    ("output_norm.weight", [0]),
]


def scalar(v, t):
    if t == GGUFValueType.STRING:
        return bytes(v).decode("utf-8")
    if t == GGUFValueType.BOOL:
        return bool(v[0])
    if t in (GGUFValueType.FLOAT32, GGUFValueType.FLOAT64):
        return float(v[0])
    return int(v[0])


def field_json(f):
    t = f.types[0]
    if t != GGUFValueType.ARRAY:
        return {"type": t.name.lower(), "value": scalar(f.parts[f.data[0]], t)}
    et = f.types[1]
    vals = [scalar(f.parts[i], et) for i in f.data]
    return {"type": "array", "elem_type": et.name.lower(), "count": len(vals),
            "first": vals[:8], "last": vals[-1] if vals else None}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=os.environ.get("INDEXSHARE_MODEL", DEFAULT_MODEL))
    ap.add_argument("--out", default=DEFAULT_OUT)
    args = ap.parse_args()

    with open(args.model, "rb") as fh:
        sha = hashlib.sha256(fh.read()).hexdigest()
    r = GGUFReader(args.model)
    out = {
        "generator": f"tests/golden/make_gguf_golden.py with gguf {version('gguf')}, numpy {np.__version__}",
        "file_size": os.path.getsize(args.model),
        "sha256": sha,
        "version": int(r.fields["GGUF.version"].parts[-1][0]),
        "tensor_count": len(r.tensors),
        "alignment": int(r.alignment),
        "data_offset": int(r.data_offset),
        "metadata": {},
        "tensors": [],
        "rows": [],
    }
    for k, f in r.fields.items():
        if k.startswith("GGUF."):
            continue
        out["metadata"][k] = field_json(f)
    for t in r.tensors:
        out["tensors"].append({
            "name": t.name,
            "type": t.tensor_type.name.lower(),
            "type_id": int(t.tensor_type),
            "ne": [int(d) for d in t.shape],
            "offset": int(t.field.parts[-1][0]),  # relative to the data section
            "file_offset": int(t.data_offset),
            "nbytes": int(t.n_bytes),
        })
    by_name = {t.name: t for t in r.tensors}
    for name, rows in ROWS:
        t = by_name[name]
        full = dequantize(t.data, t.tensor_type).reshape(-1, int(t.shape[0]))
        for row in rows:
            x = full[row].astype(np.float64)
            w = np.arange(1, x.size + 1, dtype=np.float64)
            out["rows"].append({
                "tensor": name, "row": row,
                "sum": float(x.sum()), "sum_sq": float((x * x).sum()),
                "weighted_sum": float((w * x).sum()),  # catches element order errors
                "first": [float(v) for v in full[row][:8]],
            })
    # One line per metadata entry, tensor and row: small diffs, easy to read.
    def line(v):
        return json.dumps(v, ensure_ascii=False)
    parts = [f' {line(k)}: {line(v)}' for k, v in out.items() if not isinstance(v, (dict, list))]
    parts.append(' "metadata": {\n' + ",\n".join(f"  {line(k)}: {line(v)}" for k, v in out["metadata"].items()) + "\n }")
    for key in ("tensors", "rows"):
        parts.append(f' "{key}": [\n' + ",\n".join(f"  {line(v)}" for v in out[key]) + "\n ]")
    with open(args.out, "w") as fh:
        fh.write("{\n" + ",\n".join(parts) + "\n}\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
