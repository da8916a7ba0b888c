//===- MMRecDialect.td - the mmrec dialect -----------------*- tablegen -*-===//
//
// The `mmrec` dialect describes gated recurrences and the memory hierarchy of
// the MM-Rec language model (../shared/MMREC_SPEC.md) at the tensor level.
//
//===----------------------------------------------------------------------===//

#ifndef MMREC_DIALECT_TD
#define MMREC_DIALECT_TD

include "mlir/IR/OpBase.td"
include "mlir/IR/AttrTypeBase.td"

def MMRec_Dialect : Dialect {
  let name = "mmrec";
  let cppNamespace = "::mlir::mmrec";
  let summary = "Gated recurrences, log-space scans and the MM-Rec memory hierarchy";
  let description = [{
    The `mmrec` dialect expresses one MM-Rec layer (MMREC_SPEC section 2) and
    the model around it at the tensor level:

    * `mmrec.recurrence` — a general recurrence written per time step, with
      carried states, for the nonlinear core `h_t = z_t ⊙ σ(h_{t-1}·W_g + b_g)
      + γ_t ⊙ h_{t-1}` and anything else a user writes;
    * `mmrec.scan` — the log-space linear scan `h_t = exp(ℓ_t)·h_{t-1} + b_t`
      that affine recurrences are classified into;
    * the memory hierarchy: `mmrec.chunk_mean` and `mmrec.chunk_attend`
      (HDS level 1), `mmrec.mdi_write` and `mmrec.mdi_read` (level 2, the
      slot-addressed long-term memory whose chunk-level recurrence is a
      `mmrec.scan`), and `mmrec.hds_combine`;
    * layer pieces: norms, SwiGLU, the decay gate, embedding, cross-entropy,
      and `mmrec.matmul` / `mmrec.block_diag_matmul`, which the runtime maps
      to cuBLASLt on GPUs and to BLAS on CPUs.

    Tensors that hold log-space decays carry the `#mmrec.logspace` encoding,
    so that passes know a value is `log γ` and what it is clamped to.
    The module attribute `mmrec.config` (a `#mmrec.config`) records the model
    configuration of MMREC_SPEC section 1.
  }];
  let useDefaultAttributePrinterParser = 1;
  let hasOperationAttrVerify = 1;
  let hasRegionArgAttrVerify = 1;
  let extraClassDeclaration = [{
    /// Name of the module attribute holding the model configuration.
    static constexpr ::llvm::StringLiteral getConfigAttrName() { return "mmrec.config"; }
    /// Name of the argument attribute naming a parameter tensor.
    static constexpr ::llvm::StringLiteral getParamAttrName() { return "mmrec.param"; }
  }];
}

class MMRec_Op<string mnemonic, list<Trait> traits = []>
    : Op<MMRec_Dialect, mnemonic, traits>;

class MMRec_Attr<string name, string attrMnemonic, list<Trait> traits = []>
    : AttrDef<MMRec_Dialect, name, traits> {
  let mnemonic = attrMnemonic;
}

#endif // MMREC_DIALECT_TD
