// The scans that the kernel tests (test/unit/ScanKernelTest.cpp) compile
// with mmrec-compile: every variant the generator distinguishes.
#ls = #mmrec.logspace<min = -50.0, max = 0.0>

// fp32, with an initial state, forward.
func.func @scan_f32(%l: tensor<?x?x?xf32, #ls>, %b: tensor<?x?x?xf32>, %h0: tensor<?x?xf32>)
    -> (tensor<?x?x?xf32>, tensor<?x?xf32>) {
  %h, %hT = mmrec.scan %l, %b init %h0
      : tensor<?x?x?xf32, #ls>, tensor<?x?x?xf32>, tensor<?x?xf32> -> tensor<?x?x?xf32>, tensor<?x?xf32>
  return %h, %hT : tensor<?x?x?xf32>, tensor<?x?xf32>
}

// fp32, no initial state, running from T-1 down to 0.
func.func @scan_f32_rev(%l: tensor<?x?x?xf32>, %b: tensor<?x?x?xf32>)
    -> (tensor<?x?x?xf32>, tensor<?x?xf32>) {
  %h, %hT = mmrec.scan reverse %l, %b
      : tensor<?x?x?xf32>, tensor<?x?x?xf32> -> tensor<?x?x?xf32>, tensor<?x?xf32>
  return %h, %hT : tensor<?x?x?xf32>, tensor<?x?xf32>
}

// bf16 I/O (fp32 decays and accumulation), with an initial state.
func.func @scan_bf16(%l: tensor<?x?x?xf32>, %b: tensor<?x?x?xbf16>, %h0: tensor<?x?xbf16>)
    -> (tensor<?x?x?xbf16>, tensor<?x?xbf16>) {
  %h, %hT = mmrec.scan %l, %b init %h0
      : tensor<?x?x?xf32>, tensor<?x?x?xbf16>, tensor<?x?xbf16> -> tensor<?x?x?xbf16>, tensor<?x?xbf16>
  return %h, %hT : tensor<?x?x?xbf16>, tensor<?x?xbf16>
}

// The level-2 memory form: one decay per slot, broadcast over 8 channels.
func.func @scan_slots(%l: tensor<?x?x3xf32>, %b: tensor<?x?x3x8xf32>, %m0: tensor<?x3x8xf32>)
    -> (tensor<?x?x3x8xf32>, tensor<?x3x8xf32>) {
  %h, %hT = mmrec.scan %l, %b init %m0
      : tensor<?x?x3xf32>, tensor<?x?x3x8xf32>, tensor<?x3x8xf32> -> tensor<?x?x3x8xf32>, tensor<?x3x8xf32>
  return %h, %hT : tensor<?x?x3x8xf32>, tensor<?x3x8xf32>
}

// The decay gate fused into the kernel (mmrec-fuse-scan-producers): the
// kernel reads the gate logits x and computes ℓ = clamp(log σ(x)); the
// adjoint returns the gradient with respect to x.
func.func @scan_gated(%x: tensor<?x?x?xf32>, %b: tensor<?x?x?xf32>, %h0: tensor<?x?xf32>)
    -> (tensor<?x?x?xf32>, tensor<?x?xf32>) {
  %l = mmrec.log_decay %x : tensor<?x?x?xf32> -> tensor<?x?x?xf32, #ls>
  %h, %hT = mmrec.scan %l, %b init %h0
      : tensor<?x?x?xf32, #ls>, tensor<?x?x?xf32>, tensor<?x?xf32> -> tensor<?x?x?xf32>, tensor<?x?xf32>
  return %h, %hT : tensor<?x?x?xf32>, tensor<?x?xf32>
}
