#!/usr/bin/env bash
# Data parallel on CPUs through MPI (Open MPI, mpirun): N ranks with
# micro-batch b give the losses and weights of one rank with batch N·b (ZeRO:
# gradients reduce-scattered, AdamW state sharded, weights all-gathered);
# a run checkpointed on 2 ranks (each rank writing its optimizer shard)
# resumes on 4, one checkpointed on 4 resumes on 1, and both continue the
# same run; a rank killed with SIGKILL ends the job (non-zero, well within a
# timeout) and leaves the last checkpoint loadable; a rank that hangs
# (SIGSTOP) makes its peers end the job after --dist-timeout with a message.
# Usage: dist-cpu.sh BIN_DIR WORK_DIR
set -euo pipefail
BIN=$1
WORK=$2
rm -rf "$WORK"
mkdir -p "$WORK"
. "$(dirname "$0")/common.sh"
command -v mpirun >/dev/null || fail "mpirun not found (scripts/setup installs openmpi-bin)"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OPENBLAS_NUM_THREADS=1
MPI=(mpirun --oversubscribe --bind-to none)
prepare_tiny "$WORK" 3 "the lord god said unto him and they were"
COMMON=(--kernels "$WORK/k/mmrec-tiny.train.json" --data "$WORK/data" --seq-len 32 --steps 6
        --warmup 2 --eval-interval 3 --eval-tokens 2048 --ckpt-interval 3 --seed 5 --grad-accum 2)

"$BIN/mmrec-train" "${COMMON[@]}" --batch 4 --out "$WORK/r1" > "$WORK/r1.log"
"${MPI[@]}" -np 2 "$BIN/mmrec-train" "${COMMON[@]}" --batch 2 --out "$WORK/r2" > "$WORK/r2.log"
"${MPI[@]}" -np 4 "$BIN/mmrec-train" "${COMMON[@]}" --batch 1 --out "$WORK/r4" > "$WORK/r4.log"
grep -q "2 ranks (mpi, CPU, fp32 products)" "$WORK/r2.log" || fail "the 2-rank run did not run on 2 MPI ranks"
# 2 ranks, interrupted after 3 steps, resumed on 4.
"${MPI[@]}" -np 2 "$BIN/mmrec-train" "${COMMON[@]}" --batch 2 --out "$WORK/rs" --stop-after 3 > "$WORK/rs1.log"
"${MPI[@]}" -np 4 "$BIN/mmrec-train" "${COMMON[@]}" --batch 1 --out "$WORK/rs" --resume > "$WORK/rs2.log" 2>&1
grep -q "at step 3 on 4 ranks" "$WORK/rs2.log" || fail "did not resume at step 3 on 4 ranks: $(cat "$WORK/rs2.log")"
for r in 0 1; do
  [ -f "$WORK/rs/checkpoints/step-00000003/optimizer-0000$r-of-00002.safetensors" ] ||
    fail "the 2-rank checkpoint lacks the optimizer shard of rank $r"
done
# The 4-rank run's checkpoint of step 3, resumed on one rank.
"$BIN/mmrec-train" "${COMMON[@]}" --batch 4 --out "$WORK/r41" \
  --checkpoint "$WORK/r4/checkpoints/step-00000003" > "$WORK/r41.log" 2>&1
grep -q "at step 3 on 1 rank" "$WORK/r41.log" || fail "did not resume at step 3 on 1 rank: $(cat "$WORK/r41.log")"

python3 - "$WORK" <<'PY'
import json, struct, sys
w = sys.argv[1]
def metrics(run):
    return [json.loads(l) for l in open(f"{w}/{run}/metrics.jsonl")]
def weights(run):
    raw = open(f"{w}/{run}/checkpoints/step-00000006/model.safetensors", "rb").read()
    (hl,) = struct.unpack("<Q", raw[:8])
    hdr = json.loads(raw[8:8 + hl])
    out = {}
    for k, t in hdr.items():
        if k != "__metadata__":
            b, e = t["data_offsets"]
            out[k] = struct.unpack("<%df" % ((e - b) // 4), raw[8 + hl + b:8 + hl + e])
    return out
ref, refw = metrics("r1"), weights("r1")
for run in ("r2", "r4", "rs"):
    m = metrics(run)
    assert [r["step"] for r in m] == list(range(1, 7)), (run, [r["step"] for r in m])
    for a, b in zip(ref, m):
        for k in ("loss", "grad_norm", "val_loss"):
            if k in a:
                assert abs(a[k] - b[k]) <= 2e-5 * abs(a[k]), (run, a["step"], k, a[k], b[k])
    ww = weights(run)
    worst = 0.0
    for k, x in refw.items():
        scale = max(max(abs(v) for v in x), 1e-6)
        worst = max(worst, max(abs(p - q) for p, q in zip(x, ww[k])) / scale)
    # AdamW divides by √v: rounding of near-zero gradients is amplified, so
    # weights agree less tightly than losses.
    assert worst <= 1e-3, (run, worst)
    print(f"ok: {run}: losses within 2e-5 and weights within {worst:.1e} of one rank with the global batch")
for run in ("r2", "r4"):
    for r in metrics(run):
        c = r["comm"]  # the bucketed reductions of the step, measured on CPU ranks
        assert c["reductions"] >= 4 and 0 <= c["done_at_backward_end"] <= c["reductions"], (run, c)
print("ok: every multi-rank step reports its reductions (e.g. %s)" % metrics("r4")[-1]["comm"])
m = metrics("r41")
assert [r["step"] for r in m] == [4, 5, 6], [r["step"] for r in m]
for a, b in zip(ref[3:], m):
    assert abs(a["loss"] - b["loss"]) <= 2e-5 * abs(a["loss"]), (a["step"], a["loss"], b["loss"])
print("ok: r41: the 4-rank checkpoint of step 3 continues on 1 rank with the same losses")
PY

# Starts an endless 2-rank run into $WORK/$1 (more flags after it) in the
# background, waits for its first checkpoint, sends signal $SIG to one of
# its ranks, and checks that the whole job ends (non-zero, within 60 s) and
# that its last checkpoint loads. Sets $log.
disturb() {
  local name=$1 sig=$2
  shift 2
  log="$WORK/$name.log"
  "${MPI[@]}" -np 2 "$BIN/mmrec-train" --kernels "$WORK/k/mmrec-tiny.train.json" --data "$WORK/data" \
    --seq-len 32 --batch 2 --steps 100000 --warmup 1 --ckpt-interval 2 --eval-interval 100000 \
    --out "$WORK/$name" "$@" > "$log" 2>&1 &
  local job=$! i victim start rc=0
  for i in $(seq 100); do
    [ -n "$(ls -d "$WORK/$name"/checkpoints/step-???????? 2>/dev/null)" ] && break
    sleep 0.2
  done
  victim=$(pgrep -f -- "--out $WORK/$name" | grep -v "^$job\$" | while read -r p; do
    [ "$(ps -o comm= -p "$p")" = "mmrec-train" ] && echo "$p"; done | tail -1)
  [ -n "$victim" ] || fail "$name: no rank process to signal: $(cat "$log")"
  kill -"$sig" "$victim"
  start=$(date +%s)
  timeout 60 tail --pid="$job" -f /dev/null ||
    { kill -9 "$victim"; fail "$name: the job did not end within 60 s after SIG$sig to a rank"; }
  wait "$job" || rc=$?
  kill -9 "$victim" 2>/dev/null || true
  [ "$rc" -ne 0 ] || fail "$name: the job exited 0 after SIG$sig to a rank"
  echo "ok: $name: SIG$sig to a rank ended the job (exit $rc) in $(( $(date +%s) - start )) s"
  local ck
  ck=$(ls -d "$WORK/$name"/checkpoints/step-???????? | tail -1)
  "$BIN/mmrec-train" --kernels "$WORK/k/mmrec-tiny.train.json" --data "$WORK/data" --seq-len 32 \
    --batch 2 --eval-tokens 256 --eval-only --checkpoint "$ck" >/dev/null || fail "$ck does not load"
  echo "ok: $name: the last checkpoint ($ck) loads"
}

# A rank killed mid-run ends the job, and the last checkpoint stays loadable.
disturb kill KILL
# A rank that hangs (stopped with SIGSTOP): its peer waits in a collective,
# notices no progress for --dist-timeout seconds and ends the job.
disturb hang STOP --dist-timeout 5
grep -q "no progress for .* (--dist-timeout 5): a peer rank died or hangs during" "$log" ||
  fail "no watchdog message: $(cat "$log")"
echo "ok: the watchdog: $(grep -o 'error (rank [0-9]*): no progress[^;]*' "$log" | head -1)"
echo "dist-cpu: all checks passed"
