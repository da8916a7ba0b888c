#!/usr/bin/env python3
"""Anchor benchmark for the gated recurrence the project compiles

    h_t = z_t * sigmoid(h_{t-1} . W_g + b_g) + gamma_t * h_{t-1}

against what a user could run today on the GPU machine:

  * FlashRNN (NX-AI/flashrnn, fetched into .carry/, never committed): its fused
    Elman kernel ("cuda_fused": one cooperative kernel for all T steps, R kept
    in registers/SMEM) for the per-head case, and its alternating Elman kernel
    ("cuda": one cuBLAS GEMM + one pointwise kernel per step) for the dense
    case. Elman is h_t = tanh(R h_{t-1} + Wx_t + b): same recurrent product and
    one pointwise nonlinearity per step, so it is the closest FlashRNN cell.
  * The recurrence itself as a PyTorch loop: eager, and captured in a CUDA graph.

Usage (on the GPU machine, from the repository root):

    python3 bench/gated_anchors.py --flashrnn .carry/flashrnn --out $OUT/gated_anchors.json

All timings are medians of CUDA-event timings after warm-up, reported in
microseconds per time step, with the achieved FLOP/s of the recurrent product
(2*B*D*dh per step forward, D = H*dh; counted 3x for forward+backward).

FlashRNN is JIT-compiled with torch.utils.cpp_extension (ninja + nvcc). The two
FlashRNN extensions are built in two child processes of this script started at
the same time (`--prebuild fused|alternating`), each with a hard deadline; the
build cache goes to --ext-dir (default /tmp/mmrec_torch_ext), so a second run on
a warm machine does not recompile. On CUDA 13 FlashRNN's gpu_info.cc reads
cudaDeviceProp fields that no longer exist; this script zeroes those reads
(idempotent) before building. `--patch-only` only applies that patch (no torch
needed).

Every measurement is guarded: a failure is recorded as an "error: ..." string in
the JSON and the rest goes on. The JSON ({"device": ..., "results": {...}}) is
rewritten after every measurement, so a run cut short still leaves its results.
"""
import argparse
import functools
import glob
import importlib
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time
import traceback
import types

# ---------------------------------------------------------------- constants
PER_HEAD = dict(B=8, H=32, dh=128)      # D = 4096, block-diagonal W
DENSE = dict(B=8, H=1, dh=4096)         # one dense 4096x4096 W
# cudaDeviceProp members that CUDA 13 removed (checked against CUDA 13.0's
# driver_types.h) and that FlashRNN's gpu_info.cc reads. None of them is used
# by FlashRNN's kernel-parameter solver (it uses maxThreadsPerBlock,
# regsPerMultiprocessor, multiProcessorCount, sharedMemPerBlockOptin).
CUDA13_REMOVED_PROP_FIELDS = (
    "clockRate", "memoryClockRate", "computeMode", "cooperativeMultiDeviceLaunch",
    "deviceOverlap", "kernelExecTimeoutEnabled", "maxTexture1DLinear",
    "singleToDoublePrecisionPerfRatio",
)
T0 = time.time()


def log(msg):
    print(f"[{time.time() - T0:7.1f}s] {msg}", flush=True)


def err_str(e):
    s = f"error: {type(e).__name__}: {e}"
    s = " ".join(s.split())
    return s[:600]


# ---------------------------------------------------------------- FlashRNN source handling
def flashrnn_root(path):
    """The directory that holds the top-level `flashrnn` package
    (the repository root of NX-AI/flashrnn)."""
    p = os.path.abspath(path)
    if os.path.isfile(os.path.join(p, "flashrnn", "flashrnn", "flashrnn.py")):
        return p
    if os.path.isfile(os.path.join(p, "flashrnn", "flashrnn.py")):
        return os.path.dirname(p)
    raise FileNotFoundError(f"no FlashRNN checkout at {path} "
                            "(expected flashrnn/flashrnn/flashrnn.py below it)")


def patch_gpu_info(root):
    """Zero the reads of removed cudaDeviceProp fields in gpu_info.cc.
    Idempotent: the replacement text no longer matches `prop.<field>`."""
    path = os.path.join(root, "flashrnn", "flashrnn", "gpu_info", "gpu_info.cc")
    src = open(path).read()
    pat = re.compile(r"\bprop\.(" + "|".join(CUDA13_REMOVED_PROP_FIELDS) + r")\b")
    new, n = pat.subn(lambda m: f"0 /* mmrec: {m.group(1)} removed in CUDA 13 */", src)
    if n == 0:
        return f"gpu_info.cc already patched ({path})"
    with open(path, "w") as f:
        f.write(new)
    return f"gpu_info.cc: zeroed {n} reads of removed cudaDeviceProp fields ({path})"


def prepare_source(path):
    """Locate, and patch in place (or in a /tmp copy when read-only)."""
    root = flashrnn_root(path)
    try:
        msg = patch_gpu_info(root)
    except OSError:
        copy = "/tmp/mmrec_flashrnn_src"
        shutil.rmtree(copy, ignore_errors=True)
        shutil.copytree(root, copy)
        root = copy
        msg = patch_gpu_info(root) + " (patched a /tmp copy: source was read-only)"
    return root, msg


# ---------------------------------------------------------------- environment
def setup_env(args, jobs=None):
    """Environment for torch.utils.cpp_extension; must run before importing torch."""
    ext = os.path.abspath(args.ext_dir)
    os.makedirs(ext, exist_ok=True)
    os.environ["TORCH_EXTENSIONS_DIR"] = ext
    # FlashRNN's constraint solver caches its solutions here (default ~/.cache)
    os.environ.setdefault("CONSTRINT_CACHE_DIR", os.path.join(ext, "constrint_cache"))
    cuda_home = os.environ.get("CUDA_HOME") or ("/usr/local/cuda" if os.path.isdir("/usr/local/cuda") else None)
    if cuda_home:
        os.environ["CUDA_HOME"] = cuda_home
        binp = os.path.join(cuda_home, "bin")
        if binp not in os.environ.get("PATH", "").split(":"):
            os.environ["PATH"] = binp + ":" + os.environ.get("PATH", "")
    if jobs:
        os.environ["MAX_JOBS"] = str(jobs)
    else:
        os.environ.setdefault("MAX_JOBS", str(os.cpu_count() or 8))


def ensure_cuda_libs():
    """FlashRNN links with -lcublas and includes cublas_v2.h. If the toolkit at
    CUDA_HOME lacks them, point the build at the pip nvidia-cublas copy."""
    notes = []
    cuda_home = os.environ.get("CUDA_HOME", "/usr/local/cuda")
    if not glob.glob(os.path.join(cuda_home, "lib64", "libcublas.so")):
        cands = []
        for sp in sys.path:
            cands += glob.glob(os.path.join(sp, "nvidia", "cublas", "lib", "libcublas.so*"))
            cands += glob.glob(os.path.join(sp, "nvidia", "cu*", "lib", "libcublas.so*"))
        if cands:
            d = "/tmp/mmrec_cublas_link"
            os.makedirs(d, exist_ok=True)
            link = os.path.join(d, "libcublas.so")
            if not os.path.exists(link):
                os.symlink(sorted(cands)[-1], link)
            os.environ["LIBRARY_PATH"] = d + ":" + os.environ.get("LIBRARY_PATH", "")
            notes.append(f"libcublas.so not in {cuda_home}/lib64; linking {sorted(cands)[-1]}")
        else:
            notes.append("libcublas.so found nowhere (build will likely fail to link)")
    if not os.path.exists(os.path.join(cuda_home, "include", "cublas_v2.h")):
        incs = []
        for sp in sys.path:
            incs += glob.glob(os.path.join(sp, "nvidia", "cublas", "include"))
            incs += glob.glob(os.path.join(sp, "nvidia", "cu*", "include"))
        incs = [i for i in incs if os.path.exists(os.path.join(i, "cublas_v2.h"))]
        if incs:
            old = os.environ.get("FLASHRNN_EXTRA_INCLUDE_PATHS")
            os.environ["FLASHRNN_EXTRA_INCLUDE_PATHS"] = ":".join(([old] if old else []) + incs[:1])
            notes.append(f"cublas_v2.h not in {cuda_home}/include; using {incs[0]}")
    return notes


def ensure_packaging():
    """flashrnn's cuda_init imports `packaging`, which torch does not depend on."""
    try:
        import packaging.version  # noqa: F401
        return "packaging"
    except ImportError:
        pass
    for mod in ("torch._vendor.packaging", "setuptools._vendor.packaging",
                "pkg_resources._vendor.packaging"):
        try:
            pk = importlib.import_module(mod)
            ver = importlib.import_module(mod + ".version")
            sys.modules["packaging"] = pk
            sys.modules["packaging.version"] = ver
            return mod
        except Exception:
            continue

    @functools.total_ordering
    class Version:  # minimal stand-in: numeric release parts only
        def __init__(self, s):
            m = re.match(r"\s*v?(\d+(?:\.\d+)*)", str(s))
            self.t = tuple(int(x) for x in m.group(1).split(".")) if m else (0,)
            self.t = self.t + (0,) * (4 - len(self.t))

        def __eq__(self, o):
            return self.t == o.t

        def __lt__(self, o):
            return self.t < o.t

        def __repr__(self):
            return f"Version({'.'.join(map(str, self.t))})"

    pk = types.ModuleType("packaging")
    ver = types.ModuleType("packaging.version")
    ver.Version = Version
    ver.parse = Version
    pk.version = ver
    sys.modules["packaging"] = pk
    sys.modules["packaging.version"] = ver
    return "minimal stand-in"


def import_flashrnn(root, verbose_log=False):
    """Import FlashRNN from the checkout; returns (flashrnn function, modules)."""
    import torch.utils.cpp_extension as ce
    # flashrnn's cuda_init uses private/changed cpp_extension API: guard both.
    if not hasattr(ce, "_find_cuda_home"):
        ce._find_cuda_home = lambda: os.environ.get("CUDA_HOME", "/usr/local/cuda")
    if not getattr(ce.include_paths, "_mmrec", False):
        orig = ce.include_paths

        def include_paths(*a, **k):
            try:
                return orig(*a, **k)
            except TypeError:
                if "device_type" in k:
                    return orig(cuda=(k["device_type"] == "cuda"))
                if "cuda" in k:
                    return orig(device_type="cuda" if k["cuda"] else "cpu")
                raise
        include_paths._mmrec = True
        ce.include_paths = include_paths
    ensure_packaging()
    if root not in sys.path:
        sys.path.insert(0, root)
    fr = importlib.import_module("flashrnn")
    ci = importlib.import_module("flashrnn.flashrnn.cuda_init")
    # cuda_init.load() sleeps random()*10 s before every build/load ("to
    # minimize deadlocks" of parallel builds): skip that wait.
    real_time = ci.time
    ci.time = types.SimpleNamespace(**{k: getattr(real_time, k) for k in dir(real_time)
                                       if not k.startswith("__")})
    ci.time.sleep = lambda s: None
    mods = types.SimpleNamespace(
        cuda_init=ci,
        core=importlib.import_module("flashrnn.flashrnn.flashrnn"),
        gpu_info=importlib.import_module("flashrnn.flashrnn.gpu_info.gpu_info"),
    )
    if verbose_log:  # FlashRNN logs the kernel tiling it tries at INFO level
        import logging

        class _Lenient(logging.Formatter):  # some FlashRNN calls pass args without %s
            def format(self, record):
                try:
                    return super().format(record)
                except Exception:
                    return f"{record.name}: {record.msg} {record.args}"
        hd = logging.StreamHandler(sys.stdout)
        hd.setFormatter(_Lenient("%(name)s: %(message)s"))
        lg = logging.getLogger("flashrnn")
        lg.setLevel(logging.INFO)
        lg.addHandler(hd)
    return fr.flashrnn, mods


# ---------------------------------------------------------------- results
class Results:
    def __init__(self, out):
        self.out = out
        self.device = None
        self.r = {}
        if out:
            os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)

    def rec(self, k, v):
        self.r[k] = v
        log(f"{k:78s} {v}")
        self.flush()

    def flush(self):
        if not self.out:
            return
        tmp = self.out + ".tmp"
        with open(tmp, "w") as f:
            json.dump({"device": self.device, "results": self.r}, f, indent=1)
        os.replace(tmp, self.out)

    def table(self):
        w = max([len(k) for k in self.r] + [10])
        print("\n" + "=" * (w + 30), flush=True)
        print(f"{'name':{w}s}  value", flush=True)
        print("-" * (w + 30), flush=True)
        for k, v in self.r.items():
            print(f"{k:{w}s}  {v}", flush=True)
        print("=" * (w + 30), flush=True)


def cuda_time_ms(torch, fn, warmup, reps):
    """Median over reps of CUDA-event time of one fn() call, after warm-up."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    evs = []
    for _ in range(reps):
        s = torch.cuda.Event(enable_timing=True)
        e = torch.cuda.Event(enable_timing=True)
        s.record()
        fn()
        e.record()
        evs.append((s, e))
    torch.cuda.synchronize()
    return statistics.median([s.elapsed_time(e) for s, e in evs])


def flops_per_step(B, H, dh):
    return 2.0 * B * (H * dh) * dh


class Bench:
    def __init__(self, torch, R, deadline):
        self.torch = torch
        self.R = R
        self.deadline = deadline

    def left(self):
        return self.deadline - time.time()

    def timed(self, key, fn, T, flops, warmup, reps, est_s=5.0):
        """Record key.us_per_step and key.TFLOPs (flops per step given)."""
        if self.left() < est_s:
            self.R.rec(key + ".us_per_step", "skipped: time budget")
            return None
        try:
            ms = cuda_time_ms(self.torch, fn, warmup, reps)
            us = ms * 1e3 / T
            self.R.rec(key + ".us_per_step", round(us, 3))
            self.R.rec(key + ".TFLOPs", round(flops / (us * 1e-6) / 1e12, 3))
            return us
        except Exception as e:
            self.R.rec(key + ".us_per_step", err_str(e))
            traceback.print_exc()
            return None


# ---------------------------------------------------------------- PyTorch loops of the gated recurrence
def gated_loop_heads(torch, z, gam, W, bg, h0):
    # z, gam: [B,T,H,dh]; W: [H,dh,dh]; bg: [H,dh]; h0: [B,H,dh]
    h = h0
    outs = []
    for t in range(z.shape[1]):
        pre = torch.einsum("bhd,hde->bhe", h, W) + bg
        h = z[:, t] * torch.sigmoid(pre) + gam[:, t] * h
        outs.append(h)
    return torch.stack(outs, 1)


def gated_loop_dense(torch, z, gam, W, bg, h0):
    # z, gam: [B,T,D]; W: [D,D]; bg: [D]; h0: [B,D]
    h = h0
    outs = []
    for t in range(z.shape[1]):
        pre = h @ W + bg
        h = z[:, t] * torch.sigmoid(pre) + gam[:, t] * h
        outs.append(h)
    return torch.stack(outs, 1)


def gated_inputs(torch, B, T, shape, dh, dt):
    dev = "cuda"
    z = torch.randn(B, T, *shape, dh, device=dev, dtype=dt)
    gam = torch.empty(B, T, *shape, dh, device=dev).uniform_(0.9, 0.999).to(dt)
    h0 = torch.zeros(B, *shape, dh, device=dev, dtype=dt)
    return z, gam, h0


def torch_anchors(bench, args):
    torch = bench.torch
    R = bench.R
    dt = torch.bfloat16
    # ---- per head H32 x dh128 (block-diagonal W_g)
    B, H, dh = PER_HEAD["B"], PER_HEAD["H"], PER_HEAD["dh"]
    fl = flops_per_step(B, H, dh)
    W = (torch.randn(H, dh, dh, device="cuda") / dh ** 0.5).to(dt)
    bg = (0.1 * torch.randn(H, dh, device="cuda")).to(dt)
    T = args.per_head_T
    key = f"per_head.H{H}.dh{dh}.B{B}.T{T}.bf16.torch_cudagraph.fwd"
    if bench.left() < 30:
        R.rec(key + ".us_per_step", "skipped: time budget")
    else:
        try:
            log(f"capturing PyTorch loop T={T} per-head in a CUDA graph")
            z, gam, h0 = gated_inputs(torch, B, T, (H,), dh, dt)
            s = torch.cuda.Stream()
            s.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(s):
                gated_loop_heads(torch, z[:, :4], gam[:, :4], W, bg, h0)
            torch.cuda.current_stream().wait_stream(s)
            g = torch.cuda.CUDAGraph()
            with torch.cuda.graph(g):
                _out = gated_loop_heads(torch, z, gam, W, bg, h0)
            bench.timed(key, g.replay, T, fl, warmup=3, reps=args.reps_graph)
            del g, _out, z, gam
        except Exception as e:
            R.rec(key + ".us_per_step", err_str(e))
            traceback.print_exc()
        torch.cuda.empty_cache()
    T = args.eager_T
    key = f"per_head.H{H}.dh{dh}.B{B}.T{T}.bf16.torch_eager.fwd"
    try:
        z, gam, h0 = gated_inputs(torch, B, T, (H,), dh, dt)
        bench.timed(key, lambda: gated_loop_heads(torch, z, gam, W, bg, h0), T, fl,
                    warmup=2, reps=args.reps_eager)
        del z, gam
    except Exception as e:
        R.rec(key + ".us_per_step", err_str(e))
    torch.cuda.empty_cache()

    # ---- dense D4096 (one head, dh = 4096)
    B, D = DENSE["B"], DENSE["H"] * DENSE["dh"]
    fl = flops_per_step(B, DENSE["H"], DENSE["dh"])
    W = (torch.randn(D, D, device="cuda") / D ** 0.5).to(dt)
    bg = (0.1 * torch.randn(D, device="cuda")).to(dt)
    T = args.dense_eager_T
    key = f"dense.D{D}.B{B}.T{T}.bf16.torch_eager.fwd"
    try:
        z, gam, h0 = gated_inputs(torch, B, T, (), D, dt)
        z, gam, h0 = z.view(B, T, D), gam.view(B, T, D), h0.view(B, D)
        bench.timed(key, lambda: gated_loop_dense(torch, z, gam, W, bg, h0), T, fl,
                    warmup=2, reps=args.reps_eager)
        del z, gam
    except Exception as e:
        R.rec(key + ".us_per_step", err_str(e))
    T = args.dense_T
    key = f"dense.D{D}.B{B}.T{T}.bf16.torch_cudagraph.fwd"
    if bench.left() < 30:
        R.rec(key + ".us_per_step", "skipped: time budget")
    else:
        try:
            z, gam, h0 = gated_inputs(torch, B, T, (), D, dt)
            z, gam, h0 = z.view(B, T, D), gam.view(B, T, D), h0.view(B, D)
            s = torch.cuda.Stream()
            s.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(s):
                gated_loop_dense(torch, z[:, :4], gam[:, :4], W, bg, h0)
            torch.cuda.current_stream().wait_stream(s)
            g = torch.cuda.CUDAGraph()
            with torch.cuda.graph(g):
                _out = gated_loop_dense(torch, z, gam, W, bg, h0)
            bench.timed(key, g.replay, T, fl, warmup=3, reps=args.reps_graph)
            del g, _out, z, gam
        except Exception as e:
            R.rec(key + ".us_per_step", err_str(e))
            traceback.print_exc()
    torch.cuda.empty_cache()


# ---------------------------------------------------------------- FlashRNN
# kind -> (shape, backend)
FLASHRNN_KINDS = {
    "fused": (PER_HEAD, "cuda_fused"),
    "alternating": (DENSE, "cuda"),
    "dense_fused": (DENSE, "cuda_fused"),
}


def elman_inputs(torch, B, T, H, dh, seed=0):
    """FlashRNN's default (user-facing) layouts: Wx [B,T,G,H,dh] (precomputed
    gate inputs, G=1 gate for Elman), R [G,H,dh,dh] with gate_d = sum_p R[g,h,d,p] s_p,
    b [G,H,dh]; output states [S,B,T,H,dh] with S=1 state for Elman."""
    torch.manual_seed(seed)
    dt = torch.bfloat16
    Wx = torch.randn(B, T, 1, H, dh, device="cuda").to(dt)
    R = (torch.randn(1, H, dh, dh, device="cuda") / dh ** 0.5).to(dt)
    b = (0.1 * torch.randn(1, H, dh, device="cuda")).to(dt)
    return Wx, R, b


def elman_reference(torch, Wx, R, b):
    """fp32 reference of FlashRNN's Elman: s_t = tanh(R s_{t-1} + Wx_t + b)."""
    Wx, R, b = Wx.float(), R.float(), b.float()
    B, T, _, H, dh = Wx.shape
    s = torch.zeros(B, H, dh, device=Wx.device)
    outs = []
    for t in range(T):
        s = torch.tanh(torch.einsum("bhp,hdp->bhd", s, R[0]) + Wx[:, t, 0] + b[0])
        outs.append(s)
    return torch.stack(outs, 1)  # [B,T,H,dh]


def prebuild_main(args):
    """Child process: build (JIT-compile) one FlashRNN extension and run it once."""
    info = {"kind": args.prebuild}
    t0 = time.time()

    def dump():
        with open(args.prebuild_out, "w") as f:
            json.dump(info, f, indent=1)
    try:
        setup_env(args)
        root = flashrnn_root(args.flashrnn)
        import torch
        info["cuda_lib_notes"] = ensure_cuda_libs()
        fr, mods = import_flashrnn(root, verbose_log=True)
        info["import_s"] = round(time.time() - t0, 2)
        shape, backend = FLASHRNN_KINDS[args.prebuild]
        if backend == "cuda_fused":
            t1 = time.time()
            gi = mods.gpu_info.get_gpu_info(torch.cuda.current_device())
            info["gpu_info_compile_s"] = round(time.time() - t1, 2)
            info["gpu_info"] = {k: gi.get(k) for k in ("name", "multiProcessorCount", "maxThreadsPerBlock",
                                                       "regsPerMultiprocessor", "sharedMemPerBlockOptin")}
            dump()
        t1 = time.time()
        log(f"prebuild {args.prebuild}: compiling FlashRNN elman backend={backend} {shape}")
        Wx, R, b = elman_inputs(torch, shape["B"], 4, shape["H"], shape["dh"])
        Wx.requires_grad_()
        R.requires_grad_()
        b.requires_grad_()
        h, _ = fr(Wx, R, b, function="elman", backend=backend, dtype="bfloat16")
        torch.autograd.grad(h, (Wx, R, b), torch.randn_like(h))
        torch.cuda.synchronize()
        info["compile_s"] = round(time.time() - t1, 2)
        info["ok"] = True
    except BaseException as e:  # noqa: BLE001 - report everything to the parent
        info["ok"] = False
        info["error"] = err_str(e)
        traceback.print_exc()
    info["total_s"] = round(time.time() - t0, 2)
    dump()
    log(f"prebuild {args.prebuild} done: {info}")
    return 0 if info.get("ok") else 1


class Child:
    def __init__(self, kind, args, root, outdir, jobs):
        self.kind = kind
        self.res_path = os.path.join("/tmp", f"mmrec_gated_prebuild_{kind}_{os.getpid()}.json")
        self.log_path = os.path.join(outdir, f"gated_anchors_prebuild_{kind}.log")
        cmd = [sys.executable, os.path.abspath(__file__), "--flashrnn", root,
               "--ext-dir", args.ext_dir, "--prebuild", kind, "--prebuild-out", self.res_path]
        env = dict(os.environ, MAX_JOBS=str(jobs), PYTHONUNBUFFERED="1")
        self.logf = open(self.log_path, "w")
        self.t0 = time.time()
        self.p = subprocess.Popen(cmd, stdout=self.logf, stderr=subprocess.STDOUT, env=env,
                                  start_new_session=True)
        log(f"started FlashRNN build '{kind}' (pid {self.p.pid}, MAX_JOBS={jobs}, log {self.log_path})")

    def wait(self, deadline):
        """-> dict with ok/error/compile times; kills the child's process group at the deadline."""
        while self.p.poll() is None:
            if time.time() >= deadline:
                try:
                    os.killpg(self.p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.p.wait()
                self.logf.close()
                return {"ok": False, "error": f"error: build '{self.kind}' still running at the time budget "
                                              f"({time.time() - self.t0:.0f} s); killed. See {self.log_path}"}
            try:
                self.p.wait(timeout=max(0.5, min(20.0, deadline - time.time())))
            except subprocess.TimeoutExpired:
                log(f"  ... build '{self.kind}' running {time.time() - self.t0:.0f} s: {self.last_line()}")
        self.logf.close()
        info = {}
        try:
            info = json.load(open(self.res_path))
        except Exception as e:
            info = {"ok": False, "error": f"error: build child exited {self.p.returncode} without a report ({e})"}
        info["wall_s"] = round(time.time() - self.t0, 1)
        if not info.get("ok"):
            try:
                tail = open(self.log_path).read()[-3000:]
                print(f"---- tail of {self.log_path}\n{tail}\n----", flush=True)
            except OSError:
                pass
        return info

    def last_line(self):
        try:
            with open(self.log_path, "rb") as f:
                f.seek(max(0, os.path.getsize(self.log_path) - 4096))
                lines = [x for x in f.read().decode(errors="replace").splitlines() if x.strip()]
            return lines[-1][:140] if lines else ""
        except OSError:
            return ""

    def kill(self):
        if self.p.poll() is None:
            try:
                os.killpg(self.p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.p.wait()


def record_build(R, tag, info):
    if "gpu_info_compile_s" in info and "flashrnn.compile.gpu_info_s" not in R.r:
        R.rec("flashrnn.compile.gpu_info_s", info["gpu_info_compile_s"])
    if info.get("ok"):
        R.rec(f"flashrnn.compile.{tag}_s", info.get("compile_s"))
    else:
        R.rec(f"flashrnn.compile.{tag}_s", info.get("error", "error: unknown"))
    if "wall_s" in info:  # whole child: python + torch import, gpu_info, kernel build, test run
        R.rec(f"flashrnn.compile.{tag}.child_wall_s", info["wall_s"])
    for n in info.get("cuda_lib_notes", []) or []:
        log(f"note: {n}")


def flashrnn_measure(bench, fr, kind, T, args, check_T=16):
    torch = bench.torch
    R = bench.R
    shape, backend = FLASHRNN_KINDS[kind]
    B, H, dh = shape["B"], shape["H"], shape["dh"]
    D = H * dh
    case = (f"per_head.H{H}.dh{dh}" if H > 1 else f"dense.D{D}") + f".B{B}.T{T}.bf16"
    impl = {"cuda_fused": "flashrnn_fused_elman", "cuda": "flashrnn_alternating_elman"}[backend]
    key = f"{case}.{impl}"
    fl = flops_per_step(B, H, dh)

    def call(Wx, Rm, b):
        return fr(Wx, Rm, b, function="elman", backend=backend, dtype="bfloat16")

    # first call in this process: loads the (already built) extension
    try:
        t1 = time.time()
        Wx, Rm, b = elman_inputs(torch, B, check_T, H, dh, seed=1)
        with torch.no_grad():
            h, _ = call(Wx, Rm, b)
        torch.cuda.synchronize()
        R.rec(f"{key}.load_in_main_s", round(time.time() - t1, 2))
        ref = elman_reference(torch, Wx, Rm, b)
        got = h[0].float()
        rel = ((got - ref).norm() / ref.norm()).item()
        R.rec(f"{key}.relerr_vs_fp32_T{check_T}", float(f"{rel:.3e}"))
    except Exception as e:
        R.rec(f"{key}.load_in_main_s", err_str(e))
        traceback.print_exc()
        return
    Wx, Rm, b = elman_inputs(torch, B, T, H, dh, seed=2)

    def fwd():
        with torch.no_grad():
            call(Wx, Rm, b)
    bench.timed(f"{key}.fwd", fwd, T, fl, warmup=3, reps=args.reps_flashrnn)

    Wg, Rg, bg = (x.detach().clone().requires_grad_() for x in (Wx, Rm, b))

    def fwd_train():  # forward in training mode (stores the gate cache for backward)
        call(Wg, Rg, bg)
    bench.timed(f"{key}.fwd_train", fwd_train, T, fl, warmup=2, reps=args.reps_flashrnn)
    try:
        dy = torch.randn(1, B, T, H, dh, device="cuda", dtype=torch.bfloat16)

        def fwdbwd():
            h, _ = call(Wg, Rg, bg)
            torch.autograd.grad(h, (Wg, Rg, bg), dy)
        bench.timed(f"{key}.fwdbwd", fwdbwd, T, 3 * fl, warmup=2, reps=args.reps_flashrnn)
    except Exception as e:
        R.rec(f"{key}.fwdbwd.us_per_step", err_str(e))


def flashrnn_anchors(bench, args, root, outdir):
    R = bench.R
    R.rec("flashrnn.source_patch", args._patch_msg)
    for i, n in enumerate(ensure_cuda_libs()):
        R.rec(f"flashrnn.cuda_lib_note{i}", n)
    # stale torch-extension locks from a killed earlier run would block forever
    for lock in glob.glob(os.path.join(os.environ["TORCH_EXTENSIONS_DIR"], "*", "lock")):
        try:
            os.remove(lock)
            log(f"removed stale lock {lock}")
        except OSError:
            pass
    ncpu = os.cpu_count() or 8
    jobs = max(2, ncpu // 2)
    t_build = time.time()
    kids = {"fused": Child("fused", args, root, outdir, jobs),
            "alternating": Child("alternating", args, root, outdir, jobs)}
    fr = None
    try:
        fr, _ = import_flashrnn(root)
    except Exception as e:
        R.rec("flashrnn.import", err_str(e))
        traceback.print_exc()
    # reserve ~40 s after the builds for the measurements themselves
    build_deadline = bench.deadline - 40
    info = kids["fused"].wait(build_deadline)
    record_build(R, "fused_elman_H32_dh128", info)
    if info.get("ok") and fr is not None:
        flashrnn_measure(bench, fr, "fused", args.per_head_T, args)
    info = kids["alternating"].wait(build_deadline)
    record_build(R, "alternating_elman_D4096", info)
    R.rec("flashrnn.compile.both_builds_done_after_s", round(time.time() - t_build, 1))
    if info.get("ok") and fr is not None:
        flashrnn_measure(bench, fr, "alternating", args.dense_T, args)
    if args.dense_fused:
        # FlashRNN's solver finds a fused tiling for dh=4096 on paper (128 blocks,
        # R split over registers + SMEM); whether it runs is what this tries.
        # If the first tiling fails, FlashRNN bisects the register caching and
        # recompiles each time, so this can take many minutes: opt-in only.
        if bench.left() < 60:
            R.rec("dense.flashrnn_fused_elman", "skipped: time budget")
        else:
            k = Child("dense_fused", args, root, outdir, ncpu)
            info = k.wait(bench.deadline - 20)
            record_build(R, "fused_elman_D4096", info)
            if info.get("ok") and fr is not None:
                flashrnn_measure(bench, fr, "dense_fused", args.dense_T, args)
    for k in kids.values():
        k.kill()


# ---------------------------------------------------------------- main
def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--flashrnn", default=".carry/flashrnn", help="FlashRNN checkout (NX-AI/flashrnn)")
    ap.add_argument("--out", default=os.path.join(os.environ.get("OUT", "/tmp"), "gated_anchors.json"))
    ap.add_argument("--skip-flashrnn", action="store_true")
    ap.add_argument("--skip-torch", action="store_true", help="skip the PyTorch loop anchors")
    ap.add_argument("--dense-fused", action="store_true",
                    help="also try FlashRNN's fused kernel at dh=4096 (may compile for minutes)")
    ap.add_argument("--ext-dir", default="/tmp/mmrec_torch_ext", help="TORCH_EXTENSIONS_DIR (build cache)")
    ap.add_argument("--budget-s", type=float, default=345.0,
                    help="hard wall-clock budget; builds still running then are killed")
    ap.add_argument("--per-head-T", type=int, default=2048)
    ap.add_argument("--eager-T", type=int, default=256)
    ap.add_argument("--dense-T", type=int, default=512)
    ap.add_argument("--dense-eager-T", type=int, default=64)
    ap.add_argument("--reps-flashrnn", type=int, default=10)
    ap.add_argument("--reps-graph", type=int, default=10)
    ap.add_argument("--reps-eager", type=int, default=5)
    ap.add_argument("--patch-only", action="store_true",
                    help="only apply the CUDA-13 patch to the FlashRNN checkout, then exit")
    ap.add_argument("--prebuild", choices=sorted(FLASHRNN_KINDS), help=argparse.SUPPRESS)
    ap.add_argument("--prebuild-out", help=argparse.SUPPRESS)
    return ap.parse_args(argv)


def main():
    args = parse_args()
    if args.prebuild:
        return prebuild_main(args)
    root = None
    args._patch_msg = None
    if not args.skip_flashrnn or args.patch_only:
        try:
            root, args._patch_msg = prepare_source(args.flashrnn)
            log(args._patch_msg)
        except Exception as e:
            args._patch_msg = err_str(e)
            log(f"FlashRNN source: {args._patch_msg}")
        if args.patch_only:
            return 0 if root else 1
    setup_env(args)
    import torch
    out = os.path.abspath(args.out)
    R = Results(out)
    R.device = torch.cuda.get_device_name()
    cap = torch.cuda.get_device_capability()
    os.environ.setdefault("TORCH_CUDA_ARCH_LIST", f"{cap[0]}.{cap[1]}")
    R.rec("meta.torch", torch.__version__)
    R.rec("meta.torch_cuda", torch.version.cuda)
    R.rec("meta.capability", f"{cap[0]}.{cap[1]}")
    R.rec("meta.TORCH_EXTENSIONS_DIR", os.environ["TORCH_EXTENSIONS_DIR"])
    R.rec("meta.flops_note", "recurrent product only: 2*B*D*dh per step fwd (D=H*dh), 3x for fwd+bwd")
    torch.manual_seed(0)
    bench = Bench(torch, R, T0 + args.budget_s)
    if not args.skip_torch:
        torch_anchors(bench, args)
    if not args.skip_flashrnn:
        if root is None:
            R.rec("flashrnn", args._patch_msg or "error: no FlashRNN source")
        else:
            flashrnn_anchors(bench, args, root, os.path.dirname(out))
    R.rec("meta.total_wall_s", round(time.time() - T0, 1))
    R.table()
    log(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
