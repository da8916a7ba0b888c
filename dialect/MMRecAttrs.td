//===- MMRecAttrs.td - mmrec attributes --------------------*- tablegen -*-===//

#ifndef MMREC_ATTRS_TD
#define MMREC_ATTRS_TD

include "dialect/MMRecDialect.td"
include "mlir/IR/EnumAttr.td"
include "mlir/IR/TensorEncoding.td"

// A double held as an APFloat, written as a plain float literal.
class MMRec_F64Parameter<string desc> : APFloatParameter<desc> {
  let parser = [{ [&]() -> ::mlir::FailureOr<::llvm::APFloat> {
    double v;
    if ($_parser.parseFloat(v))
      return ::mlir::failure();
    return ::llvm::APFloat(v);
  }() }];
  let printer = [{ $_printer << ::mlir::mmrec::formatShortestDouble($_self.convertToDouble()) }];
}

def MMRec_GateKind : I32EnumAttr<"GateKind", "the shape of the recurrent weight W_g", [
    I32EnumAttrCase<"dense", 0>,
    I32EnumAttrCase<"per_head", 1>
  ]> {
  let cppNamespace = "::mlir::mmrec";
  let genSpecializedAttr = 0;
}

def MMRec_GateKindAttr : EnumAttr<MMRec_Dialect, MMRec_GateKind, "gate">;

def MMRec_LogSpaceAttr : MMRec_Attr<"LogSpace", "logspace",
    [DeclareAttrInterfaceMethods<VerifiableTensorEncoding>]> {
  let summary = "Tensor encoding: the elements are log-space decays log γ";
  let description = [{
    Marks a tensor whose elements are logarithms of decays, `ℓ = log γ`, held
    in fp32 or wider and clamped to `[min, max]` (MMREC_SPEC section 5). Passes
    use it to know that a value is in log space: cumulative products of decays
    become clamped running sums, never products that under- or overflow.

    ```mlir
    tensor<?x?x128xf32, #mmrec.logspace<min = -5.000000e+01, max = 0.000000e+00>>
    ```
  }];
  let parameters = (ins MMRec_F64Parameter<"lower clamp bound">:$min,
                        MMRec_F64Parameter<"upper clamp bound">:$max);
  let assemblyFormat = "`<` struct(params) `>`";
  let genVerifyDecl = 1;
  let extraClassDeclaration = [{
    double getMinValue() const { return getMin().convertToDouble(); }
    double getMaxValue() const { return getMax().convertToDouble(); }
  }];
}

def MMRec_ConfigAttr : MMRec_Attr<"Config", "config"> {
  let summary = "A model configuration (MMREC_SPEC section 1)";
  let description = [{
    The configuration fields of MMREC_SPEC section 1. Attached to a model's
    module as `mmrec.config`; the verifier checks the fields against each
    other (D divisible by the heads and by the memories, and so on) and the
    parameter-count pass checks the model function against them.

    ```mlir
    module attributes {mmrec.config = #mmrec.config<name = "mmrec-tiny",
        vocab_size = 256, hidden_dim = 128, num_layers = 2, num_heads = 4,
        num_memories = 2, memory_size = 32, ffn_dim = 384, chunk_size = 16,
        max_seq_len = 256, decay_rank = 16, gate = dense, decay_init = 0.99,
        log_clamp_min = -50.0, log_clamp_max = 0.0, norm_eps = 1.0e-6,
        tie_embeddings = true>} {}
    ```
  }];
  let parameters = (ins
    StringRefParameter<"model name">:$name,
    "int64_t":$vocab_size,
    "int64_t":$hidden_dim,
    "int64_t":$num_layers,
    "int64_t":$num_heads,
    "int64_t":$num_memories,
    "int64_t":$memory_size,
    "int64_t":$ffn_dim,
    "int64_t":$chunk_size,
    "int64_t":$max_seq_len,
    "int64_t":$decay_rank,
    "::mlir::mmrec::GateKind":$gate,
    MMRec_F64Parameter<"initial decay">:$decay_init,
    MMRec_F64Parameter<"lower log clamp">:$log_clamp_min,
    MMRec_F64Parameter<"upper log clamp">:$log_clamp_max,
    MMRec_F64Parameter<"RMSNorm epsilon">:$norm_eps,
    "bool":$tie_embeddings
  );
  let assemblyFormat = "`<` struct(params) `>`";
  let genVerifyDecl = 1;
  let extraClassDeclaration = [{
    int64_t getMemDim() const { return getHiddenDim() / getNumMemories(); }
    int64_t getHeadDim() const { return getHiddenDim() / getNumHeads(); }
    /// Parameters of one layer, by the formula of MMREC_SPEC section 6.
    int64_t getLayerParamCount() const;
    /// Parameters of the whole model, by the formula of MMREC_SPEC section 6.
    int64_t getParamCount() const;
  }];
}

#endif // MMREC_ATTRS_TD
