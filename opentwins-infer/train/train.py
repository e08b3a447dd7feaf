#!/usr/bin/env python3
"""Train the lane CNN on frames exported by `examples/dataset.rs` and export it to ONNX.

Seeded and deterministic on CPU (same data, same arguments -> same weights up to float
non-associativity across thread counts). See README.md in this directory for the full recipe.

    nice -n 10 python3 opentwins-infer/train/train.py --data /tmp/lane --out opentwins-infer/models

Inputs: DATA/train.{u8,csv} and DATA/val.{u8,csv} (N x 90 x 160 x 3 RGB bytes + truth CSV).
Outputs: OUT/lane.onnx (opset 13, one file, BN folded, output scaling folded into the last Gemm)
and OUT/lane.json (the description `LaneSpec` reads: input size, normalisation, output order).
"""
import argparse
import csv
import json
import math
import os
import time

import numpy as np
import torch
import torch.nn as nn

H, W = 90, 160
MEAN = [0.5, 0.5, 0.5]
STD = [0.25, 0.25, 0.25]
OUTPUTS = ["offset", "heading_deg", "curvature", "lane_width_m"]
# Targets are learnt as (value - SHIFT) / SCALE (about unit range); the export folds this back.
SHIFT = np.array([0.0, 0.0, 0.0, 3.5], dtype=np.float32)
SCALE = np.array([0.7, 5.0, 0.002, 0.3], dtype=np.float32)
# Mirroring the image left-right negates offset, heading and curvature; lane width stays.
MIRROR = np.array([-1.0, -1.0, -1.0, 1.0], dtype=np.float32)


def load(prefix):
    with open(prefix + ".csv") as f:
        rows = list(csv.DictReader(f))
    y = np.array([[float(r[k]) for k in OUTPUTS] for r in rows], dtype=np.float32)
    x = np.fromfile(prefix + ".u8", dtype=np.uint8).reshape(len(rows), H, W, 3)
    x = np.ascontiguousarray(x.transpose(0, 3, 1, 2))  # NCHW: channel-first is much faster
    return torch.from_numpy(x), torch.from_numpy((y - SHIFT) / SCALE)


def normalise(xb):
    mean = torch.tensor(MEAN).view(1, 3, 1, 1)
    std = torch.tensor(STD).view(1, 3, 1, 1)
    return (xb.float() / 255.0 - mean) / std


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        layers, cin = [], 3
        for cout in (16, 32, 64, 64):
            layers += [nn.Conv2d(cin, cout, 3, 2, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]
            cin = cout
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(64 * 6 * 10, 64), nn.ReLU(), nn.Linear(64, len(OUTPUTS)))

    def forward(self, x):
        return self.head(self.features(x))


def fold(net):
    """An equivalent inference-only network: BN folded into the convs, the target scaling folded
    into the last linear layer, so the ONNX graph is Conv/Relu/Flatten/Gemm in physical units."""
    layers, mods = [], list(net.features)
    for i in range(0, len(mods), 3):
        conv, bn = mods[i], mods[i + 1]
        s = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        c = nn.Conv2d(conv.in_channels, conv.out_channels, 3, 2, 1, bias=True)
        c.weight.data = conv.weight.data * s.view(-1, 1, 1, 1)
        c.bias.data = bn.bias.data - bn.running_mean * s
        layers += [c, nn.ReLU()]
    flat, fc1, relu, fc2 = net.head
    last = nn.Linear(64, len(OUTPUTS))
    scale, shift = torch.from_numpy(SCALE), torch.from_numpy(SHIFT)
    last.weight.data = fc2.weight.data * scale.view(-1, 1)
    last.bias.data = fc2.bias.data * scale + shift
    return nn.Sequential(*layers, nn.Flatten(), fc1, nn.ReLU(), last).eval()


def evaluate(net, x, y, batch=500):
    net.eval()
    preds = []
    with torch.no_grad():
        for i in range(0, len(x), batch):
            preds.append(net(normalise(x[i:i + batch])))
    p = torch.cat(preds).numpy() * SCALE + SHIFT
    t = y.numpy() * SCALE + SHIFT
    return p, t, np.abs(p - t).mean(axis=0)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="/tmp/lane")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "models"))
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--seed", type=int, default=20240601)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)

    xtr, ytr = load(os.path.join(args.data, "train"))
    xva, yva = load(os.path.join(args.data, "val"))
    print(f"train {tuple(xtr.shape)}, val {tuple(xva.shape)}", flush=True)

    net = Net()
    opt = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=1e-4)
    steps = args.epochs * math.ceil(len(xtr) / args.batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=steps, pct_start=0.15)
    loss_fn = nn.SmoothL1Loss(beta=0.1)
    mirror = torch.from_numpy(MIRROR)
    gen = torch.Generator().manual_seed(args.seed)
    started = time.time()
    for epoch in range(args.epochs):
        net.train()
        order = torch.randperm(len(xtr), generator=gen)
        total = 0.0
        for i in range(0, len(xtr), args.batch):
            idx = order[i:i + args.batch]
            xb, yb = normalise(xtr[idx]), ytr[idx].clone()
            flip = torch.rand(len(idx), generator=gen) < 0.5
            xb[flip] = xb[flip].flip(3)
            yb[flip] = yb[flip] * mirror
            opt.zero_grad()
            loss = loss_fn(net(xb), yb)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
        _, _, mae = evaluate(net, xva, yva)
        print(f"epoch {epoch + 1}/{args.epochs}: loss {total / len(xtr):.4f}, val MAE "
              + ", ".join(f"{n} {m:.4f}" for n, m in zip(OUTPUTS, mae))
              + f" ({time.time() - started:.0f} s)", flush=True)

    folded = fold(net)
    p_ref, t, mae = evaluate(net, xva, yva)
    p_fold, _, mae_fold = evaluate(folded_wrapper(folded), xva, yva)
    print("folded max |diff|", float(np.abs(p_fold - p_ref).max()), flush=True)

    os.makedirs(args.out, exist_ok=True)
    onnx_path = os.path.join(args.out, "lane.onnx")
    torch.onnx.export(folded, torch.zeros(1, 3, H, W), onnx_path, dynamo=False, opset_version=13,
                      input_names=["image"], output_names=["lane"],
                      dynamic_axes={"image": {0: "batch"}, "lane": {0: "batch"}})
    spec = {
        "name": "lane-cnn-160x90-v1",
        "width": W,
        "height": H,
        "normalize": {"mean": MEAN, "std": STD},
        "outputs": OUTPUTS,
        "training": {
            "script": "opentwins-infer/train/train.py",
            "data": "examples/dataset.rs: train seeds 1000000.., val seeds 8000000..",
            "train_frames": int(len(xtr)),
            "epochs": args.epochs,
            "batch": args.batch,
            "lr": args.lr,
            "seed": args.seed,
            "torch": torch.__version__,
            "val_mae": {n: round(float(m), 5) for n, m in zip(OUTPUTS, mae_fold)},
            "train_seconds": round(time.time() - started),
        },
    }
    with open(os.path.join(args.out, "lane.json"), "w") as f:
        json.dump(spec, f, indent=2)
        f.write("\n")

    import onnxruntime as ort
    sess = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
    sample = normalise(xva[:8]).numpy()
    got = sess.run(None, {"image": sample})[0]
    with torch.no_grad():
        want = folded(torch.from_numpy(sample)).numpy()
    print(f"onnx vs torch max |diff| {np.abs(got - want).max():.2e}; "
          f"{onnx_path}: {os.path.getsize(onnx_path)} bytes", flush=True)


class folded_wrapper(nn.Module):
    """Makes the folded (physical-unit) network comparable in `evaluate`, which rescales."""

    def __init__(self, folded):
        super().__init__()
        self.folded = folded

    def forward(self, x):
        return (self.folded(x) - torch.from_numpy(SHIFT)) / torch.from_numpy(SCALE)


if __name__ == "__main__":
    main()
