#!/usr/bin/env python3
"""Issue 5's PyTorch anchor: forward + backward of the whole memory hierarchy
of one layer (levels 1 and 2 and the combination o, MMREC_SPEC section 2;
bench/torch_mmrec.py's memory_hierarchy, chunk-wise products) and of the
same layer's matrix products, at the 7B shapes by default, on the GPU:

    python3 bench/torch_memory_speed.py [--batch 4] [--seq-len 2048]
        [--dim 4096] [--groups 8] [--slots 1024] [--chunk 128] [--ffn 11008]
        [--rank 64] [--dtype bfloat16] [--reps 5]

Before timing, memory_hierarchy is checked in float64 against a direct
token-by-token transcription of the spec at a small ragged shape (T not a
multiple of C); a mismatch exits non-zero. Prints one JSON line: the median
ms of the memory hierarchy's forward + backward (gradients of q, k, v, h, S,
mu, rho) and of the layer's products (u·[W_q W_k W_v W_z], u·A_γ·B_γ, o·W_o,
u2·[W_1 W_3], ·W_2: forward and both backward products), and their ratio.
bench/memory-bench.py puts it beside mmrec-train --profile's figures.
"""
import argparse
import json
import math
import os
import sys

import torch
import torch.nn.functional as Fn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_mmrec import memory_hierarchy, rmsnorm  # noqa: E402


def naive(cfg, p, q, k, v, hs):
    """The spec's formulas token by token (float64, small shapes only)."""
    B, T, D = q.shape
    G, M, C = cfg["num_memories"], cfg["memory_size"], cfg["chunk_size"]
    d, lo, eps = D // G, cfg["log_clamp_min"], cfg["norm_eps"]
    nC = (T + C - 1) // C
    o = torch.zeros(B, T, D, dtype=q.dtype)
    for b in range(B):
        for g in range(G):
            sl = slice(g * d, (g + 1) * d)
            qq, kk, vv, hh = q[b, :, sl], k[b, :, sl], v[b, :, sl], hs[b, :, sl]
            S, mu = p["S"][g], p["mu"][g]
            om = torch.softmax(p["rho"][g], 0)
            K1 = [kk[c * C:(c + 1) * C].mean(0) for c in range(nC)]
            V1 = [vv[c * C:(c + 1) * C].mean(0) for c in range(nC)]
            mem, mems = torch.zeros(M, d, dtype=q.dtype), []
            for c in range(nC):
                mems.append(mem)
                w = torch.softmax(kk[c * C:(c + 1) * C] @ S.T / math.sqrt(d), -1)
                n = w.sum(0)
                U = (w.T @ vv[c * C:(c + 1) * C]) / torch.clamp(n, min=1e-6)[:, None]
                beta = torch.exp(torch.clamp(n * Fn.logsigmoid(mu), lo, 0.0))
                mem = beta[:, None] * mem + (1 - beta)[:, None] * U
            for t in range(T):
                c = t // C
                y1 = torch.zeros(d, dtype=q.dtype)
                if c > 0:
                    s = torch.stack([qq[t] @ K1[j] for j in range(c)]) / math.sqrt(d)
                    y1 = torch.softmax(s, 0) @ torch.stack(V1[:c])
                a = torch.softmax(qq[t] @ S.T / math.sqrt(d), 0)
                y2 = a @ mems[c]
                hn = rmsnorm(hh[t], None, eps)
                o[b, t, sl] = om[0] * hn + om[1] * y1 + om[2] * y2
    return o


def params(G, M, d, dev, dtype, gen):
    return {"S": torch.randn(G, M, d, generator=gen).to(dev, dtype) * 0.5,
            "mu": (torch.randn(G, M, generator=gen) + 3.0).to(dev, dtype),
            "rho": torch.randn(G, 3, generator=gen).to(dev, dtype)}


def self_check():
    cfg = {"num_memories": 2, "memory_size": 8, "chunk_size": 8, "log_clamp_min": -50.0,
           "norm_eps": 1e-6}
    gen = torch.Generator().manual_seed(3)
    B, T, D = 2, 37, 16
    q, k, v, hs = (torch.randn(B, T, D, generator=gen, dtype=torch.float64) for _ in range(4))
    p = params(2, 8, D // 2, "cpu", torch.float64, gen)
    got, want = memory_hierarchy(cfg, p, q, k, v, hs), naive(cfg, p, q, k, v, hs)
    err = float((got - want).abs().max() / want.abs().max())
    if not err < 1e-12:
        sys.exit(f"torch_memory_speed: memory_hierarchy differs from the spec: rel {err:.3g}")
    return err


def timed(fn, reps):
    fn()  # warm-up
    times = []
    for _ in range(reps):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        fn()
        e.record()
        torch.cuda.synchronize()
        times.append(s.elapsed_time(e))
    times.sort()
    return times[len(times) // 2]


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq-len", type=int, default=2048)
    ap.add_argument("--dim", type=int, default=4096)
    ap.add_argument("--groups", type=int, default=8)
    ap.add_argument("--slots", type=int, default=1024)
    ap.add_argument("--chunk", type=int, default=128)
    ap.add_argument("--ffn", type=int, default=11008)
    ap.add_argument("--rank", type=int, default=64)
    ap.add_argument("--dtype", choices=["float32", "bfloat16"], default="bfloat16")
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args()
    err = self_check()
    dev, dtype = "cuda", getattr(torch, args.dtype)
    B, T, D, G, M, C, F, r = (args.batch, args.seq_len, args.dim, args.groups, args.slots,
                              args.chunk, args.ffn, args.rank)
    cfg = {"num_memories": G, "memory_size": M, "chunk_size": C, "log_clamp_min": -50.0,
           "norm_eps": 1e-6}
    gen = torch.Generator().manual_seed(1)
    leaf = lambda *s, std=1.0: (torch.randn(*s, generator=gen) * std).to(dev, dtype).requires_grad_()
    q, k, v, hs = (leaf(B, T, D) for _ in range(4))
    p = {n: t.requires_grad_() for n, t in params(G, M, D // G, dev, dtype, gen).items()}
    gout = torch.randn(B, T, D, generator=gen).to(dev, dtype)

    def mh():
        o = memory_hierarchy(cfg, p, q, k, v, hs)
        torch.autograd.backward(o, gout)

    torch.cuda.reset_peak_memory_stats()
    mh_ms = timed(mh, args.reps)
    mh_peak = torch.cuda.max_memory_allocated() / 2**20
    # The layer's products, forward and backward (autograd: dX and dW).
    u, o, u2 = leaf(B * T, D), leaf(B * T, D), leaf(B * T, D)
    W = {"qkvz": leaf(D, 4 * D, std=0.02), "A": leaf(D, r, std=0.02), "Bg": leaf(r, D, std=0.02),
         "o": leaf(D, D, std=0.02), "13": leaf(D, 2 * F, std=0.02), "2": leaf(F, D, std=0.02)}
    hmid = leaf(B * T, F)

    def products():
        outs = [u @ W["qkvz"], (u @ W["A"]) @ W["Bg"], o @ W["o"], u2 @ W["13"], hmid @ W["2"]]
        torch.autograd.backward(outs, [torch.ones_like(t) for t in outs])

    pr_ms = timed(products, args.reps)
    flops = 3 * 2 * B * T * (4 * D * D + 2 * D * r + D * D + 2 * D * F + F * D)
    print(json.dumps({
        "impl": "pytorch", "what": "memory hierarchy fwd+bwd, one layer", "dtype": args.dtype,
        "B": B, "T": T, "D": D, "N_m": G, "M": M, "C": C, "self_check_rel_err": err,
        "memory_ms": mh_ms, "memory_peak_mib": mh_peak, "products_ms": pr_ms,
        "products_tflops": flops / (pr_ms * 1e-3) / 1e12, "layer_product_flops": flops,
        "memory_over_products": mh_ms / pr_ms, "device": torch.cuda.get_device_name(),
        "torch": torch.__version__}))


if __name__ == "__main__":
    main()
