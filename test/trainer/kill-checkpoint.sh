#!/usr/bin/env bash
# Training never loses a checkpoint: mmrec-train checkpoints every step
# (--keep 2) and is killed with SIGKILL at random moments, ROUNDS times;
# after every kill the newest complete checkpoint loads (--eval-only, which
# verifies the checksums) and --resume continues from it.
# Usage: kill-checkpoint.sh BIN_DIR WORK_DIR [ROUNDS]
set -euo pipefail
BIN=$1
WORK=$2
ROUNDS=${3:-12}
rm -rf "$WORK"
mkdir -p "$WORK"
. "$(dirname "$0")/common.sh"
prepare_tiny "$WORK" 2 "abc de fgh ij klm"
ARGS=(--kernels "$WORK/k/mmrec-tiny.train.json" --data "$WORK/data" --out "$WORK/run" --batch 2
      --seq-len 32 --steps 100000 --warmup 1 --eval-interval 100000 --eval-tokens 256
      --ckpt-interval 1 --keep 2 --log-interval 1000)
"$BIN/mmrec-train" "${ARGS[@]}" --stop-after 2 >/dev/null
last=0
for i in $(seq "$ROUNDS"); do
  "$BIN/mmrec-train" "${ARGS[@]}" --resume >/dev/null 2>&1 &
  pid=$!
  # 0.3–1.5 s: somewhere in the compile-free start-up, a step or a checkpoint write.
  sleep "$(python3 -c "import random; print(round(random.uniform(0.3, 1.5), 2))")"
  kill -9 "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  ck=$(ls -d "$WORK"/run/checkpoints/step-???????? 2>/dev/null | tail -1)
  [ -n "$ck" ] || fail "round $i: no complete checkpoint left"
  out=$("$BIN/mmrec-train" --kernels "$WORK/k/mmrec-tiny.train.json" --data "$WORK/data" \
        --seq-len 32 --batch 2 --eval-tokens 256 --eval-only --checkpoint "$ck" 2>&1) \
    || fail "round $i: the newest checkpoint $ck does not load: $out"
  step=$((10#${ck##*step-}))
  [ "$step" -ge "$last" ] || fail "round $i: the newest checkpoint went back from $last to $step"
  last=$step
  echo "round $i: killed; newest checkpoint step $step loads"
done
[ "$last" -gt 2 ] || fail "no progress across the rounds (step $last)"
echo "kill-checkpoint: $ROUNDS kills, every newest checkpoint loaded"
