//===- MMRecOps.td - mmrec operations ----------------------*- tablegen -*-===//
//
// Operations of the mmrec dialect. Shapes follow MMREC_SPEC: activations are
// (B, T, D) with the sequence on axis 1; matrices act on the right (row
// vectors). Every op has a verifier that names the offending operand.
//
//===----------------------------------------------------------------------===//

#ifndef MMREC_OPS_TD
#define MMREC_OPS_TD

include "dialect/MMRecDialect.td"
include "dialect/MMRecAttrs.td"
include "mlir/IR/OpBase.td"
include "mlir/IR/BuiltinAttributes.td"
include "mlir/IR/CommonAttrConstraints.td"
include "mlir/Interfaces/SideEffectInterfaces.td"
include "mlir/Interfaces/ControlFlowInterfaces.td"
include "mlir/Interfaces/InferTypeOpInterface.td"

def MMRec_FloatTensor : RankedTensorOf<[BF16, F16, F32, F64]>;
def MMRec_LogTensor : RankedTensorOf<[F32, F64]>;
def MMRec_IndexTensor : RankedTensorOf<[I32, I64]>;

//===----------------------------------------------------------------------===//
// Elementwise and normalization
//===----------------------------------------------------------------------===//

class MMRec_UnaryElementwiseOp<string mnemonic, list<Trait> traits = []>
    : MMRec_Op<mnemonic, !listconcat(traits, [Pure, Elementwise,
        SameOperandsAndResultType])> {
  let arguments = (ins MMRec_FloatTensor:$input);
  let results = (outs MMRec_FloatTensor:$result);
  let assemblyFormat = "$input attr-dict `:` type($input)";
}

def MMRec_SigmoidOp : MMRec_UnaryElementwiseOp<"sigmoid"> {
  let summary = "Logistic sigmoid σ(x) = 1 / (1 + exp(-x)), elementwise";
  let description = [{
    ```mlir
    %s = mmrec.sigmoid %x : tensor<?x128xf32>
    ```
  }];
}

def MMRec_LogSigmoidOp : MMRec_UnaryElementwiseOp<"log_sigmoid"> {
  let summary = "log σ(x), computed as -softplus(-x), elementwise";
  let description = [{
    Stable for every finite x: never `log(0)`.

    ```mlir
    %l = mmrec.log_sigmoid %x : tensor<?x?x128xf32>
    ```
  }];
}

def MMRec_SwiGLUOp : MMRec_Op<"swiglu", [Pure, Elementwise,
    SameOperandsAndResultType]> {
  let summary = "silu(gate) ⊙ up, the SwiGLU activation of the FFN";
  let description = [{
    `silu(a) = a · σ(a)`. With `a = u2·W_1` and `b = u2·W_3` this is the
    inner activation of MMREC_SPEC's FFN.

    ```mlir
    %y = mmrec.swiglu %a, %b : tensor<?x?x384xf32>
    ```
  }];
  let arguments = (ins MMRec_FloatTensor:$gate, MMRec_FloatTensor:$up);
  let results = (outs MMRec_FloatTensor:$result);
  let assemblyFormat = "$gate `,` $up attr-dict `:` type($result)";
}

def MMRec_RMSNormOp : MMRec_Op<"rms_norm", [Pure,
    AllTypesMatch<["input", "result"]>]> {
  let summary = "RMSNorm over the last axis, times a weight";
  let description = [{
    `y = x / sqrt(mean(x²) + eps) ⊙ w`, the mean taken over the last axis.
    The weight has one element per channel of the last axis.

    ```mlir
    %u = mmrec.rms_norm %x, %w_in {eps = 1.0e-06 : f64}
        : tensor<?x?x128xf32>, tensor<128xf32>
    ```
  }];
  let arguments = (ins MMRec_FloatTensor:$input, MMRec_FloatTensor:$weight,
                       DefaultValuedAttr<F64Attr, "1.0e-6">:$eps);
  let results = (outs MMRec_FloatTensor:$result);
  let assemblyFormat =
      "$input `,` $weight attr-dict `:` type($input) `,` type($weight)";
  let hasVerifier = 1;
}

def MMRec_GroupRMSNormOp : MMRec_Op<"group_rms_norm", [Pure,
    SameOperandsAndResultType]> {
  let summary = "RMSNorm over each of `groups` equal slices of the last axis, no weight";
  let description = [{
    The last axis of size D is split into `groups` groups of D/groups
    channels; each group is normalized on its own: `y = x / sqrt(mean_g(x²) +
    eps)`. MM-Rec applies it to h_t with one group per memory (N_m groups of
    d_m channels).

    ```mlir
    %hn = mmrec.group_rms_norm %h {groups = 2 : i64, eps = 1.0e-06 : f64}
        : tensor<?x?x128xf32>
    ```
  }];
  let arguments = (ins MMRec_FloatTensor:$input,
                       ConfinedAttr<I64Attr, [IntPositive]>:$groups,
                       DefaultValuedAttr<F64Attr, "1.0e-6">:$eps);
  let results = (outs MMRec_FloatTensor:$result);
  let assemblyFormat = "$input attr-dict `:` type($input)";
  let hasVerifier = 1;
}

def MMRec_LogDecayOp : MMRec_Op<"log_decay", [Pure]> {
  let summary = "The decay gate in log space: ℓ = clamp(log σ(x), min, max)";
  let description = [{
    Computes `ℓ = clamp(-softplus(-x), clamp_min, clamp_max)` elementwise,
    so that `γ = exp(ℓ)` is a decay in (0, 1]. The result carries a
    `#mmrec.logspace` encoding with the same bounds.

    ```mlir
    %l = mmrec.log_decay %pre {clamp_min = -5.0e+01 : f64, clamp_max = 0.0 : f64}
        : tensor<?x?x128xf32>
        -> tensor<?x?x128xf32, #mmrec.logspace<min = -5.000000e+01, max = 0.000000e+00>>
    ```
  }];
  let arguments = (ins MMRec_LogTensor:$input,
                       DefaultValuedAttr<F64Attr, "-50.0">:$clamp_min,
                       DefaultValuedAttr<F64Attr, "0.0">:$clamp_max);
  let results = (outs MMRec_LogTensor:$result);
  let assemblyFormat =
      "$input attr-dict `:` type($input) `->` type($result)";
  let hasVerifier = 1;
}

def MMRec_ExpDecayOp : MMRec_Op<"exp_decay", [Pure]> {
  let summary = "γ = exp(ℓ): leaves log space";
  let description = [{
    The inverse of the log-space encoding: takes a tensor with a
    `#mmrec.logspace` encoding and returns `exp` of it as a plain tensor of
    the same shape and element type.

    ```mlir
    %g = mmrec.exp_decay %l
        : tensor<?x128xf32, #mmrec.logspace<min = -5.000000e+01, max = 0.000000e+00>>
        -> tensor<?x128xf32>
    ```
  }];
  let arguments = (ins MMRec_LogTensor:$input);
  let results = (outs MMRec_LogTensor:$result);
  let assemblyFormat =
      "$input attr-dict `:` type($input) `->` type($result)";
  let hasVerifier = 1;
}

//===----------------------------------------------------------------------===//
// Matrix products, embedding, loss
//===----------------------------------------------------------------------===//

def MMRec_MatmulOp : MMRec_Op<"matmul", [Pure]> {
  let summary = "x·W (+ bias): a product that the runtime maps to cuBLASLt or BLAS";
  let description = [{
    Multiplies the last axis of `lhs` (any number of leading batch axes) by
    the 2-D `rhs`: `result[..., n] = Σ_k lhs[..., k] · rhs[k, n] (+ bias[n])`.
    With `transpose_rhs`, `rhs` is read as (N, K) — the tied LM head uses the
    embedding table this way. Products with a weight go to cuBLASLt on GPUs
    (bf16 operands, fp32 accumulation) and to BLAS on CPUs; inside a
    `mmrec.recurrence` region it is the state-times-weight product.

    ```mlir
    %q = mmrec.matmul %u, %W_q : tensor<?x?x128xf32>, tensor<128x128xf32>
        -> tensor<?x?x128xf32>
    %p = mmrec.matmul %h, %W_g bias %b_g
        : tensor<?x128xf32>, tensor<128x128xf32>, tensor<128xf32> -> tensor<?x128xf32>
    %logits = mmrec.matmul %xf, %E {transpose_rhs}
        : tensor<?x?x128xf32>, tensor<256x128xf32> -> tensor<?x?x256xf32>
    ```
  }];
  let arguments = (ins MMRec_FloatTensor:$lhs, MMRec_FloatTensor:$rhs,
                       Optional<MMRec_FloatTensor>:$bias,
                       UnitAttr:$transpose_rhs);
  let results = (outs MMRec_FloatTensor:$result);
  let assemblyFormat = [{
    $lhs `,` $rhs (`bias` $bias^)? attr-dict `:` type($lhs) `,` type($rhs)
    (`,` type($bias)^)? `->` type($result)
  }];
  let hasVerifier = 1;
}

def MMRec_BlockDiagMatmulOp : MMRec_Op<"block_diag_matmul", [Pure]> {
  let summary = "x·blockdiag(W_1..W_H): the per-head state-times-weight product";
  let description = [{
    `rhs` holds H blocks of (dh × dh); the last axis of `lhs` (size H·dh) is
    split into H heads and head i is multiplied by block i. This is W_g for
    `gate = per_head`.

    ```mlir
    %p = mmrec.block_diag_matmul %h, %W_g bias %b_g
        : tensor<?x128xf32>, tensor<4x32x32xf32>, tensor<128xf32> -> tensor<?x128xf32>
    ```
  }];
  let arguments = (ins MMRec_FloatTensor:$lhs, MMRec_FloatTensor:$rhs,
                       Optional<MMRec_FloatTensor>:$bias);
  let results = (outs MMRec_FloatTensor:$result);
  let assemblyFormat = [{
    $lhs `,` $rhs (`bias` $bias^)? attr-dict `:` type($lhs) `,` type($rhs)
    (`,` type($bias)^)? `->` type($result)
  }];
  let hasVerifier = 1;
}

def MMRec_EmbeddingOp : MMRec_Op<"embedding", [Pure]> {
  let summary = "Row gather: result[b, t] = table[ids[b, t]]";
  let description = [{
    ```mlir
    %x = mmrec.embedding %E[%tokens] : tensor<256x128xf32>, tensor<?x?xi32>
        -> tensor<?x?x128xf32>
    ```
  }];
  let arguments = (ins MMRec_FloatTensor:$table, MMRec_IndexTensor:$ids);
  let results = (outs MMRec_FloatTensor:$result);
  let assemblyFormat = [{
    $table `[` $ids `]` attr-dict `:` type($table) `,` type($ids) `->` type($result)
  }];
  let hasVerifier = 1;
}

def MMRec_CrossEntropyOp : MMRec_Op<"cross_entropy", [Pure]> {
  let summary = "Mean cross-entropy of logits against integer targets";
  let description = [{
    `loss = mean_{b,t} (logsumexp(logits[b,t,:]) - logits[b,t,targets[b,t]])`,
    accumulated in fp32 or wider whatever the logits' type.

    ```mlir
    %loss = mmrec.cross_entropy %logits, %targets
        : tensor<?x?x256xf32>, tensor<?x?xi32> -> tensor<f32>
    ```
  }];
  let arguments = (ins MMRec_FloatTensor:$logits, MMRec_IndexTensor:$targets);
  let results = (outs 0DTensorOf<[F32, F64]>:$loss);
  let assemblyFormat = [{
    $logits `,` $targets attr-dict `:` type($logits) `,` type($targets) `->` type($loss)
  }];
  let hasVerifier = 1;
}

//===----------------------------------------------------------------------===//
// Recurrences
//===----------------------------------------------------------------------===//

def MMRec_RecurrenceOp : MMRec_Op<"recurrence", [
    AttrSizedOperandSegments, AttrSizedResultSegments,
    SingleBlockImplicitTerminator<"YieldOp">,
    RecursiveMemoryEffects]> {
  let summary = "A general recurrence over the sequence axis, written per step";
  let description = [{
    Runs its region once per time step t of the sequence axis (axis 1 of
    every input, which are (B, T, ...)). The region's block arguments are the
    step-t slices of the `ins` (axis 1 removed) followed by the carried
    states; `mmrec.yield` gives the next states. `init` gives the states
    before the first step (h_{-1}). The results are, for every carried
    state, the sequence of its values after each step (B, T, ...) and then
    its final value. With `reverse`, steps run from t = T-1 down to 0.

    Values defined above (weights such as W_g) may be used inside the region.
    The region may hold elementwise `arith`/`math`/`mmrec` ops and
    `mmrec.matmul` / `mmrec.block_diag_matmul` of a state by a weight.
    The compiler classifies a recurrence whose step is affine in its state
    into a `mmrec.scan`; the others are lowered as sequential kernels.

    The seed's core formula, `h_t = z_t ⊙ σ(h_{t-1}·W_g + b_g) + γ_t ⊙ h_{t-1}`:

    ```mlir
    %hs, %hT = mmrec.recurrence ins(%z, %gamma : tensor<?x?x128xf32>, tensor<?x?x128xf32>)
        init(%h0 : tensor<?x128xf32>) -> (tensor<?x?x128xf32>), (tensor<?x128xf32>) {
    ^bb0(%zt: tensor<?x128xf32>, %gt: tensor<?x128xf32>, %h: tensor<?x128xf32>):
      %p = mmrec.matmul %h, %W_g bias %b_g
          : tensor<?x128xf32>, tensor<128x128xf32>, tensor<128xf32> -> tensor<?x128xf32>
      %s = mmrec.sigmoid %p : tensor<?x128xf32>
      %a = arith.mulf %zt, %s : tensor<?x128xf32>
      %b = arith.mulf %gt, %h : tensor<?x128xf32>
      %hn = arith.addf %a, %b : tensor<?x128xf32>
      mmrec.yield %hn : tensor<?x128xf32>
    }
    ```
  }];
  let arguments = (ins Variadic<RankedTensorOf<[AnyType]>>:$inputs,
                       Variadic<MMRec_FloatTensor>:$inits,
                       UnitAttr:$reverse);
  let results = (outs Variadic<MMRec_FloatTensor>:$sequences,
                      Variadic<MMRec_FloatTensor>:$finals);
  let regions = (region SizedRegion<1>:$body);
  let assemblyFormat = [{
    (`reverse` $reverse^)? `ins` `(` $inputs `:` type($inputs) `)`
    `init` `(` $inits `:` type($inits) `)` attr-dict
    `->` `(` type($sequences) `)` `,` `(` type($finals) `)` $body
  }];
  let hasVerifier = 1;
  let hasRegionVerifier = 1;
  let extraClassDeclaration = [{
    /// Number of carried states.
    unsigned getNumStates() { return getInits().size(); }
    /// Block argument of the step-t slice of input `i`.
    ::mlir::BlockArgument getInputArg(unsigned i) { return getBody().getArgument(i); }
    /// Block argument of carried state `i` (its value at step t-1).
    ::mlir::BlockArgument getStateArg(unsigned i) {
      return getBody().getArgument(getInputs().size() + i);
    }
    /// The yield terminator.
    YieldOp getYield();
  }];
}

def MMRec_YieldOp : MMRec_Op<"yield", [Pure, Terminator, ReturnLike,
    HasParent<"RecurrenceOp">]> {
  let summary = "Yields the next carried states of a mmrec.recurrence step";
  let description = [{
    ```mlir
    mmrec.yield %h_next : tensor<?x128xf32>
    ```
  }];
  let arguments = (ins Variadic<AnyType>:$values);
  let assemblyFormat = "($values^ `:` type($values))? attr-dict";
  let builders = [OpBuilder<(ins), [{ /* nothing */ }]>];
}

def MMRec_ScanOp : MMRec_Op<"scan", [Pure]> {
  let summary = "Log-space linear scan h_t = exp(ℓ_t)·h_{t-1} + b_t";
  let description = [{
    A first-order linear recurrence along axis 1, the decay given in log
    space: `h_t = exp(clamp(ℓ_t, clamp_min, clamp_max)) ⊙ h_{t-1} + b_t`,
    `h_{-1} = init` (zeros when absent). `log_decay` is fp32 (or f64) and
    always clamped; `b` and the states may be bf16, f16, f32 or f64 (the
    state is accumulated in fp32 or wider whatever the I/O type).

    `log_decay` has shape (B, T, S...) and `b` has shape (B, T, S..., E...):
    when `b` has more axes, the decay is broadcast over the trailing ones
    (MMREC_SPEC level 2: one decay per memory slot, shared by its d_m
    channels). Results: every `h_t` (the shape of `b`) and the final state
    (the shape of `b` without axis 1). With `reverse`, the scan runs from
    t = T-1 down to 0 and the final state is h_0.

    With `gate_logits`, the first operand holds gate logits x instead of ℓ,
    and the decay is computed in the kernel: `ℓ = clamp(log σ(x))` with
    `log σ(x) = −softplus(−x)` (what `mmrec-fuse-scan-producers` makes of a
    `mmrec.log_decay` feeding the scan).

    ```mlir
    %h, %hT = mmrec.scan %l, %b init %h0
        : tensor<8x2048x4096xf32, #mmrec.logspace<min = -5.000000e+01, max = 0.000000e+00>>,
          tensor<8x2048x4096xbf16>, tensor<8x4096xbf16>
        -> tensor<8x2048x4096xbf16>, tensor<8x4096xbf16>
    ```
  }];
  let arguments = (ins MMRec_LogTensor:$log_decay, MMRec_FloatTensor:$b,
                       Optional<MMRec_FloatTensor>:$init,
                       DefaultValuedAttr<F64Attr, "-50.0">:$clamp_min,
                       DefaultValuedAttr<F64Attr, "0.0">:$clamp_max,
                       UnitAttr:$reverse, UnitAttr:$gate_logits);
  let results = (outs MMRec_FloatTensor:$h, MMRec_FloatTensor:$final);
  let assemblyFormat = [{
    (`reverse` $reverse^)? $log_decay `,` $b (`init` $init^)? attr-dict `:`
    type($log_decay) `,` type($b) (`,` type($init)^)? `->` type($h) `,` type($final)
  }];
  let hasVerifier = 1;
}

def MMRec_ScanGradOp : MMRec_Op<"scan_grad", [Pure]> {
  let summary = "The exact adjoint of a mmrec.scan";
  let description = [{
    Given the forward's `log_decay`, its states `h`, its `init` (when it had
    one), the cotangent `grad_h` of every state and `grad_final` of the
    final state, computes the gradients of the forward's inputs. With
    `g_t = dL/dh_t` accumulated against the forward's direction,
    `g_t = grad_h_t + γ_{next(t)} · g_{next(t)}` (`g` at the forward's last
    step starts from `grad_final`), and
    ```
    grad_b_t         = g_t
    grad_log_decay_t = g_t · γ_t · h_{prev(t)}   (0 where the clamp is active)
    grad_init        = γ_first · g_first
    ```
    where `γ_t = exp(clamp(ℓ_t))`, `prev`/`next` follow the forward's order
    and `h_{prev(first)} = init` (zeros when absent). With `gate_logits` the
    first operand holds the gate logits x of the forward and the first
    result is the gradient with respect to x: `grad_ℓ · σ(−x)` (zero where
    the clamp is active). It is produced by the
    `mmrec-scan-adjoint` pass and lowered into one fused reverse kernel.

    ```mlir
    %dl, %db, %dh0 = mmrec.scan_grad %l, %h, %dh, %dfinal init %h0
        : tensor<8x2048x4096xf32>, tensor<8x2048x4096xf32>, tensor<8x2048x4096xf32>,
          tensor<8x4096xf32>, tensor<8x4096xf32>
        -> tensor<8x2048x4096xf32>, tensor<8x2048x4096xf32>, tensor<8x4096xf32>
    ```
  }];
  let arguments = (ins MMRec_LogTensor:$log_decay, MMRec_FloatTensor:$h,
                       Optional<MMRec_FloatTensor>:$init,
                       MMRec_FloatTensor:$grad_h, MMRec_FloatTensor:$grad_final,
                       DefaultValuedAttr<F64Attr, "-50.0">:$clamp_min,
                       DefaultValuedAttr<F64Attr, "0.0">:$clamp_max,
                       UnitAttr:$reverse, UnitAttr:$gate_logits);
  let results = (outs MMRec_LogTensor:$grad_log_decay, MMRec_FloatTensor:$grad_b,
                      Optional<MMRec_FloatTensor>:$grad_init);
  let assemblyFormat = [{
    (`reverse` $reverse^)? $log_decay `,` $h `,` $grad_h `,` $grad_final (`init` $init^)?
    attr-dict `:` type($log_decay) `,` type($h) `,` type($grad_h) `,` type($grad_final)
    (`,` type($init)^)? `->` type($grad_log_decay) `,` type($grad_b) (`,` type($grad_init)^)?
  }];
  let hasVerifier = 1;
}

def MMRec_GatedRecurrenceOp : MMRec_Op<"gated_recurrence", [Pure]> {
  let summary = "The level-0 nonlinear recurrence h_t = z_t·σ(h_{t-1}·W_g + b_g) + γ_t·h_{t-1}";
  let description = [{
    MMREC_SPEC level 0, sequential along axis 1:
    ```
    h_t = z_t ⊙ σ(h_{t-1}·W_g + b_g) + exp(clamp(ℓ_t)) ⊙ h_{t-1},   h_{-1} = init (zeros when absent)
    ```
    `z` is (B, T, D); `log_decay` is the fp32 log-space decay ℓ (B, T, D);
    `gate` is W_g: (D, D) for the dense gate, or (H, dh, dh) with H·dh = D
    for the per-head gate (block-diagonal W_g; head i maps channels
    [i·dh, (i+1)·dh)); `bias` is b_g (D). `z`, `gate`, `bias` and the states
    share one element type (bf16, f16, f32 or f64); the state is
    accumulated in fp32 or wider whatever the I/O type. Results: every h_t
    and the final state h_{T-1}.

    `mmrec-classify-recurrences` rewrites an `mmrec.recurrence` of this
    form into this op; `mmrec-outline-scan-kernels` lowers it to a
    persistent kernel that keeps W_g on chip for the whole sequence.

    ```mlir
    %h, %hT = mmrec.gated_recurrence %z, %l, %W, %b init %h0
        : tensor<8x2048x4096xbf16>, tensor<8x2048x4096xf32>, tensor<32x128x128xbf16>,
          tensor<4096xbf16>, tensor<8x4096xbf16> -> tensor<8x2048x4096xbf16>, tensor<8x4096xbf16>
    ```
  }];
  let arguments = (ins MMRec_FloatTensor:$z, MMRec_LogTensor:$log_decay,
                       MMRec_FloatTensor:$gate, MMRec_FloatTensor:$bias,
                       Optional<MMRec_FloatTensor>:$init,
                       DefaultValuedAttr<F64Attr, "-50.0">:$clamp_min,
                       DefaultValuedAttr<F64Attr, "0.0">:$clamp_max);
  let results = (outs MMRec_FloatTensor:$h, MMRec_FloatTensor:$final);
  let assemblyFormat = [{
    $z `,` $log_decay `,` $gate `,` $bias (`init` $init^)? attr-dict `:`
    type($z) `,` type($log_decay) `,` type($gate) `,` type($bias) (`,` type($init)^)?
    `->` type($h) `,` type($final)
  }];
  let hasVerifier = 1;
}

def MMRec_GatedRecurrenceGradOp : MMRec_Op<"gated_recurrence_grad", [Pure]> {
  let summary = "The exact adjoint of a mmrec.gated_recurrence";
  let description = [{
    Given the forward's inputs, its states `h`, the cotangents `grad_h` of
    every state and `grad_final` of the final state, back-propagates through
    every step (no truncation). With s_t = σ(h_{t-1}·W_g + b_g),
    γ_t = exp(clamp(ℓ_t)) and g_t = dL/dh_t (g_{T-1} = grad_h_{T-1} + grad_final):
    ```
    a_t             = g_t ⊙ z_t ⊙ s_t ⊙ (1 − s_t)                (dL/d pre-activation)
    g_{t-1}         = grad_h_{t-1} + γ_t ⊙ g_t + a_t·W_gᵀ
    grad_z_t        = g_t ⊙ s_t
    grad_log_decay_t = g_t ⊙ γ_t ⊙ h_{t-1}     (0 where the clamp is active)
    grad_gate       = Σ_t h_{t-1}ᵀ·a_t   (per head for the per-head gate)
    grad_bias       = Σ_t a_t
    grad_init       = the g_{-1} that the recursion yields
    ```
    The reverse kernel recomputes s_t from the stored states (nothing but
    `h` is kept from the forward); the two reductions over t are matrix
    products and go to cuBLASLt / BLAS.

    ```mlir
    %dz, %dl, %dW, %db, %dh0 = mmrec.gated_recurrence_grad %z, %l, %W, %b, %h, %dh, %dhT init %h0
        : tensor<?x?x64xf32>, tensor<?x?x64xf32>, tensor<64x64xf32>, tensor<64xf32>,
          tensor<?x?x64xf32>, tensor<?x?x64xf32>, tensor<?x64xf32>, tensor<?x64xf32>
        -> tensor<?x?x64xf32>, tensor<?x?x64xf32>, tensor<64x64xf32>, tensor<64xf32>, tensor<?x64xf32>
    ```
  }];
  let arguments = (ins MMRec_FloatTensor:$z, MMRec_LogTensor:$log_decay,
                       MMRec_FloatTensor:$gate, MMRec_FloatTensor:$bias,
                       MMRec_FloatTensor:$h, MMRec_FloatTensor:$grad_h,
                       MMRec_FloatTensor:$grad_final,
                       Optional<MMRec_FloatTensor>:$init,
                       DefaultValuedAttr<F64Attr, "-50.0">:$clamp_min,
                       DefaultValuedAttr<F64Attr, "0.0">:$clamp_max);
  let results = (outs MMRec_FloatTensor:$grad_z, MMRec_LogTensor:$grad_log_decay,
                      MMRec_FloatTensor:$grad_gate, MMRec_FloatTensor:$grad_bias,
                      Optional<MMRec_FloatTensor>:$grad_init);
  let assemblyFormat = [{
    $z `,` $log_decay `,` $gate `,` $bias `,` $h `,` $grad_h `,` $grad_final (`init` $init^)?
    attr-dict `:` type($z) `,` type($log_decay) `,` type($gate) `,` type($bias) `,`
    type($h) `,` type($grad_h) `,` type($grad_final) (`,` type($init)^)?
    `->` type($grad_z) `,` type($grad_log_decay) `,` type($grad_gate) `,` type($grad_bias)
    (`,` type($grad_init)^)?
  }];
  let hasVerifier = 1;
}

//===----------------------------------------------------------------------===//
// The memory hierarchy
//===----------------------------------------------------------------------===//

def MMRec_ChunkMeanOp : MMRec_Op<"chunk_mean", [Pure]> {
  let summary = "HDS level 1 summaries: the mean of each chunk of C tokens";
  let description = [{
    For (B, T, D) input, returns (B, ⌈T/C⌉, D) where row c is the mean of
    tokens [c·C, min((c+1)·C, T)). The last chunk may be partial: it is the
    mean over its present tokens. K1 and V1 of MMREC_SPEC level 1.

    ```mlir
    %K1 = mmrec.chunk_mean %k {chunk = 16 : i64} : tensor<?x256x128xf32> -> tensor<?x16x128xf32>
    ```
  }];
  let arguments = (ins MMRec_FloatTensor:$input,
                       ConfinedAttr<I64Attr, [IntPositive]>:$chunk);
  let results = (outs MMRec_FloatTensor:$result);
  let assemblyFormat = "$input attr-dict `:` type($input) `->` type($result)";
  let hasVerifier = 1;
}

def MMRec_ChunkAttendOp : MMRec_Op<"chunk_attend", [Pure]> {
  let summary = "HDS level 1 read: causal softmax attention over completed chunks";
  let description = [{
    Per group g of d_m = D/groups channels:
    `y1_t = Σ_{c < c(t)} softmax_c(q_t·K1_c / √d_m) · V1_c`, with
    `c(t) = ⌊t / chunk⌋` and `y1_t = 0` in chunk 0. Only completed earlier
    chunks are visible. Lowerings use an online softmax so that the
    (T × T/C) score matrix never reaches memory.

    ```mlir
    %y1 = mmrec.chunk_attend %q, %K1, %V1 {chunk = 16 : i64, groups = 2 : i64}
        : tensor<?x?x128xf32>, tensor<?x?x128xf32>, tensor<?x?x128xf32> -> tensor<?x?x128xf32>
    ```
  }];
  let arguments = (ins MMRec_FloatTensor:$q, MMRec_FloatTensor:$keys,
                       MMRec_FloatTensor:$values,
                       ConfinedAttr<I64Attr, [IntPositive]>:$chunk,
                       ConfinedAttr<I64Attr, [IntPositive]>:$groups);
  let results = (outs MMRec_FloatTensor:$result);
  let assemblyFormat = [{
    $q `,` $keys `,` $values attr-dict `:` type($q) `,` type($keys) `,`
    type($values) `->` type($result)
  }];
  let hasVerifier = 1;
}

def MMRec_MDIWriteOp : MMRec_Op<"mdi_write", [Pure]> {
  let summary = "HDS level 2 write: per-chunk slot decays (log space) and written values";
  let description = [{
    For each memory group m (N_m groups of d_m channels), with slot keys
    `S[m]` (M × d_m) and decay logits `μ[m]` (M):
    ```
    w_{t,s}    = softmax_s(k_t·S_s / √d_m)
    n_{c,s}    = Σ_{t∈c} w_{t,s}
    U_{c,s}    = Σ_{t∈c} w_{t,s} v_t / max(n_{c,s}, 1e-6)
    logβ_{c,s} = clamp(n_{c,s} · logσ(μ_s), clamp_min, 0)
    ```
    Results: `logβ` (B, ⌈T/C⌉, N_m, M) in log space, and the scan input
    `(1 − β) ⊙ U` (B, ⌈T/C⌉, N_m, M, d_m). The memory recurrence
    `Mem_c = β ⊙ Mem_{c-1} + (1 − β) ⊙ U` is then a `mmrec.scan` over the
    chunk axis with the decay broadcast over d_m.

    ```mlir
    %lb, %wu = mmrec.mdi_write %k, %v, %S, %mu {chunk = 16 : i64}
        : tensor<?x?x128xf32>, tensor<?x?x128xf32>, tensor<2x32x64xf32>, tensor<2x32xf32>
        -> tensor<?x?x2x32xf32, #mmrec.logspace<min = -5.000000e+01, max = 0.000000e+00>>,
           tensor<?x?x2x32x64xf32>
    ```
  }];
  let arguments = (ins MMRec_FloatTensor:$k, MMRec_FloatTensor:$v,
                       MMRec_FloatTensor:$slots, MMRec_FloatTensor:$decay_logits,
                       ConfinedAttr<I64Attr, [IntPositive]>:$chunk,
                       DefaultValuedAttr<F64Attr, "-50.0">:$clamp_min);
  let results = (outs MMRec_LogTensor:$log_beta, MMRec_FloatTensor:$update);
  let assemblyFormat = [{
    $k `,` $v `,` $slots `,` $decay_logits attr-dict `:` type($k) `,` type($v)
    `,` type($slots) `,` type($decay_logits) `->` type($log_beta) `,` type($update)
  }];
  let hasVerifier = 1;
}

def MMRec_MDIReadOp : MMRec_Op<"mdi_read", [Pure]> {
  let summary = "HDS level 2 read: O(M) read of the memory as it stood before the chunk";
  let description = [{
    `a_{t,s} = softmax_s(q_t·S_s / √d_m)`, `y2_t = Σ_s a_{t,s} · Mem_{c(t)-1}[s]`
    per memory group, where `memory` holds Mem_c after each chunk
    (B, ⌈T/C⌉, N_m, M, d_m) and `init` is Mem_{-1} (B, N_m, M, d_m).
    A token never reads the memory written by its own or a later chunk.

    ```mlir
    %y2 = mmrec.mdi_read %q, %S, %mems, %mem0 {chunk = 16 : i64}
        : tensor<?x?x128xf32>, tensor<2x32x64xf32>, tensor<?x?x2x32x64xf32>,
          tensor<?x2x32x64xf32> -> tensor<?x?x128xf32>
    ```
  }];
  let arguments = (ins MMRec_FloatTensor:$q, MMRec_FloatTensor:$slots,
                       MMRec_FloatTensor:$memory, MMRec_FloatTensor:$init,
                       ConfinedAttr<I64Attr, [IntPositive]>:$chunk);
  let results = (outs MMRec_FloatTensor:$result);
  let assemblyFormat = [{
    $q `,` $slots `,` $memory `,` $init attr-dict `:` type($q) `,` type($slots)
    `,` type($memory) `,` type($init) `->` type($result)
  }];
  let hasVerifier = 1;
}

def MMRec_HDSCombineOp : MMRec_Op<"hds_combine", [Pure]> {
  let summary = "o = ω_0·level0 + ω_1·level1 + ω_2·level2 with ω = softmax(ρ) per group";
  let description = [{
    `ρ` is (N_m, 3); for the channels of memory group m,
    `o = ω_{m,0}·l0 + ω_{m,1}·l1 + ω_{m,2}·l2` with `ω_m = softmax(ρ_m)`.
    `l0` is GroupRMSNorm(h).

    ```mlir
    %o = mmrec.hds_combine %hn, %y1, %y2, %rho
        : tensor<?x?x128xf32>, tensor<?x?x128xf32>, tensor<?x?x128xf32>, tensor<2x3xf32>
        -> tensor<?x?x128xf32>
    ```
  }];
  let arguments = (ins MMRec_FloatTensor:$level0, MMRec_FloatTensor:$level1,
                       MMRec_FloatTensor:$level2, MMRec_FloatTensor:$rho);
  let results = (outs MMRec_FloatTensor:$result);
  let assemblyFormat = [{
    $level0 `,` $level1 `,` $level2 `,` $rho attr-dict `:` type($level0) `,`
    type($level1) `,` type($level2) `,` type($rho) `->` type($result)
  }];
  let hasVerifier = 1;
}

#endif // MMREC_OPS_TD
