func.func @f(%k: tensor<2x9223372036854775806x8xf32>) {
  %K1 = mmrec.chunk_mean %k {chunk = 16 : i64} : tensor<2x9223372036854775806x8xf32> -> tensor<2x3x8xf32>
  return
}
