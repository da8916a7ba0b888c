#!/usr/bin/env python3
"""Gated-recurrence benchmark report: ours beside the anchors of the same run.

Reads the JSON lines of build/bench/gated-bench (our kernels) and the JSON of
bench/gated_anchors.py (FlashRNN and PyTorch, measured right after on the same
device), prints the table with the ratios and writes the docs-ready JSON
({device, date, commit, command, results: [{case, metric, unit, ours, floor,
anchors}]}) and a markdown table.

    python3 bench/gated_report.py --ours $OUT/gated-bench.jsonl \\
        --anchors $OUT/gated_anchors.json --out $OUT/gated.json --md $OUT/gated.md
"""
import argparse, datetime, json, os

ap = argparse.ArgumentParser()
ap.add_argument("--ours", required=True)
ap.add_argument("--anchors", required=True)
ap.add_argument("--out", required=True)
ap.add_argument("--md", required=True)
ap.add_argument("--commit", default=os.environ.get("MMREC_COMMIT", "unknown"))
args = ap.parse_args()

ours = [json.loads(l) for l in open(args.ours) if l.strip().startswith("{")]
anc = json.load(open(args.anchors))
A = anc.get("results", {})

def num(key):
    v = A.get(key)
    return v if isinstance(v, (int, float)) else None

# The targets (us per step) serve as the floor column.
TARGETS = {("per_head H32 dh128 B8", "bf16", "forward"): 1.5,
           ("per_head H32 dh128 B8", "bf16", "forward+backward"): 4.5,
           ("dense D4096 B8 (the 7B gate)", "bf16", "forward"): 6.0,
           ("dense D4096 B8 (the 7B gate)", "bf16", "forward+backward"): 18.0}
ph = "per_head.H32.dh128.B8.T2048.bf16"
dn = "dense.D4096.B8.T512.bf16"
ANCHORS = {
    ("per_head H32 dh128 B8", "bf16", "forward"): {
        "flashrnn_fused_elman": num(ph + ".flashrnn_fused_elman.fwd.us_per_step"),
        "pytorch_cudagraph_loop": num(ph + ".torch_cudagraph.fwd.us_per_step"),
        "pytorch_eager_loop_T256": num("per_head.H32.dh128.B8.T256.bf16.torch_eager.fwd.us_per_step")},
    ("per_head H32 dh128 B8", "bf16", "forward+backward"): {
        "flashrnn_fused_elman": num(ph + ".flashrnn_fused_elman.fwdbwd.us_per_step")},
    ("dense D4096 B8 (the 7B gate)", "bf16", "forward"): {
        "flashrnn_alternating_elman": num(dn + ".flashrnn_alternating_elman.fwd.us_per_step"),
        "pytorch_cudagraph_loop": num(dn + ".torch_cudagraph.fwd.us_per_step"),
        "pytorch_eager_loop_T64": num("dense.D4096.B8.T64.bf16.torch_eager.fwd.us_per_step")},
    ("dense D4096 B8 (the 7B gate)", "bf16", "forward+backward"): {
        "flashrnn_alternating_elman": num(dn + ".flashrnn_alternating_elman.fwdbwd.us_per_step")},
}

results = []
lines = ["| case | dtype | phase | ours µs/step | target | TFLOP/s | anchors µs/step (ours is N× faster) |",
         "|---|---|---|---|---|---|---|"]
for o in ours:
    key = (o["case"], o["dtype"], o["phase"])
    an = {k: v for k, v in ANCHORS.get(key, {}).items() if v is not None}
    results.append({"case": f'{o["case"]} T{o["T"]} {o["dtype"]}', "metric": o["phase"],
                    "unit": "us_per_step", "ours": round(o["us_per_step"], 3),
                    "floor": TARGETS.get(key), "anchors": an,
                    "tflops": o["TFLOPs"], "GBps": o["GBps"]})
    ratio = ", ".join(f"{k} {v:.2f} ({v / o['us_per_step']:.2f}×)" for k, v in an.items())
    tgt = TARGETS.get(key)
    lines.append(f'| {o["case"]} T{o["T"]} | {o["dtype"]} | {o["phase"]} | {o["us_per_step"]:.3f} | '
                 f'{"≤ %.1f" % tgt if tgt else "-"} | {o["TFLOPs"]:.1f} | {ratio or "-"} |')
doc = {"device": anc.get("device", "unknown"), "date": datetime.date.today().isoformat(),
       "commit": args.commit, "command": "bench/run-gpu.sh gated (gated-bench, bench/gated_anchors.py, bench/gated_report.py)",
       "results": results}
json.dump(doc, open(args.out, "w"), indent=2)
open(args.md, "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
