// The gated recurrences that bench/gated_bench.cpp times on the GPU: the
// issue's per-head point (H32 x dh128, bf16 I/O) and the tiny/small models'
// dense gate sizes that fit one block (D = 128). mmrec-scan-adjoint adds
// each function's @..._grad.
#ls = #mmrec.logspace<min = -50.0, max = 0.0>

func.func @heads_bf16(%z: tensor<?x?x4096xbf16>, %l: tensor<?x?x4096xf32, #ls>, %W: tensor<32x128x128xbf16>,
                      %bg: tensor<4096xbf16>, %h0: tensor<?x4096xbf16>)
    -> (tensor<?x?x4096xbf16>, tensor<?x4096xbf16>) {
  %h, %hT = mmrec.gated_recurrence %z, %l, %W, %bg init %h0
      : tensor<?x?x4096xbf16>, tensor<?x?x4096xf32, #ls>, tensor<32x128x128xbf16>, tensor<4096xbf16>, tensor<?x4096xbf16>
      -> tensor<?x?x4096xbf16>, tensor<?x4096xbf16>
  return %h, %hT : tensor<?x?x4096xbf16>, tensor<?x4096xbf16>
}

func.func @heads_f32(%z: tensor<?x?x4096xf32>, %l: tensor<?x?x4096xf32, #ls>, %W: tensor<32x128x128xf32>,
                     %bg: tensor<4096xf32>, %h0: tensor<?x4096xf32>)
    -> (tensor<?x?x4096xf32>, tensor<?x4096xf32>) {
  %h, %hT = mmrec.gated_recurrence %z, %l, %W, %bg init %h0
      : tensor<?x?x4096xf32>, tensor<?x?x4096xf32, #ls>, tensor<32x128x128xf32>, tensor<4096xf32>, tensor<?x4096xf32>
      -> tensor<?x?x4096xf32>, tensor<?x4096xf32>
  return %h, %hT : tensor<?x?x4096xf32>, tensor<?x4096xf32>
}

func.func @dense128_bf16(%z: tensor<?x?x128xbf16>, %l: tensor<?x?x128xf32, #ls>, %W: tensor<128x128xbf16>,
                         %bg: tensor<128xbf16>, %h0: tensor<?x128xbf16>)
    -> (tensor<?x?x128xbf16>, tensor<?x128xbf16>) {
  %h, %hT = mmrec.gated_recurrence %z, %l, %W, %bg init %h0
      : tensor<?x?x128xbf16>, tensor<?x?x128xf32, #ls>, tensor<128x128xbf16>, tensor<128xbf16>, tensor<?x128xbf16>
      -> tensor<?x?x128xbf16>, tensor<?x128xbf16>
  return %h, %hT : tensor<?x?x128xbf16>, tensor<?x128xbf16>
}

// The 7B model's dense gate (D = 4096): the cooperative kernels.
func.func @dense4096_bf16(%z: tensor<?x?x4096xbf16>, %l: tensor<?x?x4096xf32, #ls>, %W: tensor<4096x4096xbf16>,
                          %bg: tensor<4096xbf16>, %h0: tensor<?x4096xbf16>)
    -> (tensor<?x?x4096xbf16>, tensor<?x4096xbf16>) {
  %h, %hT = mmrec.gated_recurrence %z, %l, %W, %bg init %h0
      : tensor<?x?x4096xbf16>, tensor<?x?x4096xf32, #ls>, tensor<4096x4096xbf16>, tensor<4096xbf16>, tensor<?x4096xbf16>
      -> tensor<?x?x4096xbf16>, tensor<?x4096xbf16>
  return %h, %hT : tensor<?x?x4096xbf16>, tensor<?x4096xbf16>
}

// mmrec-small's dense gate (D = 768).
func.func @dense768_bf16(%z: tensor<?x?x768xbf16>, %l: tensor<?x?x768xf32, #ls>, %W: tensor<768x768xbf16>,
                         %bg: tensor<768xbf16>, %h0: tensor<?x768xbf16>)
    -> (tensor<?x?x768xbf16>, tensor<?x768xbf16>) {
  %h, %hT = mmrec.gated_recurrence %z, %l, %W, %bg init %h0
      : tensor<?x?x768xbf16>, tensor<?x?x768xf32, #ls>, tensor<768x768xbf16>, tensor<768xbf16>, tensor<?x768xbf16>
      -> tensor<?x?x768xbf16>, tensor<?x768xbf16>
  return %h, %hT : tensor<?x?x768xbf16>, tensor<?x768xbf16>
}
