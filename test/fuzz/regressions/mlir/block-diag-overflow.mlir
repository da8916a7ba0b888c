func.func @f(%a: tensor<3x4xf32>, %w: tensor<4294967296x4294967296x4294967296xf32>) {
  %y = mmrec.block_diag_matmul %a, %w : tensor<3x4xf32>, tensor<4294967296x4294967296x4294967296xf32> -> tensor<3x4xf32>
  return
}
