#!/usr/bin/env python3
"""Issue 3's external scan anchors, one case a process (GPU machine only).

accelerated-scan (proger/accelerated-scan, its CUDA warp scan, layout
(B, D, T), T a power of two) and flash-linear-attention's chunk_hgrn
(fla-org/flash-linear-attention, Triton, layout (B, T, D), log decays) are
brought onto this machine with the `fetch` tool and carried, never committed:
bench/make-carry.sh copies them to .carry/anchors when ANCHOR_REPOS names
the mirrors. bench/scan_bench.py runs this script once per case and anchor
in a subprocess, because accelerated-scan is known to crash (illegal memory
access) at B1·T32768 bf16, which would poison the CUDA context of the
benchmark itself.

    python3 bench/scan_anchors_ext.py --src .carry/anchors --anchor fla --case "B8 T2048 D4096 bf16"

Prints one JSON line {"anchor", "case", "fwd_ms", "fwdbwd_ms"} or {"anchor",
"case", "error"}.
"""
import argparse, importlib, json, os, sys, types

ap = argparse.ArgumentParser()
ap.add_argument("--src", required=True)
ap.add_argument("--anchor", choices=["accelerated_scan", "fla"], required=True)
ap.add_argument("--case", required=True)
args = ap.parse_args()

Bn, T, D, dt = args.case.split()
Bn, T, D = int(Bn[1:]), int(T[1:]), int(D[1:])
out = {"anchor": args.anchor, "case": args.case}
try:
    import torch
    from triton.testing import do_bench
    sys.path.insert(0, os.path.abspath(args.src))
    dtype = torch.float32 if dt == "f32" else torch.bfloat16
    a = torch.empty(Bn, T, D, device="cuda").uniform_(0.82, 1.0)
    b = torch.empty(Bn, T, D, device="cuda").uniform_(-1, 1)
    if args.anchor == "accelerated_scan":
        from accelerated_scan.warp import scan
        gates = a.transpose(1, 2).contiguous().to(dtype)
        tokens = b.transpose(1, 2).contiguous().to(dtype)
        fwd = lambda: scan(gates, tokens)
        g2 = gates.clone().requires_grad_()
        t2 = tokens.clone().requires_grad_()
        dy = torch.randn_like(tokens)
        fb = lambda: scan(g2, t2).backward(dy)
    else:
        # Only the ops it needs: skip fla/__init__.py and fla/ops/__init__.py,
        # which import every layer and model (transformers, einops).
        for name, sub in (("fla", "fla"), ("fla.ops", "fla/ops")):
            m = types.ModuleType(name)
            m.__path__ = [os.path.join(os.path.abspath(args.src), sub)]
            sys.modules[name] = m
        chunk_hgrn = importlib.import_module("fla.ops.hgrn.chunk").chunk_hgrn
        x = b.to(dtype)
        g = torch.log(a).to(dtype)
        fwd = lambda: chunk_hgrn(x, g)
        x2 = x.clone().requires_grad_()
        g2 = g.clone().requires_grad_()
        dy = torch.randn_like(x)
        fb = lambda: chunk_hgrn(x2, g2)[0].backward(dy)
    out["fwd_ms"] = round(do_bench(fwd, warmup=25, rep=100, return_mode="median"), 4)
    out["fwdbwd_ms"] = round(do_bench(fb, warmup=10, rep=50, return_mode="median"), 4)
    torch.cuda.synchronize()
except Exception as e:  # reported, not hidden: scan_bench.py prints it
    out["error"] = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:300]
print(json.dumps(out), flush=True)
