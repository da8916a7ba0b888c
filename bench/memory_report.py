#!/usr/bin/env python3
"""Issue 5's benchmark record: the memory hierarchy's time against the
layer's products (ours: mmrec-train --profile, cuBLASLt products in the same
run) and against PyTorch (bench/torch_memory_speed.py, same device call):

    python3 bench/memory_report.py --profile 7b-b4-profile.log \\
        --torch torch-memory.jsonl --layers 24 --steps 2 --recompute \\
        --commit C --command "..." [--out memory.json]

Ours per layer and step is the profile's "memory hierarchy" time over
layers x steps, --steps being the steps the profile timed (mmrec-train
--profile skips the run's first step and every evaluation). With
--recompute that time also holds the recomputation's forward, and every
timed call synchronizes before and after, so it overstates a forward +
backward: the ratios below are conservative for us. Prints a
table and writes the docs/benchmarks JSON ({"device", "date", "commit",
"command", "results": [...]}).
"""
import argparse
import datetime
import json
import re
import sys


def profile_kinds(path):
    kinds, in_kinds = {}, False
    for line in open(path, errors="replace"):
        if line.startswith("by kind"):
            in_kinds = True
            continue
        if in_kinds:
            m = re.match(r"^(\S.*?)\s+([0-9.]+)\s+([0-9.]+)%$", line.rstrip())
            if m:
                kinds[m.group(1)] = float(m.group(2))
            elif line.startswith(("wall", "total")):
                in_kinds = False
    if "memory hierarchy" not in kinds or "products" not in kinds:
        sys.exit(f"memory_report: {path} has no --profile breakdown by kind")
    return kinds


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", required=True)
    ap.add_argument("--torch", required=True)
    ap.add_argument("--layers", type=int, required=True)
    ap.add_argument("--steps", type=int, required=True)
    ap.add_argument("--recompute", action="store_true")
    ap.add_argument("--commit", default="")
    ap.add_argument("--command", default="")
    ap.add_argument("--out")
    args = ap.parse_args()
    kinds = profile_kinds(args.profile)
    t = [json.loads(l) for l in open(args.torch) if l.strip().startswith("{")][-1]
    per = args.layers * args.steps
    ours_mh, ours_pr = kinds["memory hierarchy"] / per, kinds["products"] / per
    shape = f"B{t['B']}·T{t['T']}·D{t['D']} N_m{t['N_m']} M{t['M']} C{t['C']} {t['dtype']}"
    rows = [
        ("memory hierarchy fwd+bwd, ms per layer and step", "ms", ours_mh,
         {"pytorch": t["memory_ms"]}),
        ("layer products fwd+bwd, ms per layer and step", "ms", ours_pr,
         {"pytorch": t["products_ms"]}),
        ("memory hierarchy / products", "%", 100 * ours_mh / ours_pr,
         {"pytorch": 100 * t["memory_over_products"]}),
        ("memory hierarchy, PyTorch / ours", "x", t["memory_ms"] / ours_mh, {}),
    ]
    floors = {"memory hierarchy / products": 15.0, "memory hierarchy, PyTorch / ours": 10.0}
    print(f"{shape}; ours over {args.layers} layers x {args.steps} steps"
          f"{' with --recompute' if args.recompute else ''}")
    print(f"{'case':52s} {'ours':>10s} {'PyTorch':>10s} {'target':>8s}")
    for case, unit, ours, anchors in rows:
        tgt = floors.get(case)
        print(f"{case:52s} {ours:10.2f} {anchors.get('pytorch', float('nan')):10.2f} "
              f"{('<= ' if unit == '%' else '>= ') + str(tgt) if tgt else '':>8s}")
    # The device is the PyTorch run's: the same call, the same GPU.
    rec = {"device": t["device"], "date": datetime.date.today().isoformat(),
           "commit": args.commit, "command": args.command,
           "results": [{"case": f"{case} ({shape})", "metric": case, "unit": unit, "ours": ours,
                        "floor": floors.get(case), "anchors": anchors}
                       for case, unit, ours, anchors in rows]}
    if args.out:
        json.dump(rec, open(args.out, "w"), indent=1)


if __name__ == "__main__":
    main()
