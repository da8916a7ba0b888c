//===- Passes.td - mmrec passes ----------------------------*- tablegen -*-===//
//
// Passes of the mmrec compiler, in alphabetical order. Pipelines that chain
// them are registered in lib/Transforms/Pipelines.cpp.
//
//===----------------------------------------------------------------------===//

#ifndef MMREC_PASSES_TD
#define MMREC_PASSES_TD

include "mlir/Pass/PassBase.td"

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
  ];
}

#endif // MMREC_PASSES_TD
