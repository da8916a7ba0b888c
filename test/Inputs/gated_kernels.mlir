// The gated recurrences that the kernel tests (test/unit/GatedKernelTest.cpp)
// compile with mmrec-compile; mmrec-scan-adjoint adds each one's @..._grad.
#ls = #mmrec.logspace<min = -50.0, max = 0.0>
#ls8 = #mmrec.logspace<min = -8.0, max = 0.0>

// Dense W_g (D x D), fp32, with an initial state; D = 48 is not a multiple of 32.
func.func @gated_dense(%z: tensor<?x?x48xf32>, %l: tensor<?x?x48xf32, #ls>, %W: tensor<48x48xf32>,
                       %bg: tensor<48xf32>, %h0: tensor<?x48xf32>)
    -> (tensor<?x?x48xf32>, tensor<?x48xf32>) {
  %h, %hT = mmrec.gated_recurrence %z, %l, %W, %bg init %h0
      : tensor<?x?x48xf32>, tensor<?x?x48xf32, #ls>, tensor<48x48xf32>, tensor<48xf32>, tensor<?x48xf32>
      -> tensor<?x?x48xf32>, tensor<?x48xf32>
  return %h, %hT : tensor<?x?x48xf32>, tensor<?x48xf32>
}

// Per-head W_g (3 heads of 64), fp32, no initial state, tighter clamp.
func.func @gated_heads(%z: tensor<?x?x192xf32>, %l: tensor<?x?x192xf32, #ls8>, %W: tensor<3x64x64xf32>,
                       %bg: tensor<192xf32>)
    -> (tensor<?x?x192xf32>, tensor<?x192xf32>) {
  %h, %hT = mmrec.gated_recurrence %z, %l, %W, %bg {clamp_min = -8.0 : f64}
      : tensor<?x?x192xf32>, tensor<?x?x192xf32, #ls8>, tensor<3x64x64xf32>, tensor<192xf32>
      -> tensor<?x?x192xf32>, tensor<?x192xf32>
  return %h, %hT : tensor<?x?x192xf32>, tensor<?x192xf32>
}

// Per-head, bf16 I/O (fp32 state and decays), with an initial state; odd head size 33.
func.func @gated_bf16(%z: tensor<?x?x66xbf16>, %l: tensor<?x?x66xf32, #ls>, %W: tensor<2x33x33xbf16>,
                      %bg: tensor<66xbf16>, %h0: tensor<?x66xbf16>)
    -> (tensor<?x?x66xbf16>, tensor<?x66xbf16>) {
  %h, %hT = mmrec.gated_recurrence %z, %l, %W, %bg init %h0
      : tensor<?x?x66xbf16>, tensor<?x?x66xf32, #ls>, tensor<2x33x33xbf16>, tensor<66xbf16>, tensor<?x66xbf16>
      -> tensor<?x?x66xbf16>, tensor<?x66xbf16>
  return %h, %hT : tensor<?x?x66xbf16>, tensor<?x66xbf16>
}

// Dense W_g too large for one block's shared memory (D = 320, fp32, with an
// initial state): the GPU gets the cooperative kernel.
func.func @gated_wide(%z: tensor<?x?x320xf32>, %l: tensor<?x?x320xf32, #ls>, %W: tensor<320x320xf32>,
                      %bg: tensor<320xf32>, %h0: tensor<?x320xf32>)
    -> (tensor<?x?x320xf32>, tensor<?x320xf32>) {
  %h, %hT = mmrec.gated_recurrence %z, %l, %W, %bg init %h0
      : tensor<?x?x320xf32>, tensor<?x?x320xf32, #ls>, tensor<320x320xf32>, tensor<320xf32>, tensor<?x320xf32>
      -> tensor<?x?x320xf32>, tensor<?x320xf32>
  return %h, %hT : tensor<?x?x320xf32>, tensor<?x320xf32>
}

// The 7B model's dense gate: D = 4096, bf16 I/O, no initial state.
func.func @gated_7b(%z: tensor<?x?x4096xbf16>, %l: tensor<?x?x4096xf32, #ls>, %W: tensor<4096x4096xbf16>,
                    %bg: tensor<4096xbf16>)
    -> (tensor<?x?x4096xbf16>, tensor<?x4096xbf16>) {
  %h, %hT = mmrec.gated_recurrence %z, %l, %W, %bg
      : tensor<?x?x4096xbf16>, tensor<?x?x4096xf32, #ls>, tensor<4096x4096xbf16>, tensor<4096xbf16>
      -> tensor<?x?x4096xbf16>, tensor<?x4096xbf16>
  return %h, %hT : tensor<?x?x4096xbf16>, tensor<?x4096xbf16>
}

// Per-head at the issue's head size: 4 heads of 128 (D = 512), fp32, with an
// initial state.
func.func @gated_h128(%z: tensor<?x?x512xf32>, %l: tensor<?x?x512xf32, #ls>, %W: tensor<4x128x128xf32>,
                      %bg: tensor<512xf32>, %h0: tensor<?x512xf32>)
    -> (tensor<?x?x512xf32>, tensor<?x512xf32>) {
  %h, %hT = mmrec.gated_recurrence %z, %l, %W, %bg init %h0
      : tensor<?x?x512xf32>, tensor<?x?x512xf32, #ls>, tensor<4x128x128xf32>, tensor<512xf32>, tensor<?x512xf32>
      -> tensor<?x?x512xf32>, tensor<?x512xf32>
  return %h, %hT : tensor<?x?x512xf32>, tensor<?x512xf32>
}

// mmrec-small's dense gate (D = 768), bf16 with an initial state: the
// cooperative kernel with the tensor-core forward.
func.func @gated_768(%z: tensor<?x?x768xbf16>, %l: tensor<?x?x768xf32, #ls>, %W: tensor<768x768xbf16>,
                     %bg: tensor<768xbf16>, %h0: tensor<?x768xbf16>)
    -> (tensor<?x?x768xbf16>, tensor<?x768xbf16>) {
  %h, %hT = mmrec.gated_recurrence %z, %l, %W, %bg init %h0
      : tensor<?x?x768xbf16>, tensor<?x?x768xf32, #ls>, tensor<768x768xbf16>, tensor<768xbf16>, tensor<?x768xbf16>
      -> tensor<?x?x768xbf16>, tensor<?x768xbf16>
  return %h, %hT : tensor<?x?x768xbf16>, tensor<?x768xbf16>
}

// Per-head at the largest head size, dh = 256 (2 heads), bf16 with an
// initial state: W_g's block sits in shared memory as bf16.
func.func @gated_h256(%z: tensor<?x?x512xbf16>, %l: tensor<?x?x512xf32, #ls>, %W: tensor<2x256x256xbf16>,
                      %bg: tensor<512xbf16>, %h0: tensor<?x512xbf16>)
    -> (tensor<?x?x512xbf16>, tensor<?x512xbf16>) {
  %h, %hT = mmrec.gated_recurrence %z, %l, %W, %bg init %h0
      : tensor<?x?x512xbf16>, tensor<?x?x512xf32, #ls>, tensor<2x256x256xbf16>, tensor<512xbf16>, tensor<?x512xbf16>
      -> tensor<?x?x512xbf16>, tensor<?x512xbf16>
  return %h, %hT : tensor<?x?x512xbf16>, tensor<?x512xbf16>
}
