#!/usr/bin/env python3
"""Times one call of a model on one CPU thread (default: models/test/slow.onnx, N = 1).

    python models/train/bench_slow.py [path.onnx] [--runs 3] [--threads 1]
"""

import argparse
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

ap = argparse.ArgumentParser()
ap.add_argument("model", nargs="?", type=Path,
                default=Path(__file__).resolve().parents[1] / "test" / "slow.onnx")
ap.add_argument("--runs", type=int, default=3)
ap.add_argument("--threads", type=int, default=1, help="intra-op threads; 0 = ONNX Runtime's default")
args = ap.parse_args()

opts = ort.SessionOptions()
opts.intra_op_num_threads = args.threads
opts.inter_op_num_threads = 1
sess = ort.InferenceSession(str(args.model), opts, providers=["CPUExecutionProvider"])
x = np.array([[120.0, 64.0, 2.0, 0.0, 0.0]], dtype=np.float32)
times = []
for _ in range(args.runs):
    t = time.perf_counter()
    y = sess.run(None, {"features": x})[0]
    times.append(time.perf_counter() - t)
print(f"onnxruntime {ort.__version__}, {args.model.name}, threads={args.threads}: "
      f"output {y.ravel().tolist()} shape {list(y.shape)}, "
      f"seconds per call: {', '.join(f'{s:.2f}' for s in times)} (median {sorted(times)[len(times) // 2]:.2f})")
