#!/usr/bin/env python3
"""onnxruntime baseline for `benches/src/bin/infer.rs`: times the same ONNX model on the same
preprocessed inputs, one thread, batch 1, and checks its outputs against tract's.

Called by the bench (which passes the files); installs onnxruntime/numpy from PyPI if missing:
    python3 benches/scripts/infer-ort.py --model M.onnx --inputs X.f32 --expected Y.f32 \
        --shape 1,3,90,160 --reps 3 --out ort.json
"""
import argparse
import importlib
import json
import subprocess
import sys
import time


def ensure(module, package):
    try:
        return importlib.import_module(module)
    except ImportError:
        subprocess.check_call([sys.executable, "-m", "pip", "install", "--quiet", package])
        return importlib.import_module(module)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--inputs", required=True, help="N inputs, float32 little-endian, back to back")
    ap.add_argument("--expected", help="tract's outputs for the same inputs, float32")
    ap.add_argument("--shape", required=True, help="one input's shape, e.g. 1,3,90,160")
    ap.add_argument("--reps", type=int, default=3, help="passes over all inputs")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()

    np = ensure("numpy", "numpy")
    ort = ensure("onnxruntime", "onnxruntime")

    shape = [int(s) for s in args.shape.split(",")]
    per = int(np.prod(shape))
    inputs = np.fromfile(args.inputs, dtype="<f4")
    n = len(inputs) // per
    inputs = inputs[: n * per].reshape([n] + shape)

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(args.model, opts, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name

    outputs = [sess.run(None, {name: inputs[i]})[0] for i in range(min(n, 20))]  # warm-up
    times = []
    for _ in range(args.reps):
        for i in range(n):
            x = inputs[i]
            t = time.perf_counter()
            sess.run(None, {name: x})
            times.append((time.perf_counter() - t) * 1000.0)
    outputs = np.stack([sess.run(None, {name: inputs[i]})[0].reshape(-1) for i in range(n)])

    result = {
        "onnxruntime": ort.__version__,
        "frames": n,
        "runs": len(times),
        "p50_ms": float(np.percentile(times, 50)),
        "p99_ms": float(np.percentile(times, 99)),
        "mean_ms": float(np.mean(times)),
    }
    if args.expected:
        expected = np.fromfile(args.expected, dtype="<f4").reshape(outputs.shape)
        result["max_abs_diff_vs_tract"] = float(np.abs(outputs - expected).max())
    with open(args.out, "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main()
