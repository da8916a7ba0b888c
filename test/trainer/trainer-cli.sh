#!/usr/bin/env bash
# mmrec-data and mmrec-train end to end on the CPU, small and quick:
#   * bad settings exit non-zero with a message naming the option/field;
#   * a run interrupted (--stop-after) and resumed (--resume) reproduces the
#     uninterrupted run's losses bit for bit;
#   * --eval-only on the final checkpoint prints the run's last validation loss;
#   * mmrec-generate samples from it, reproducibly with a seed;
#   * a corrupt checkpoint is refused; a checkpoint with NaN weights makes
#     every step non-finite: the steps are skipped, the run stops (exit 3)
#     and the checkpoint it started from is left intact.
# Usage: trainer-cli.sh BIN_DIR WORK_DIR
set -euo pipefail
BIN=$1
WORK=$2
rm -rf "$WORK"
mkdir -p "$WORK"
. "$(dirname "$0")/common.sh"
prepare_tiny "$WORK" 1 "in the beginning god created heaven and earth light darkness day night"
K="$WORK/k/mmrec-tiny.train.json"
COMMON=(--kernels "$K" --batch 2 --seq-len 32 --warmup 2 --eval-interval 3
        --eval-tokens 1024 --ckpt-interval 3 --seed 11)

# SentencePiece: a model trained here (vocabulary 300); mmrec-tiny (V = 256)
# refuses its shards, naming the vocabulary.
"$BIN/mmrec-data" --out "$WORK/spm" --tokenizer spm --vocab 300 --source "$WORK/corpus.txt" 2>/dev/null
[ -f "$WORK/spm/tokenizer.model" ] || fail "no SentencePiece model"
python3 - "$WORK/spm/train.bin" <<'PY'
import struct, sys
raw = open(sys.argv[1], "rb").read()
assert raw[:8] == b"MMRECTOK"
version, vocab, count, width = struct.unpack("<IIQI", raw[8:28])
assert (version, vocab, width) == (1, 300, 2), (version, vocab, width)
toks = struct.unpack("<%dH" % count, raw[32:])
assert max(toks) < 300 and count > 1000, (max(toks), count)
print("ok: SentencePiece shard:", count, "tokens, vocabulary", vocab)
PY
expect_fail "exceeds the model's 256" "$BIN/mmrec-train" --kernels "$WORK/k/mmrec-tiny.train.json" --data "$WORK/spm" --out "$WORK/bad"

# Bad settings.
expect_fail "--batch" "$BIN/mmrec-train" --data "$WORK/data" "${COMMON[@]}" --out "$WORK/bad" --batch 0
expect_fail "--loss-scale-log2" "$BIN/mmrec-train" --data "$WORK/data" "${COMMON[@]}" --out "$WORK/bad" --loss-scale-log2 127
expect_fail "--overflow-retries" "$BIN/mmrec-train" --data "$WORK/data" "${COMMON[@]}" --out "$WORK/bad" --overflow-retries 9
expect_fail "--seq-len" "$BIN/mmrec-train" --data "$WORK/data" "${COMMON[@]}" --out "$WORK/bad" --seq-len 100000
expect_fail "--warmup" "$BIN/mmrec-train" --data "$WORK/data" "${COMMON[@]}" --out "$WORK/bad" --steps 1
expect_fail "--lr" "$BIN/mmrec-train" --data "$WORK/data" "${COMMON[@]}" --out "$WORK/bad" --lr -1
expect_fail "val.bin" "$BIN/mmrec-train" --data "$WORK/none" "${COMMON[@]}" --out "$WORK/bad"
# A validation split (here --eval-tokens) shorter than --seq-len: one window
# of what there is, with a note, not an error after the training.
"$BIN/mmrec-train" --data "$WORK/data" --kernels "$K" --batch 2 --seq-len 32 --warmup 2 \
  --eval-interval 3 --ckpt-interval 3 --seed 11 --out "$WORK/shortval" --steps 3 \
  --eval-tokens 20 > "$WORK/shortval.log" 2>&1 || { cat "$WORK/shortval.log"; exit 1; }
grep -q "validation in one window of 20 tokens" "$WORK/shortval.log" || { cat "$WORK/shortval.log"; exit 1; }
grep -qE "^final val_loss [0-9]" "$WORK/shortval.log" || { cat "$WORK/shortval.log"; exit 1; }
expect_fail "does not exist" "$BIN/mmrec-train" --model "$WORK/none.mlir" --data "$WORK/data" --out "$WORK/bad"
expect_fail "--eval-only needs --checkpoint" "$BIN/mmrec-train" --data "$WORK/data" "${COMMON[@]}" --out "$WORK/bad" --eval-only
printf 'clip = -1\n' > "$WORK/bad.ini"
expect_fail "--clip" "$BIN/mmrec-train" --data "$WORK/data" "${COMMON[@]}" --out "$WORK/bad" --config "$WORK/bad.ini"
expect_fail "training manifest" "$BIN/mmrec-train" --kernels "$WORK/none.json" --data "$WORK/data"
# Fuzz findings (test/fuzz/regressions/config/): NaN passed CLI11's range
# checks; sizes whose products overflow are refused up front.
expect_fail "--lr: must be a finite number, got nan" "$BIN/mmrec-train" --kernels "$WORK/none.json" --data "$WORK/data" --lr nan
printf 'clip = nan\n' > "$WORK/nan.ini"
expect_fail "--clip: must be a finite number" "$BIN/mmrec-train" --kernels "$WORK/none.json" --data "$WORK/data" --config "$WORK/nan.ini"
expect_fail "must be at most 2^40 tokens per step" "$BIN/mmrec-train" --kernels "$WORK/none.json" --data "$WORK/data" --batch 4611686018427387904

expect_fail "--optimizer-states" "$BIN/mmrec-train" --kernels "$WORK/none.json" --data "$WORK/data" --optimizer-states fp8
expect_fail "--matmul" "$BIN/mmrec-train" --kernels "$WORK/none.json" --data "$WORK/data" --matmul fp8
expect_fail "--tf32" "$BIN/mmrec-train" --kernels "$WORK/none.json" --data "$WORK/data" --matmul bf16 --tf32
expect_fail "--level0: must be auto, fp32, bf16 or clusters" "$BIN/mmrec-train" --model "$WORK/none.mlir" --data "$WORK/data" --level0 fast
expect_fail "--level0: applies when mmrec-train compiles --model" "$BIN/mmrec-train" --kernels "$WORK/none.json" --data "$WORK/data" --level0 bf16
expect_fail "--collectives" "$BIN/mmrec-train" --kernels "$WORK/none.json" --data "$WORK/data" --collectives gloo
expect_fail "--dist-timeout" "$BIN/mmrec-train" --kernels "$WORK/none.json" --data "$WORK/data" --dist-timeout -1
expect_fail "--collectives: nccl needs the GPU" "$BIN/mmrec-train" --data "$WORK/data" "${COMMON[@]}" --out "$WORK/bad" --device cpu --collectives nccl

# --ckpt-interval 0: no checkpoint at all (a 7B run on a small disk).
"$BIN/mmrec-train" --data "$WORK/data" --kernels "$K" --batch 2 --seq-len 32 --warmup 2 --eval-tokens 1024 --steps 4 --ckpt-interval 0 --out "$WORK/nock" > "$WORK/nock.log"
[ ! -e "$WORK/nock/checkpoints" ] || fail "--ckpt-interval 0 wrote checkpoints: $(ls "$WORK/nock/checkpoints")"
# --grad-report 3: the three largest gradient norms by tensor, whose squares
# sum to at most the global norm's.
"$BIN/mmrec-train" --data "$WORK/data" --kernels "$K" --batch 2 --seq-len 32 --warmup 1 --eval-tokens 1024 --steps 2 --ckpt-interval 0 --grad-report 3 --out "$WORK/gr" > "$WORK/gr.log"
grep -q "^grads       2 | largest norms: " "$WORK/gr.log" || fail "no gradient report: $(cat "$WORK/gr.log")"
python3 - "$WORK/gr/metrics.jsonl" <<'PY'
import json, sys
for r in map(json.loads, open(sys.argv[1])):
    top = r["grad_norms_top"]
    assert len(top) == 3 and top[0]["norm"] >= top[1]["norm"] >= top[2]["norm"] > 0, top
    assert sum(t["norm"] ** 2 for t in top) <= r["grad_norm"] ** 2 * (1 + 1e-5), (top, r["grad_norm"])
    layers = r["grad_norms_layers"]
    assert len(layers) == 2 and all(v > 0 for v in layers), layers
    assert sum(v * v for v in layers) <= r["grad_norm"] ** 2 * (1 + 1e-5), (layers, r["grad_norm"])
print("ok: --grad-report lists the largest gradient norms by tensor and each layer's")
PY

# The uninterrupted run, and the same run interrupted after 4 steps and resumed.
"$BIN/mmrec-train" --data "$WORK/data" "${COMMON[@]}" --steps 8 --out "$WORK/a" > "$WORK/a.log"
"$BIN/mmrec-train" --data "$WORK/data" "${COMMON[@]}" --steps 8 --out "$WORK/b" --stop-after 4 > "$WORK/b1.log"
grep -q "stopping after 4 steps" "$WORK/b1.log" || fail "--stop-after did not stop"
# The same run with activation recomputation (keeping the level-0 states,
# and recomputing them too): the same losses, bit for bit.
"$BIN/mmrec-train" --data "$WORK/data" "${COMMON[@]}" --steps 8 --out "$WORK/c" --recompute > "$WORK/c.log"
grep -q "^recompute: each layer's input and level-0 states kept" "$WORK/c.log" ||
  fail "--recompute did not keep the level-0 states: $(cat "$WORK/c.log")"
"$BIN/mmrec-train" --data "$WORK/data" "${COMMON[@]}" --steps 8 --stop-after 3 --out "$WORK/c3" --recompute \
  --recompute-states > "$WORK/c3.log"
grep -q "^recompute: each layer's input kept (level-0 states recomputed)" "$WORK/c3.log" ||
  fail "--recompute-states did not recompute the states: $(cat "$WORK/c3.log")"
"$BIN/mmrec-train" --data "$WORK/data" "${COMMON[@]}" --steps 8 --out "$WORK/b" --resume > "$WORK/b2.log" 2> "$WORK/b2.err"
grep -q "resumed from .*step-00000004 at step 4" "$WORK/b2.err" || fail "did not resume at step 4"
python3 - "$WORK/a/metrics.jsonl" "$WORK/c/metrics.jsonl" "$WORK/c3/metrics.jsonl" <<'PY'
import json, sys
a = [json.loads(l) for l in open(sys.argv[1])]
c = [json.loads(l) for l in open(sys.argv[2])]
assert [x["loss"] for x in a] == [x["loss"] for x in c], "--recompute changed the losses"
c3 = [json.loads(l) for l in open(sys.argv[3])]
assert [x["loss"] for x in a[:3]] == [x["loss"] for x in c3], "--recompute-states changed the losses"
print("ok: --recompute (with and without --recompute-states) gives the same losses bit for bit")
PY
python3 - "$WORK/a/metrics.jsonl" "$WORK/b/metrics.jsonl" <<'PY'
import json, sys
a = [json.loads(l) for l in open(sys.argv[1])]
b = [json.loads(l) for l in open(sys.argv[2])]
assert [r["step"] for r in a] == list(range(1, 9)), a
assert [r["step"] for r in b] == list(range(1, 9)), b
for x, y in zip(a, b):
    for k in ("loss", "grad_norm", "lr", "val_loss"):
        if k in x or k in y:
            assert x.get(k) == y.get(k), (k, x, y)
assert a[-1]["loss"] < a[0]["loss"], "the loss did not fall"
print("ok: resumed run matches bit for bit:", [r["loss"] for r in b])
PY

# --optimizer-states bf16: AdamW's m and v in bf16; interrupted and resumed
# (the checkpoint holds them in fp32, exactly) it matches bit for bit, and it
# trains.
"$BIN/mmrec-train" --data "$WORK/data" "${COMMON[@]}" --steps 8 --out "$WORK/h" --optimizer-states bf16 > "$WORK/h.log"
"$BIN/mmrec-train" --data "$WORK/data" "${COMMON[@]}" --steps 8 --out "$WORK/i" --optimizer-states bf16 --stop-after 4 > "$WORK/i1.log"
"$BIN/mmrec-train" --data "$WORK/data" "${COMMON[@]}" --steps 8 --out "$WORK/i" --optimizer-states bf16 --resume > "$WORK/i2.log" 2>&1
python3 - "$WORK/a/metrics.jsonl" "$WORK/h/metrics.jsonl" "$WORK/i/metrics.jsonl" <<'PY'
import json, sys
a, h, i = ([json.loads(l) for l in open(p)] for p in sys.argv[1:4])
assert [r["step"] for r in i] == list(range(1, 9)), i
assert [r["loss"] for r in h] == [r["loss"] for r in i], "bf16 states: the resumed run differs"
assert h[-1]["loss"] < h[0]["loss"], "bf16 states: the loss did not fall"
worst = max(abs(x["loss"] - y["loss"]) / x["loss"] for x, y in zip(a, h))
assert worst < 0.05, worst
print(f"ok: bf16 optimizer states train (within {worst:.1e} of fp32 states) and resume bit for bit")
PY

# Loss and throughput curves to PNG.
"$(dirname "$0")/../../scripts/plot-metrics" "$WORK/a/metrics.jsonl" "$WORK/a/curves.png"
[ "$(head -c 4 "$WORK/a/curves.png" | od -An -c | tr -d ' ')" = "211PNG" ] || fail "plot-metrics wrote no PNG"
echo "ok: plot-metrics"

# --eval-only reproduces the final validation loss.
out=$("$BIN/mmrec-train" --data "$WORK/data" "${COMMON[@]}" --out "$WORK/a" --eval-only --checkpoint "$WORK/a/checkpoints/step-00000008")
python3 - "$WORK/a/metrics.jsonl" "$out" <<'PY'
import json, sys
last = [json.loads(l) for l in open(sys.argv[1])][-1]["val_loss"]
got = float(sys.argv[2].split("val_loss")[1])
assert abs(got - last) <= 1e-6 * abs(last), (got, last)
print("ok: --eval-only", got, "== final val_loss", last)
PY

# mmrec-generate samples from the checkpoint with the carried state.
gen=$("$BIN/mmrec-generate" --kernels "$K" --checkpoint "$WORK/a/checkpoints/step-00000008" \
      --data "$WORK/data" --prompt "in the" --max-tokens 40 --samples 2 --seed 3)
grep -q -- "--- sample 2 (step 8)" <<<"$gen" || fail "mmrec-generate printed no second sample: $gen"
grep -q "92 tokens in" <<<"$gen" || fail "mmrec-generate: wrong token count: $gen"
gen2=$("$BIN/mmrec-generate" --kernels "$K" --checkpoint "$WORK/a/checkpoints/step-00000008" \
      --data "$WORK/data" --prompt "in the" --max-tokens 40 --samples 2 --seed 3)
[ "$(grep -v tokens/s <<<"$gen")" = "$(grep -v tokens/s <<<"$gen2")" ] || fail "mmrec-generate is not reproducible with a seed"
expect_fail "cannot open the checkpoint state" "$BIN/mmrec-generate" --kernels "$K" --checkpoint "$WORK/none" --data "$WORK/data"
grep -q "fp32 products" <<<"$gen" || fail "mmrec-generate: the CPU's default is not fp32 products: $gen"
gen16=$("$BIN/mmrec-generate" --kernels "$K" --checkpoint "$WORK/a/checkpoints/step-00000008" \
      --data "$WORK/data" --prompt "in the" --max-tokens 40 --samples 2 --seed 3 --matmul bf16)
grep -q "92 tokens in .*bf16 products" <<<"$gen16" || fail "mmrec-generate --matmul bf16: $gen16"
expect_fail "matmul" "$BIN/mmrec-generate" --kernels "$K" --checkpoint "$WORK/a/checkpoints/step-00000008" \
  --data "$WORK/data" --matmul fp16
echo "ok: mmrec-generate"

# A corrupt checkpoint is refused.
cp -r "$WORK/a/checkpoints/step-00000008" "$WORK/corrupt"
printf 'garbage' | dd of="$WORK/corrupt/model.safetensors" bs=1 seek=200 conv=notrunc 2>/dev/null
expect_fail "checksum mismatch" "$BIN/mmrec-train" --data "$WORK/data" "${COMMON[@]}" --out "$WORK/a" --eval-only --checkpoint "$WORK/corrupt"

# NaN weights (with valid checksums): every step is skipped; five in a row stop the run.
edit_checkpoint "$WORK/a/checkpoints/step-00000008" "$WORK/nan" final_norm math.nan
before=$(md5sum "$WORK/nan/model.safetensors")
rc=0
"$BIN/mmrec-train" --data "$WORK/data" "${COMMON[@]}" --steps 20 --out "$WORK/n" --checkpoint "$WORK/nan" > "$WORK/n.log" 2>&1 || rc=$?
[ "$rc" -eq 3 ] || fail "NaN run: expected exit 3, got $rc: $(cat "$WORK/n.log")"
[ "$(grep -c SKIPPED "$WORK/n.log")" -eq 4 ] || fail "NaN run: expected 4 skipped steps before the stop"
grep -q "non-finite loss or gradient at 5 steps in a row" "$WORK/n.log" || fail "NaN run: no stop message"
[ "$before" = "$(md5sum "$WORK/nan/model.safetensors")" ] || fail "NaN run touched its checkpoint"
echo "ok: NaN steps skipped, run stopped with exit 3, checkpoint intact"

# A gradient that overflows fp32 while the loss is finite (final_norm × 1e4,
# the loss gradient at 2^120, the checkpoint's scale): the step runs again with the loss gradient
# scaled by 2^-24 (--overflow-retries), and since backward is linear in it,
# every later loss equals the unscaled run's bit for bit. With
# --overflow-retries 0 the same step is skipped.
# (Resumed runs take min(the checkpoint's scale, 2^--loss-scale-log2).)
edit_checkpoint "$WORK/a/checkpoints/step-00000008" "$WORK/big" final_norm "v * 1e4" "2.0 ** 120"
for run in plain:0:3 scaled:120:3 noretry:120:0; do
  IFS=: read -r name log2 retries <<< "$run"
  "$BIN/mmrec-train" --data "$WORK/data" "${COMMON[@]}" --steps 11 \
    --checkpoint "$WORK/big" --loss-scale-log2 "$log2" --overflow-retries "$retries" \
    --out "$WORK/ov-$name" > "$WORK/ov-$name.log" 2>&1 || fail "overflow run $name: $(cat "$WORK/ov-$name.log")"
done
grep -q "step 9: the gradient overflowed fp32" "$WORK/ov-scaled.log" || fail "no overflow retry: $(cat "$WORK/ov-scaled.log")"
! grep -q "overflowed\|SKIPPED" "$WORK/ov-plain.log" || fail "the plain run overflowed: $(cat "$WORK/ov-plain.log")"
grep -q "step      9 .*SKIPPED" "$WORK/ov-noretry.log" || fail "--overflow-retries 0 did not skip: $(cat "$WORK/ov-noretry.log")"
python3 - "$WORK/ov-plain/metrics.jsonl" "$WORK/ov-scaled/metrics.jsonl" <<'PY'
import json, sys
a, b = ([json.loads(l) for l in open(p)] for p in sys.argv[1:])
assert [r["step"] for r in a] == [9, 10, 11] == [r["step"] for r in b], (a, b)
for x, y in zip(a, b):
    assert x["loss"] == y["loss"] and x["grad_norm"] == y["grad_norm"] and not y["skipped"], (x, y)
assert b[0]["overflow_retries"] == 1 and b[0]["loss_scale"] == 2.0 ** 96, b[0]
print("ok: an overflowing step ran again at 2^96; losses and norms equal the unscaled run's")
PY
# A checkpoint's loss scale that no run writes is refused, naming the field.
edit_checkpoint "$WORK/big" "$WORK/badscale" final_norm v 3.0
expect_fail "extra.loss_scale must be a power of two" "$BIN/mmrec-train" --data "$WORK/data" "${COMMON[@]}" --steps 11 --checkpoint "$WORK/badscale" --out "$WORK/bad"

# --profile times training steps only: not the run's first step (warm-up)
# and no evaluation. Each training step calls embed_fwd and embed_bwd once
# (an evaluation only embed_fwd), and 3 steps time twice the optimizer
# calls of 2 steps (one timed step).
calls() { awk -v k="$1" '$1 == k {print $3}' "$2"; }
for n in 2 3; do
  "$BIN/mmrec-train" --data "$WORK/data" --kernels "$K" --batch 2 --seq-len 32 --warmup 1 \
    --eval-interval 1 --eval-tokens 256 --ckpt-interval 0 --seed 11 --steps $n --profile \
    --out "$WORK/p$n" > "$WORK/p$n.log" 2>&1 || fail "--profile run: $(cat "$WORK/p$n.log")"
  grep -q "time per kernel over steps 2..$n" "$WORK/p$n.log" || fail "--profile: no report of steps 2..$n"
  [ "$(calls embed_fwd "$WORK/p$n.log")" = "$(calls embed_bwd "$WORK/p$n.log")" ] ||
    fail "--profile timed an evaluation: $(cat "$WORK/p$n.log")"
done
a2=$(calls adamw "$WORK/p2.log"); a3=$(calls adamw "$WORK/p3.log")
[ -n "$a2" ] && [ "$a3" -eq $((2 * a2)) ] || fail "--profile timed the first step (adamw calls $a2, $a3)"
echo "ok: --profile times steps 2..N and no evaluation"
echo "trainer-cli: all checks passed"
