//===- Passes.td - mmrec passes ----------------------------*- tablegen -*-===//
//
// Passes of the mmrec compiler, in alphabetical order. Pipelines that chain
// them are registered in lib/Transforms/Pipelines.cpp.
//
//===----------------------------------------------------------------------===//

#ifndef MMREC_PASSES_TD
#define MMREC_PASSES_TD

include "mlir/Pass/PassBase.td"

def MMRecClassifyRecurrences : Pass<"mmrec-classify-recurrences"> {
  let summary = "Rewrite affine recurrences into log-space scans and the seed's level-0 step into mmrec.gated_recurrence";
  let description = [{
    A `mmrec.recurrence` with one carried state whose step is
    `h_t = A_t ⊙ h_{t-1} + B_t`, with A and B independent of h, becomes a
    `mmrec.scan`: the state-free ops of the step are lifted from per-step
    slices to whole sequences (the prologue that computes ℓ and B), and the
    decay moves to log space — `mmrec.exp_decay ℓ` gives ℓ itself,
    `mmrec.sigmoid x` gives `mmrec.log_decay x` = clamp(−softplus(−x)) — so
    that cumulative products never under- or overflow.

    The seed's nonlinear step `h_t = z_t ⊙ σ(h·W_g + b_g) + exp_decay(ℓ_t) ⊙ h`
    (products and sum in either order; W_g dense through `mmrec.matmul` or
    per head through `mmrec.block_diag_matmul`, both with a bias, W_g and
    b_g defined outside the step, ℓ a `#mmrec.logspace` input) becomes
    `mmrec.gated_recurrence`, which the outliner lowers to a persistent
    kernel. Every other recurrence stays sequential, with a remark saying
    why.
  }];
  let options = [
    Option<"clampMin", "clamp-min", "double", "-50.0", "Lower clamp of new log-space decays">,
    Option<"clampMax", "clamp-max", "double", "0.0", "Upper clamp of new log-space decays">,
  ];
}

def MMRecFuseScanProducers : Pass<"mmrec-fuse-scan-producers"> {
  let summary = "Fuse the decay gate feeding a scan into the scan's kernel";
  let description = [{
    `mmrec.scan (mmrec.log_decay %x), %b` with the same clamp bounds becomes
    `mmrec.scan %x, %b {gate_logits}`: the kernel reads the logits and
    computes ℓ = clamp(−softplus(−x)) itself, and the adjoint kernel returns
    the gradient with respect to x, so that the gate's array of ℓ is never
    written to or read from memory. A `mmrec.log_decay` with other users is
    left alone.
  }];
}

def MMRecOutlineScanKernels : Pass<"mmrec-outline-scan-kernels", "::mlir::ModuleOp"> {
  let summary = "Generate the fused kernels of every scan and gated recurrence (forward and adjoint)";
  let description = [{
    For every `mmrec.scan` (forward) and `mmrec.scan_grad` (its adjoint) of
    the module, generates one fused kernel named after the enclosing
    function and records it:

    * `target=nvptx`: a `gpu.func` in the `gpu.module @mmrec_kernels`, a
      chunked scan that keeps the sequence axis parallel (registers → shared
      memory → decoupled look-back across blocks along T), with 16-byte
      vector accesses, plus a scalar variant `<name>_v1` that the runtime
      picks when the channel count or alignment does not allow vectors;
    * `target=cpu`: a `func.func` of loops (sequential in T, contiguous in
      the channels).

    For every `mmrec.gated_recurrence` and `mmrec.gated_recurrence_grad`:

    * `target=nvptx`: persistent kernels `<name>_r{1,2,4}` (a block owns R
      batch rows and one head, keeps W_g's block in dynamic shared memory
      for all T steps, its state in registers, and loads each step's inputs
      two steps ahead; one barrier per step). The launcher picks R from
      B·H. A dense gate too large for one block gets `<name>_coop`
      instead: a cooperative kernel (32 channels a block, a grid barrier
      a step) whose products run on tensor cores (`nvvm.mma.sync`, bf16)
      with W_g's slice held on chip as fragments, or on FP32 FMAs for fp32
      I/O and D not a multiple of 256.
    * `target=cpu`: loops over the batch and the sequence with vectorizable
      inner products.
    The adjoint kernel recomputes σ(h_{t-1}·W_g + b_g) from the stored
    states and writes the shifted pre-activation gradient, from which the
    launcher forms dW_g and db_g as matrix products (BLAS / cuBLASLt).

    The op gets a `mmrec.kernel` attribute naming its kernel, and the module
    a `mmrec.kernels` array describing each kernel (arguments, element type,
    tiling), from which `mmrec-compile` writes the manifest and the C++
    launch API.
  }];
  let options = [
    Option<"target", "target", "std::string", "\"cpu\"", "cpu or nvptx">,
    Option<"vec", "vec", "int64_t", "0", "Channels per thread (0: 16 bytes of the I/O type)">,
    Option<"steps", "steps", "int64_t", "8", "Steps per thread">,
    Option<"warps", "warps", "int64_t", "4", "Warps per block along T">,
    Option<"minBlocks", "min-blocks", "int64_t", "0",
           "Blocks per SM the register allocation must allow (nvvm.minctasm; 0: no bound)">,
    Option<"stage", "stage", "int64_t", "-1",
           "Stage the vectorized GPU kernels' inputs in shared memory with cp.async "
           "(-1: where measured faster, the 16-bit long-block forward; 0: none; 1: every "
           "vectorized kernel, the adjoints with their epilogue operands too)">,
    Option<"stream", "stream", "int64_t", "-1",
           "Streaming (evict-first) loads of the GPU kernels' inputs and stores of their "
           "outputs, so that L2 keeps the look-back's status words (-1: the default, none: "
           "measured slower on the H200; 0: none; 1: every kernel)">,
    Option<"ticket", "ticket", "int64_t", "-1",
           "How a GPU scan block finds its place along T: 1 an atomic ticket taken at its "
           "start; 0 its block index, relying on the in-order dispatch of a 1-D grid's blocks "
           "as CUB's single-pass scans do (no atomic before the first load, no counter to "
           "zero a launch); -1 the default, the block index (measured faster on the H100)">,
  ];
  let dependentDialects = [
    "::mlir::arith::ArithDialect", "::mlir::func::FuncDialect",
    "::mlir::gpu::GPUDialect", "::mlir::LLVM::LLVMDialect",
    "::mlir::NVVM::NVVMDialect", "::mlir::math::MathDialect",
    "::mlir::memref::MemRefDialect", "::mlir::scf::SCFDialect",
    "::mlir::vector::VectorDialect"
  ];
}

def MMRecBuildTrainKernels : Pass<"mmrec-build-train-kernels", "::mlir::ModuleOp"> {
  let summary = "Generate the CPU kernels of a training step for the module's mmrec.config";
  let description = [{
    Adds to a module that carries an `mmrec.config` every non-GEMM kernel that
    one training step of MMREC_SPEC's model needs, as `func.func @train_<name>`
    loop nests with `llvm.emit_c_interface` (lowered to LLVM host code by
    `mmrec-compile`, which links them into `NAME.train.so`):
    RMSNorm, the decay gate, the level-0 gated recurrence, level 1 (chunk
    means and the causal chunk read), the MDI write, the chunk-level memory
    scan, the MDI read, the HDS combination (with its GroupRMSNorm), SwiGLU,
    the embedding gather/scatter, cross-entropy, AdamW and Σx², each forward
    and reverse. Every size of the configuration is a compile-time constant;
    the batch B, the sequence length T and row counts are arguments.

    The module gets a `mmrec.train_kernels` array: one dictionary per kernel
    with its `name`, its array arguments (`arrays`, 1-D memrefs in order) and
    its index arguments (`indices`). A module without `mmrec.config` is an
    error. With `target=nvptx` it also gets `mmrec.train_gated_kernels`, a
    string naming the level-0 kernels the library runs where their shape
    conditions hold: `persistent`, `cooperative`, `cooperative-bf16`,
    `clusters-bf16` or `rows` (mmrec-compile copies it into the manifest as
    `gpu_gated_kernels`).

    With `target=nvptx` the same kernels are built for the GPU: each
    `@train_<name>` stays a host function with the same arguments (device
    pointers), and every loop of independent iterations at the top of a
    kernel becomes a `gpu.launch` of one thread per iteration (sums that
    several iterations add to one element become `memref.atomic_rmw addf`);
    the level-0 recurrence uses the persistent and cooperative kernels of
    `mmrec.gated_recurrence` (GatedKernels.h) where the shape allows, in
    fp32 FMAs (see TrainKernels.cpp, `GatedFastPath`). The module becomes a
    `gpu.container_module`; `gpu-kernel-outlining` and the NVVM lowering
    follow (mmrec-compile does both).

    `gated-bf16` (nvptx only, off by default): the dense gate's cooperative
    level-0 kernels multiply by W_g on tensor cores (`mma.sync` m16n8k16,
    h_{t-1}, a_t and W_g rounded to bf16, fp32 accumulation; states, inputs
    and outputs stay fp32). This changes the numerics (relative errors of
    order 1e-2 instead of 1e-6); the default keeps every product in fp32.

    `gated-cluster` (with `gated-bf16`, off by default): where D is a
    multiple of 256 up to 1024, each row group of 8 batch rows runs in one
    thread-block cluster of 16 blocks that pass the step's state to each
    other through distributed shared memory and meet at the cluster barrier
    (GatedKernels.h, `groupCluster`), instead of D / 32 blocks meeting at a
    grid-wide barrier in global memory. Same products, same numerics; the
    kernels are named `*_gcl` and launched in clusters of 16 (a
    non-portable size: the runtime reports a device that cannot hold one).
  }];
  let options = [
    Option<"target", "target", "std::string", "\"cpu\"", "cpu or nvptx">,
    Option<"gatedBf16", "gated-bf16", "bool", "false",
           "nvptx: the dense gate's cooperative level-0 products on tensor cores in bf16">,
    Option<"gatedCluster", "gated-cluster", "bool", "false",
           "nvptx, with gated-bf16: the level-0 row groups as clusters of 16 blocks">,
  ];
  let dependentDialects = [
    "::mlir::arith::ArithDialect", "::mlir::func::FuncDialect", "::mlir::gpu::GPUDialect",
    "::mlir::NVVM::NVVMDialect",
    "::mlir::LLVM::LLVMDialect", "::mlir::math::MathDialect",
    "::mlir::memref::MemRefDialect", "::mlir::scf::SCFDialect",
    "::mlir::vector::VectorDialect"
  ];
}

def MMRecParamCount : Pass<"mmrec-param-count", "::mlir::ModuleOp"> {
  let summary = "Check every parameter against the model configuration and count them";
  let description = [{
    Finds the model function (`model` by default) of a module that carries an
    `mmrec.config`, and checks each of its arguments named by an
    `mmrec.param` attribute against the shape that MMREC_SPEC section 1 and
    the configuration give to that parameter (`embed` is V×D, `layers.W_g` is
    L×D×D for `gate = dense`, and so on): unknown names, missing parameters
    and wrong shapes are errors located at the function. It then sums the
    parameters' element counts, checks the sum against the formula of
    MMREC_SPEC section 6, and prints

    ```
    mmrec-tiny: 541964 parameters (24 tensors)
    ```

    to standard output when `print` is set. The module is not changed.
  }];
  let options = [
    Option<"modelFunc", "model-func", "std::string", "\"model\"",
           "Name of the model function whose parameters are checked">,
    Option<"print", "print", "bool", "true",
           "Print the parameter count to standard output">,
    Option<"requireConfig", "require-config", "bool", "true",
           "Fail on a module without mmrec.config (else do nothing)">,
  ];
}

def MMRecScanAdjoint : Pass<"mmrec-scan-adjoint", "::mlir::ModuleOp"> {
  let summary = "Derive the exact reverse-mode function of every scan or gated-recurrence function";
  let description = [{
    For every function `@f` that computes a `mmrec.scan` of its arguments
    and returns its states and final state, adds `@f_grad`, which takes
    `f`'s arguments, its results (the saved states) and a cotangent for each
    result, and returns the gradient of every argument, computed by one
    `mmrec.scan_grad` (itself a reverse scan with its epilogue fused):

    ```
    g_t = dL/dy_t + γ_{t+1} g_{t+1},  dℓ_t = g_t γ_t h_{t-1} (0 where clamped),
    db_t = g_t,  dh_{-1} = γ_0 g_0
    ```
    A function whose scan is fed by anything other than its arguments is
    left alone with a remark.

    Likewise a function returning `(h, final)` of one
    `mmrec.gated_recurrence` of its arguments gets `@f_grad(args..., h,
    final, dh, dfinal) -> (dz, dℓ, dW_g, db_g[, dh0])`, one
    `mmrec.gated_recurrence_grad` (backpropagation through every step).
  }];
}

def MMRecApproximateMath : Pass<"mmrec-approximate-math"> {
  let summary = "Expand f32 math functions into polynomial arithmetic";
  let description = [{
    Rewrites `math.exp`, `math.expm1`, `math.log`, `math.log1p`, `math.log2`,
    `math.tanh`, `math.erf` (and the others MLIR's polynomial approximations
    cover) on f32 into arithmetic (Cephes/Eigen-style polynomials, a few ulp
    of error), so that GPU kernels need no libdevice: without the CUDA
    toolkit, `convert-gpu-to-nvvm` turns these ops into `__nv_*` calls that
    ptxas cannot resolve. mmrec-compile runs it inside the `gpu.module`s of
    the GPU training library with `ptx=true`, which also rewrites
    `math.sqrt` and `math.floor` (the polynomials use it) on f32 into the PTX
    instructions `sqrt.rn.f32` and `cvt.rmi.f32.f32` (LLVM inline assembly):
    `convert-gpu-to-nvvm` would otherwise make them libdevice calls too.
    `math.fma` is left for `convert-math-to-llvm`.
  }];
  let options = [
    Option<"ptx", "ptx", "bool", "false",
           "Also rewrite math.sqrt and math.floor on f32 into PTX instructions">,
  ];
  let dependentDialects = [
    "::mlir::arith::ArithDialect", "::mlir::math::MathDialect",
    "::mlir::vector::VectorDialect", "::mlir::LLVM::LLVMDialect"
  ];
}

#endif // MMREC_PASSES_TD
