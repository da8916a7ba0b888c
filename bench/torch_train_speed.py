#!/usr/bin/env python3
"""Training throughput of the PyTorch implementation of MMREC_SPEC's model
(bench/torch_mmrec.py, eager mode): forward + backward + AdamW on random
weights and tokens, B sequences of T tokens, on the GPU. The anchor that
issue 6's mmrec-small benchmark compares mmrec-train against, run in the
same session on the same device:

    python3 bench/torch_train_speed.py --manifest K/mmrec-small.train.json \\
        --batch 8 --seq-len 1024 [--steps 3] [--dtype float32|bfloat16] [--compile]

--compile runs the layer's pieces through torch.compile (the projections and
gate, one level-0 step, levels 1-2 with the combination and FFN); the level-0
loop stays a Python loop of T steps, since compiling the whole layer would
unroll it. Compilation happens in the warm-up step, which is not timed.

Prints one JSON line: tokens/s (median step), ms per step, peak memory.
"""
import argparse
import json
import math
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_mmrec import compile_pieces, model_loss  # noqa: E402


def init_params(cfg, dev, dtype):
    D, F, V, L, r = (cfg[k] for k in ("hidden_dim", "ffn_dim", "vocab_size", "num_layers",
                                      "decay_rank"))
    G, M = cfg["num_memories"], cfg["memory_size"]
    d = D // G
    g = torch.Generator(device="cpu").manual_seed(1)

    def normal(*shape, std=0.02):
        return (torch.randn(*shape, generator=g) * std).to(dev, dtype).requires_grad_()

    def fill(*shape, v):
        return torch.full(shape, float(v), device=dev, dtype=dtype, requires_grad=True)

    logit = math.log(cfg["decay_init"] / (1 - cfg["decay_init"]))
    p = {"embed": normal(V, D), "final_norm": fill(D, v=1.0)}
    for l in range(L):
        pre = f"layers.{l}."
        H = cfg["num_heads"]
        p.update({
            pre + "w_in": fill(D, v=1.0), pre + "W_q": normal(D, D), pre + "W_k": normal(D, D),
            pre + "W_v": normal(D, D), pre + "W_z": normal(D, D), pre + "A_gamma": normal(D, r),
            pre + "B_gamma": fill(r, D, v=0.0), pre + "lambda": fill(D, v=logit),
            pre + "W_g": normal(D, D) if cfg["gate"] == "dense" else normal(H, D // H, D // H),
            pre + "b_g": fill(D, v=0.0), pre + "S": normal(G, M, d), pre + "mu": fill(G, M, v=logit),
            pre + "rho": fill(G, 3, v=0.0), pre + "W_o": normal(D, D, std=0.02 / math.sqrt(2 * L)),
            pre + "w_ffn": fill(D, v=1.0), pre + "W_1": normal(D, F), pre + "W_3": normal(D, F),
            pre + "W_2": normal(F, D, std=0.02 / math.sqrt(2 * L)),
        })
    return p


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--manifest", required=True)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq-len", type=int, default=1024)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    ap.add_argument("--compile", action="store_true")
    args = ap.parse_args()
    dev = "cuda"
    if args.compile:
        compile_pieces(dynamic=False)
    cfg = json.load(open(args.manifest))["config"]
    dtype = getattr(torch, args.dtype)
    params = init_params(cfg, dev, dtype)
    opt = torch.optim.AdamW(params.values(), lr=1e-3, betas=(0.9, 0.95), weight_decay=0.1)
    B, T = args.batch, args.seq_len
    tokens = torch.randint(0, cfg["vocab_size"], (B, T), device=dev)
    times = []
    torch.cuda.reset_peak_memory_stats()
    for step in range(args.steps + 1):  # the first is a warm-up
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        loss = model_loss(cfg, params, tokens)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        torch.cuda.synchronize()
        if step > 0:
            times.append(time.perf_counter() - t0)
    times.sort()
    ms = 1e3 * times[len(times) // 2]
    print(json.dumps({
        "impl": "pytorch-compile" if args.compile else "pytorch-eager", "model": cfg["name"], "dtype": args.dtype, "batch": B,
        "seq_len": T, "ms_per_step": ms, "tokens_per_s": B * T / ms * 1e3,
        "loss": float(loss), "peak_mib": torch.cuda.max_memory_allocated() / 2**20,
        "device": torch.cuda.get_device_name(), "torch": torch.__version__}))


if __name__ == "__main__":
    main()
