func.func @f(%x: tensor<4xf32>) {
  %y = mmrec.nope %x : tensor<4xf32>
  return
}
