#!/usr/bin/env python3
"""Scan benchmark on the GPU: the compiler's kernels beside the anchors, in one run.

Runs build/bench/scan-bench (our forward and forward+backward kernels and the
copy bandwidth, measured in the same process), then the anchors on the same
device: the quick Triton chunked scan of ../shared/bench/anchors_gpu.py and
PyTorch (log-space and, where affordable, the step loop). Prints a table with
the ratios and writes docs-ready JSON (device, date, commit, command, results)
to $OUT/scan.json (or --out).

    python3 bench/scan_bench.py --bin build/bench/scan-bench [--out FILE]
"""
import argparse, datetime, json, os, subprocess, sys

ap = argparse.ArgumentParser()
ap.add_argument("--bin", default="build/bench/scan-bench")
ap.add_argument("--out", default=os.path.join(os.environ.get("OUT", "."), "scan.json"))
ap.add_argument("--commit", default=os.environ.get("MMREC_COMMIT", "unknown"))
ap.add_argument("--anchors-src", default=None,
                help="directory holding the fetched accelerated_scan/ and fla/ packages "
                     "(.carry/anchors, see bench/scan_anchors_ext.py); each runs in a subprocess")
args = ap.parse_args()

ours = [json.loads(l) for l in subprocess.run([args.bin], check=True, capture_output=True,
                                               text=True).stdout.splitlines() if l.strip()]
for o in ours:
    if "sanity" in o:
        print("sanity (GPU vs CPU kernel):", o)
copy_tbps = next(o["value"] for o in ours if o.get("metric") == "copy_TBps")
cases = [o for o in ours if "case" in o]

import torch, triton, triton.language as tl
from triton.testing import do_bench

def bench(fn):
    return do_bench(fn, warmup=25, rep=100, return_mode="median")

# The quick Triton scan, as in ../shared/bench/anchors_gpu.py (one program per
# (batch, channel tile), a chunk of L at a time with tl.associative_scan).
@triton.jit
def _comb(a1, b1, a2, b2):
    return a1 * a2, b1 * a2 + b2

@triton.jit
def lin_scan_kernel(A, B, H, L, D, BL: tl.constexpr, BD: tl.constexpr):
    pb = tl.program_id(0)
    pd = tl.program_id(1)
    offs_d = pd * BD + tl.arange(0, BD)
    carry = tl.zeros([BD], dtype=tl.float32)
    base = pb * L * D
    for l0 in range(0, L, BL):
        offs_l = l0 + tl.arange(0, BL)
        idx = base + offs_l[:, None] * D + offs_d[None, :]
        av = tl.load(A + idx).to(tl.float32)
        bv = tl.load(B + idx).to(tl.float32)
        aa, bb = tl.associative_scan((av, bv), axis=0, combine_fn=_comb)
        h = aa * carry[None, :] + bb
        tl.store(H + idx, h.to(H.dtype.element_ty))
        carry = tl.sum(tl.where(offs_l[:, None] == l0 + BL - 1, h, 0.0), axis=0)

def triton_scan(a, b, BL=64, BD=32):
    Bn, L, D = a.shape
    h = torch.empty_like(b)
    lin_scan_kernel[(Bn, D // BD)](a, b, h, L, D, BL=BL, BD=BD, num_warps=4)
    return h

def torch_logspace(la, b):
    c = torch.cumsum(la, dim=1)
    return torch.exp(c) * torch.cumsum(b * torch.exp(-c), dim=1)

results = []
rows = []
for c in cases:
    Bn, T, D, dt = c["case"].split()
    Bn, T, D = int(Bn[1:]), int(T[1:]), int(D[1:])
    dtype = torch.float32 if dt == "f32" else torch.bfloat16
    a = torch.empty(Bn, T, D, device="cuda").uniform_(0.82, 1.0).to(dtype)
    b = torch.empty(Bn, T, D, device="cuda").uniform_(-1, 1).to(dtype)
    tri = bench(lambda: triton_scan(a, b))
    la = torch.log(a.float())
    logsp = bench(lambda: torch_logspace(la, b.float())) if dt == "f32" else None
    floor_f = c["fwd_bytes"] / (copy_tbps * 1e12) * 1e3
    floor_fb = c["fwdbwd_bytes"] / (copy_tbps * 1e12) * 1e3
    # The anchors' own floor: 3 arrays of the I/O type (a, b, h).
    es = 4 if dt == "f32" else 2
    floor_anchor = 3 * Bn * T * D * es / (copy_tbps * 1e12) * 1e3
    rows.append((c["case"], c["fwd_ms"], floor_f, tri, logsp, c["fwdbwd_ms"], floor_fb))
    results.append({"case": c["case"], "metric": "forward", "unit": "ms", "ours": c["fwd_ms"],
                    "floor": round(floor_f, 4),
                    "anchors": {"triton_quick_scan": round(tri, 4),
                                **({"pytorch_logspace": round(logsp, 4)} if logsp else {}),
                                "floor_3_arrays_io_dtype": round(floor_anchor, 4)}})
    results.append({"case": c["case"], "metric": "forward+backward", "unit": "ms",
                    "ours": c["fwdbwd_ms"], "floor": round(floor_fb, 4), "anchors": {}})
    del a, b, la
    torch.cuda.empty_cache()
    if args.anchors_src:
        ext = results[-2]["anchors"]
        for anchor in ("accelerated_scan", "fla"):
            try:
                p = subprocess.run([sys.executable, os.path.join(os.path.dirname(__file__),
                                    "scan_anchors_ext.py"), "--src", args.anchors_src,
                                    "--anchor", anchor, "--case", c["case"]],
                                   capture_output=True, text=True, timeout=600)
                lines = [l for l in p.stdout.splitlines() if l.startswith("{")]
                r = json.loads(lines[-1]) if lines else {
                    "error": f"exit {p.returncode}: " + (p.stderr.strip().splitlines() or [""])[-1][:200]}
            except subprocess.TimeoutExpired:
                r = {"error": "timeout"}
            print(f"anchor {anchor} {c['case']}: {r}", flush=True)
            if "error" in r:
                ext[anchor + "_error"] = r["error"]
            else:
                ext[anchor] = r["fwd_ms"]
                results[-1]["anchors"][anchor] = r["fwdbwd_ms"]

print(f"copy bandwidth (read+write): {copy_tbps:.3f} TB/s")
print(f"{'case':24s} {'fwd ms':>8s} {'floor':>7s} {'%floor':>7s} {'triton':>8s} {'ours/tri':>8s} "
      f"{'logspace':>9s} {'fwd+bwd':>8s} {'floor':>7s} {'%floor':>7s}")
for case, f, ff, tri, ls, fb, ffb in rows:
    print(f"{case:24s} {f:8.4f} {ff:7.4f} {100*ff/f:6.1f}% {tri:8.4f} {tri/f:7.2f}x "
          f"{(ls if ls else float('nan')):9.4f} {fb:8.4f} {ffb:7.4f} {100*ffb/fb:6.1f}%")
if args.anchors_src:
    print(f"{'case':24s} {'anchor':18s} {'fwd ms':>8s} {'anchor/ours':>11s} {'f+b ms':>8s} {'anchor/ours':>11s}")
    for i in range(0, len(results), 2):
        fw, fbw = results[i], results[i + 1]
        for anchor in ("accelerated_scan", "fla"):
            if anchor in fw["anchors"]:
                fa, fba = fw["anchors"][anchor], fbw["anchors"][anchor]
                print(f"{fw['case']:24s} {anchor:18s} {fa:8.4f} {fa/fw['ours']:10.2f}x "
                      f"{fba:8.4f} {fba/fbw['ours']:10.2f}x")
            else:
                print(f"{fw['case']:24s} {anchor:18s} {fw['anchors'].get(anchor + '_error')}")

doc = {"device": torch.cuda.get_device_name(), "date": datetime.date.today().isoformat(),
       "commit": args.commit, "command": "python3 " + " ".join(sys.argv),
       "copy_TBps": copy_tbps, "results": results}
with open(args.out, "w") as f:
    json.dump(doc, f, indent=2)
print("wrote", args.out)
