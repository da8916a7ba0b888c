func.func @f(%x: tensor<4xf32>) {
  %y = mmrec.sigmoid %x : tensor<4xf16>
  return
}
