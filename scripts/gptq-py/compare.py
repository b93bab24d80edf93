#!/usr/bin/env python3
"""gptq.py's GPTQ against qtl's on the same weights and Hessians, layer by layer.

usage: scripts/gptq-py/compare.py DUMP_DIR      (DUMP_DIR written by dump_layers; see compare.sh)

For every linear layer of the bundled model, runs the GPTQ of IST-DASLab's gptq.py (Frantar et
al.; the public algorithm of its fasterquant() and Quantizer, transcribed here in PyTorch float32
as gptq.py runs it: 3 bits, asymmetric min-max grid per group of 32, 1% damping, blocks of 128,
groups fitted when their first column is reached on the weights as of the block's start) on the
weights and Hessian qtl used, and compares with qtl's results: the layer objective
tr((W - Q) (H + λI) (W - Q)^T) of each, and the share of weights where qtl (with gptq.py's
group-fit order) picked the same grid level. Needs python3-torch and python3-numpy.
"""
import os
import sys

import numpy as np
import torch


def load(path, dtype):
    with open(path, "rb") as f:
        rows, cols = np.frombuffer(f.read(16), dtype=np.int64)
        data = np.frombuffer(f.read(), dtype=dtype)
    return data.reshape(int(rows), int(cols))


def find_params(x, maxq):
    """gptq.py's Quantizer.find_params for weights, asymmetric, one row per output channel."""
    xmin = torch.minimum(x.min(1).values, torch.zeros(x.shape[0]))
    xmax = torch.maximum(x.max(1).values, torch.zeros(x.shape[0]))
    both_zero = (xmin == 0) & (xmax == 0)
    xmin[both_zero] = -1
    xmax[both_zero] = +1
    scale = (xmax - xmin) / maxq
    zero = torch.round(-xmin / scale)
    return scale.unsqueeze(1), zero.unsqueeze(1)


def quantize(x, scale, zero, maxq):
    q = torch.clamp(torch.round(x / scale) + zero, 0, maxq)
    return scale * (q - zero)


def gptq_py(w, h, bits=3, groupsize=32, blocksize=128, percdamp=0.01):
    """The column loop of gptq.py's fasterquant() (no act-order, no static groups)."""
    maxq = 2 ** bits - 1
    W = w.clone()
    H = h.clone()
    cols = W.shape[1]
    dead = torch.diag(H) == 0
    H[dead, dead] = 1
    W[:, dead] = 0
    damp = percdamp * torch.mean(torch.diag(H))
    idx = torch.arange(cols)
    H[idx, idx] += damp
    Hinv = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(H)), upper=True)
    Q = torch.zeros_like(W)
    scale = zero = None
    for i1 in range(0, cols, blocksize):
        i2 = min(i1 + blocksize, cols)
        W1 = W[:, i1:i2].clone()
        Q1 = torch.zeros_like(W1)
        Err1 = torch.zeros_like(W1)
        Hinv1 = Hinv[i1:i2, i1:i2]
        for i in range(i2 - i1):
            col = W1[:, i]
            d = Hinv1[i, i]
            if (i1 + i) % groupsize == 0:  # fitted on W, which lacks this block's own updates
                scale, zero = find_params(W[:, i1 + i:i1 + i + groupsize], maxq)
            q = quantize(col.unsqueeze(1), scale, zero, maxq).flatten()
            Q1[:, i] = q
            err = (col - q) / d
            W1[:, i:] -= err.unsqueeze(1).matmul(Hinv1[i, i:].unsqueeze(0))
            Err1[:, i] = err
        Q[:, i1:i2] = Q1
        W[:, i2:] -= Err1.matmul(Hinv[i1:i2, i2:])
    return Q


def objective(w, q, h_damped):
    d = (w - q).astype(np.float64)
    return float(np.einsum("ij,jk,ik->", d, h_damped, d))


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    root = sys.argv[1]
    names = open(os.path.join(root, "layers.txt")).read().split()
    print("| layer | gptq.py | qtl | qtl / gptq.py | qtl, gptq.py's group order | same level |")
    print("|---|---|---|---|---|---|")
    tot = {"py": 0.0, "qtl": 0.0, "qtlpy": 0.0}
    same_total = count_total = 0
    ratios = []
    for n in names:
        w = load(os.path.join(root, n + ".w"), np.float32)
        h = load(os.path.join(root, n + ".h"), np.float64)
        q_qtl = load(os.path.join(root, n + ".qtl"), np.float32)
        q_qtlpy = load(os.path.join(root, n + ".qtlpy"), np.float32)
        q_py = gptq_py(torch.from_numpy(w.copy()), torch.from_numpy(h.astype(np.float32))).numpy()
        hd = h.copy()
        hd[np.diag_indices_from(hd)] += 0.01 * np.mean(np.diag(h))
        lp, lq, lqp = objective(w, q_py, hd), objective(w, q_qtl, hd), objective(w, q_qtlpy, hd)
        tot["py"] += lp
        tot["qtl"] += lq
        tot["qtlpy"] += lqp
        ratios.append(lq / lp)
        # Same grid level: within a small fraction of the row's range (qtl's scales are fp16).
        span = (w.max(1) - np.minimum(w.min(1), 0)).reshape(-1, 1)
        same = np.abs(q_qtlpy - q_py) <= 2e-3 * span
        same_total += int(same.sum())
        count_total += same.size
        print(f"| {n} | {lp:.5g} | {lq:.5g} | {lq / lp:.4f} | {lqp / lp:.4f} | {100 * same.mean():.2f}% |")
    r = np.array(ratios)
    print(f"\nsum over layers: gptq.py {tot['py']:.6g}, qtl {tot['qtl']:.6g} ({tot['qtl'] / tot['py']:.4f}), "
          f"qtl with gptq.py's group order {tot['qtlpy']:.6g} ({tot['qtlpy'] / tot['py']:.4f}); "
          f"per-layer qtl / gptq.py: median {np.median(r):.4f}, min {r.min():.4f}, max {r.max():.4f}; "
          f"same level {100 * same_total / count_total:.2f}% of {count_total} weights")


if __name__ == "__main__":
    main()
