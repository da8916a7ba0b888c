# Shared by the trainer's shell tests (sourced).
fail() { echo "FAIL: $*" >&2; exit 1; }
# expect_fail "what the message must contain" cmd...
expect_fail() {
  local want=$1; shift
  local out rc=0
  out=$("$@" 2>&1) || rc=$?
  [ "$rc" -ne 0 ] || fail "expected a non-zero exit from: $* (output: $out)"
  grep -qF -- "$want" <<<"$out" || fail "expected '$want' in the output of: $*; got: $out"
  echo "ok: refused ($want)"
}
# make_corpus FILE SEED LINES "word list": lines of 10–12 random words.
make_corpus() {
  python3 - "$@" <<'PY'
import random, sys
path, seed, lines, words = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4].split()
random.seed(seed)
with open(path, "w") as f:
    for i in range(lines):
        f.write("Ge1:%d " % i + " ".join(random.choice(words) for _ in range(10 + i % 3)) + "\n")
PY
}
# prepare_tiny WORK SEED "word list": WORK/data (bytes) and WORK/k (mmrec-tiny's kernels).
prepare_tiny() {
  make_corpus "$1/corpus.txt" "$2" 3000 "$3"
  "$BIN/mmrec-data" --out "$1/data" --source "$1/corpus.txt" --val-every 10 >/dev/null
  "$BIN/mmrec-compile" "$(dirname "${BASH_SOURCE[0]}")/../../models/mmrec-tiny.mlir" -o "$1/k" \
    --target=cpu >/dev/null
}
# edit_checkpoint SRC DST TENSOR EXPR [LOSS_SCALE]: checkpoint SRC copied to
# DST with every value v of TENSOR replaced by EXPR (Python, of v and math)
# and the weights' checksum in trainer.json updated; LOSS_SCALE (a Python
# expression), when given, becomes trainer.json's extra.loss_scale.
edit_checkpoint() {
  cp -r "$1" "$2"
  python3 - "$2" "$3" "$4" "${5:-}" <<'PY'
import json, math, struct, sys, zlib
d, name, expr, scale = sys.argv[1:]
raw = bytearray(open(d + "/model.safetensors", "rb").read())
hl = struct.unpack("<Q", raw[:8])[0]
b, e = json.loads(raw[8:8 + hl])[name]["data_offsets"]
n = (e - b) // 4
vals = struct.unpack("<%df" % n, raw[8 + hl + b: 8 + hl + e])
raw[8 + hl + b: 8 + hl + e] = struct.pack("<%df" % n, *[eval(expr, {"math": math, "v": v}) for v in vals])
open(d + "/model.safetensors", "wb").write(raw)
st = json.load(open(d + "/trainer.json"))
st["files"]["model.safetensors"] = zlib.crc32(bytes(raw))
if scale:
    st["extra"]["loss_scale"] = float(eval(scale))
json.dump(st, open(d + "/trainer.json", "w"))
PY
}
