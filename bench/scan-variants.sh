#!/usr/bin/env bash
# Tuning sessions: runs every scan-bench-<variant> in ${SCAN_DIR:-.carry/scan}
# (built with -DMMREC_BENCH_VARIANTS=ON, or by hand with other mmrec-compile
# --scan-* options) on the device machine and prints, per variant and case,
# forward and forward+backward as % of the HBM floor (copy bandwidth
# measured by each binary in the same process). JSON lines go to
# $OUT/scan-variants.jsonl.
set -uo pipefail
OUT=${OUT:-/tmp/mmrec-out}
D=${SCAN_DIR:-.carry/scan}
mkdir -p "$OUT"
[ -f "$D.tar.xz" ] && [ ! -d "$D" ] && tar -xJf "$D.tar.xz" -C "$(dirname "$D")"
: > "$OUT/scan-variants.jsonl"
for b in "$D"/scan-bench-*; do
  timeout 120 "$b" "${SCAN_REPS:-30}" >> "$OUT/scan-variants.jsonl" 2> >(tail -3 >&2) ||
    echo "{\"variant\": \"$(basename "$b")\", \"failed\": true}" >> "$OUT/scan-variants.jsonl"
done
python3 - "$OUT/scan-variants.jsonl" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
copy = None
print(f"{'variant':28s} {'case':22s} {'fwd ms':>8s} {'%floor':>7s} {'f+b ms':>8s} {'%floor':>7s}")
for r in rows:
    if r.get("metric") == "copy_TBps":
        copy = r["value"]
    elif r.get("failed"):
        print(f"{r['variant']:28s} FAILED")
    elif "case" in r and copy:
        ff = r["fwd_bytes"] / (copy * 1e12) * 1e3
        fb = r["fwdbwd_bytes"] / (copy * 1e12) * 1e3
        print(f"{r['variant']:28s} {r['case']:22s} {r['fwd_ms']:8.4f} {100*ff/r['fwd_ms']:6.1f}% "
              f"{r['fwdbwd_ms']:8.4f} {100*fb/r['fwdbwd_ms']:6.1f}%  (copy {copy:.3f} TB/s)")
PY
