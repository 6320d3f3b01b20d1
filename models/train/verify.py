#!/usr/bin/env python3
"""Checks a model set directory against its manifest and test vectors with ONNX Runtime.

    python models/train/verify.py [models]

For every model in manifest.toml: the file's sha256, opset and IR version, the input and
output names, types and shapes the session reports, and (for the main set) that the
outputs for testvectors.json's inputs match within its tolerance. Exits 1 on any mismatch.
"""

import hashlib
import json
import sys
import tomllib
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

root = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).resolve().parents[1])
failures = []


def check(ok: bool, what: str) -> None:
    print(("ok   " if ok else "FAIL ") + what)
    if not ok:
        failures.append(what)


for directory in (root, root / "test"):
    manifest = tomllib.loads((directory / "manifest.toml").read_text())
    vectors_path = directory / "testvectors.json"
    vectors = json.loads(vectors_path.read_text()) if vectors_path.exists() else None
    for spec in manifest["model"]:
        path = directory / spec["file"]
        data = path.read_bytes()
        tag = f"{directory.name}/{spec['file']}"
        check(hashlib.sha256(data).hexdigest() == spec["sha256"], f"{tag}: sha256")
        model = onnx.load_from_string(data)
        check(model.ir_version == spec["ir_version"], f"{tag}: IR version {model.ir_version}")
        opset = {o.domain: o.version for o in model.opset_import}.get("", None)
        check(opset == spec["opset"], f"{tag}: opset {opset}")
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        for got, want in ((sess.get_inputs(), spec["input"]), (sess.get_outputs(), spec["output"])):
            check(len(got) == 1, f"{tag}: one {want['name']}")
            g = got[0]
            shape = [d if isinstance(d, int) else -1 for d in g.shape]
            check(g.name == want["name"] and g.type == "tensor(float)" and shape == want["shape"],
                  f"{tag}: {g.name} {g.type} {shape}")
        if vectors is not None and spec["name"] in vectors:
            x = np.array(vectors[spec["name"]]["inputs"], dtype=np.float32)
            want = np.array(vectors[spec["name"]]["outputs"], dtype=np.float32)
            got = sess.run(None, {"features": x})[0]
            diff = float(np.max(np.abs(got - want)))
            tolerance = spec.get("tolerance", vectors["tolerance"])
            check(got.shape == want.shape and diff <= tolerance,
                  f"{tag}: {len(x)} test vectors, max abs difference {diff:g}")

print(f"onnxruntime {ort.__version__}: " + ("all checks passed" if not failures else f"{len(failures)} failed"))
sys.exit(1 if failures else 0)
