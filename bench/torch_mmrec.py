#!/usr/bin/env python3
"""MMREC_SPEC's model in PyTorch, written from the spec alone (no mmrec code),
used on the GPU machine (where torch is installed) to cross-check mmrec-train:

    python3 bench/torch_mmrec.py --manifest K/mmrec-tiny.train.json \\
        --checkpoint RUN/checkpoints/step-00000300 --val DATA/val.bin \\
        --seq-len 128 --batch 16 --eval-tokens 32768 [--ours 2.0082] [--dtype float64]

It reads our checkpoint's model.safetensors (parsed by hand: an 8-byte
header length, a JSON header, raw little-endian F32 data) and the validation
shard (32-byte MMRECTOK header, uint16 tokens), computes the validation loss
exactly as `mmrec-train --eval-only` does (consecutive windows of T tokens,
B a batch, positions 0..T-2 predicting 1..T-1, the mean over windows), and,
with --ours, checks that the two agree to a relative 1e-4. Prints one JSON
line.
"""
import argparse
import json
import math
import struct
import sys

import torch
import torch.nn.functional as Fn


def load_safetensors(path, device, dtype):
    raw = open(path, "rb").read()
    (hl,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + hl])
    data = memoryview(raw)[8 + hl:]
    out = {}
    for name, t in header.items():
        if name == "__metadata__":
            continue
        assert t["dtype"] == "F32", (name, t["dtype"])
        b, e = t["data_offsets"]
        x = torch.frombuffer(bytearray(data[b:e]), dtype=torch.float32).reshape(t["shape"])
        out[name] = x.to(device=device, dtype=dtype)
    return out


def load_shard(path):
    raw = open(path, "rb").read()
    assert raw[:8] == b"MMRECTOK", "not a token shard"
    version, vocab, count, width = struct.unpack("<IIQI", raw[8:28])
    assert version == 1 and width == 2
    toks = torch.frombuffer(bytearray(raw[32:32 + 2 * count]), dtype=torch.int16)
    return toks.to(torch.int64) & 0xFFFF


def rmsnorm(x, w, eps):
    y = x * torch.rsqrt((x * x).mean(-1, keepdim=True) + eps)
    return y * w if w is not None else y


def layer_head(cfg, p, x):
    """RMSNorm, the projections and the decay gate γ of a layer."""
    lo, hi, eps = cfg["log_clamp_min"], cfg["log_clamp_max"], cfg["norm_eps"]
    u = rmsnorm(x, p["w_in"], eps)
    q, k, v, z = u @ p["W_q"], u @ p["W_k"], u @ p["W_v"], u @ p["W_z"]
    pre = (u @ p["A_gamma"]) @ p["B_gamma"] + p["lambda"]
    gamma = torch.exp(torch.clamp(Fn.logsigmoid(pre), lo, hi))
    return q, k, v, z, gamma


def level0_step(h, Wg, b_g, z_t, gamma_t):
    """One step of the level-0 recurrence."""
    return z_t * torch.sigmoid(h @ Wg + b_g) + gamma_t * h


def chunked(t, C):
    """(B, T, ...) -> (B, nC, C, ...), zero-padded to whole chunks."""
    B, T = t.shape[:2]
    nC = (T + C - 1) // C
    pad = [0, 0] * (t.dim() - 2) + [0, nC * C - T]
    return Fn.pad(t, pad).reshape(B, nC, C, *t.shape[2:])


def memory_hierarchy(cfg, p, q, k, v, hs):
    """Levels 1 and 2 and the combination o (MMREC_SPEC section 2): q, k, v
    and the level-0 states hs are (B, T, D); S, mu and rho come from p.
    Chunk-wise products throughout (no (B, T, M, d_m) gather)."""
    B, T, D = q.shape
    G, M, C = cfg["num_memories"], cfg["memory_size"], cfg["chunk_size"]
    d = D // G
    lo, eps = cfg["log_clamp_min"], cfg["norm_eps"]
    nC = (T + C - 1) // C
    chunk_of = torch.arange(T, device=q.device) // C
    counts = torch.bincount(chunk_of, minlength=nC).to(q.dtype)  # tokens per chunk
    qg, kg, vg = (t_.reshape(B, T, G, d) for t_ in (q, k, v))
    # Level 1: causal read of the completed chunks' means.
    K1 = chunked(kg, C).sum(2) / counts[None, :, None, None]  # (B, nC, G, d)
    V1 = chunked(vg, C).sum(2) / counts[None, :, None, None]
    s1 = torch.einsum("btgd,bcgd->btgc", qg, K1) / math.sqrt(d)
    visible = torch.arange(nC, device=q.device)[None, :] < chunk_of[:, None]  # (T, nC)
    s1 = s1.masked_fill(~visible[None, :, None, :], float("-inf"))
    p1 = torch.softmax(s1, -1).nan_to_num(0.0)  # rows of chunk 0 see nothing: 0
    y1 = torch.einsum("btgc,bcgd->btgd", p1, V1)
    # Level 2: MDI write, the memory recurrence over chunks, the read.
    S = p["S"]  # (G, M, d)
    w = torch.softmax(torch.einsum("btgd,gmd->btgm", kg, S) / math.sqrt(d), -1)
    wc = chunked(w, C)  # (B, nC, C, G, M); padded rows are zero
    n = wc.sum(2)  # (B, nC, G, M)
    P = torch.einsum("bcsgm,bcsgd->bcgmd", wc, chunked(vg, C))
    U = P / torch.clamp(n, min=1e-6)[..., None]
    lb = torch.clamp(n * Fn.logsigmoid(p["mu"]), lo, 0.0)
    mem = torch.zeros(B, G, M, d, dtype=q.dtype, device=q.device)
    prev = []
    for c in range(nC):
        prev.append(mem)
        mem = torch.exp(lb[:, c])[..., None] * mem - torch.expm1(lb[:, c])[..., None] * U[:, c]
    prev = torch.stack(prev, 1)  # (B, nC, G, M, d): Mem_{c-1}
    a = torch.softmax(torch.einsum("btgd,gmd->btgm", qg, S) / math.sqrt(d), -1)
    y2 = torch.einsum("bcsgm,bcgmd->bcsgd", chunked(a, C), prev).reshape(B, nC * C, G, d)[:, :T]
    # Combination.
    hn = rmsnorm(hs.reshape(B, T, G, d), None, eps)
    om = torch.softmax(p["rho"], -1)  # (G, 3)
    return (om[:, 0, None] * hn + om[:, 1, None] * y1 + om[:, 2, None] * y2).reshape(B, T, D)


def layer_tail(cfg, p, x, q, k, v, hs):
    """The memory hierarchy, the output projection and the FFN."""
    o = memory_hierarchy(cfg, p, q, k, v, hs)
    x = x + o @ p["W_o"]
    u2 = rmsnorm(x, p["w_ffn"], cfg["norm_eps"])
    return x + (Fn.silu(u2 @ p["W_1"]) * (u2 @ p["W_3"])) @ p["W_2"]


# The pieces of a layer, replaced by their torch.compile'd versions by
# compile_pieces() (torch_train_speed.py --compile). The level-0 loop stays a
# Python loop of T steps: compiling the whole layer would unroll it.
PIECES = {"head": layer_head, "step": level0_step, "tail": layer_tail}


def compile_pieces(**kwargs):
    for name, fn in list(PIECES.items()):
        PIECES[name] = torch.compile(fn, **kwargs)


def layer(cfg, p, x):
    B, T, D = x.shape
    q, k, v, z, gamma = PIECES["head"](cfg, p, x)
    # Level 0, sequential.
    Wg = p["W_g"]
    if Wg.dim() == 3:
        Wg = torch.block_diag(*Wg)
    h = torch.zeros(B, D, dtype=x.dtype, device=x.device)
    hs = []
    step = PIECES["step"]
    for t in range(T):
        h = step(h, Wg, p["b_g"], z[:, t], gamma[:, t])
        hs.append(h)
    hs = torch.stack(hs, 1)
    return PIECES["tail"](cfg, p, x, q, k, v, hs)


def model_loss(cfg, params, tokens):
    x = params["embed"][tokens]
    for l in range(cfg["num_layers"]):
        pre = f"layers.{l}."
        x = layer(cfg, {k[len(pre):]: v for k, v in params.items() if k.startswith(pre)}, x)
    logits = rmsnorm(x, params["final_norm"], cfg["norm_eps"]) @ params["embed"].T
    V = logits.shape[-1]
    return Fn.cross_entropy(logits[:, :-1].reshape(-1, V), tokens[:, 1:].reshape(-1))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--manifest", required=True)
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--val", required=True)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--eval-tokens", type=int, default=1 << 16)
    ap.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    ap.add_argument("--ours", type=float, help="mmrec-train --eval-only's loss, to compare")
    args = ap.parse_args()
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = getattr(torch, args.dtype)
    if dtype == torch.float32:
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    cfg = json.load(open(args.manifest))["config"]
    params = load_safetensors(args.checkpoint + "/model.safetensors", dev, dtype)
    toks = load_shard(args.val)
    T, B = args.seq_len, args.batch
    windows = min(len(toks), args.eval_tokens) // T
    total = 0.0
    with torch.no_grad():
        for w0 in range(0, windows, B):
            b = min(B, windows - w0)
            batch = toks[w0 * T:(w0 + b) * T].reshape(b, T).to(dev)
            total += model_loss(cfg, params, batch).item() * b
    loss = total / windows
    rec = {"device": torch.cuda.get_device_name() if dev == "cuda" else "cpu", "dtype": args.dtype,
           "windows": windows, "torch_val_loss": loss}
    ok = True
    if args.ours is not None:
        rec["mmrec_val_loss"] = args.ours
        rec["relative_difference"] = abs(loss - args.ours) / abs(loss)
        ok = rec["relative_difference"] <= 1e-4
        rec["ok"] = ok
    print(json.dumps(rec))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
