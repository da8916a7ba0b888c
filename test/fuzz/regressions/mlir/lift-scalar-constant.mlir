#ls = #mmrec.logspace<min = -50.0, max = 0.0>
func.func @f(%l: tensor<?x?x8xf32, #ls>, %x: tensor<?x?x8xf32>, %h0: tensor<?x8xf32>) -> tensor<?x?x8xf32> {
  %hs, %hT = mmrec.recurrence ins(%l, %x : tensor<?x?x8xf32, #ls>, tensor<?x?x8xf32>) init(%h0 : tensor<?x8xf32>)
      -> (tensor<?x?x8xf32>), (tensor<?x8xf32>) {
  ^bb0(%lt: tensor<?x8xf32, #ls>, %xt: tensor<?x8xf32>, %h: tensor<?x8xf32>):
    %g = mmrec.exp_decay %lt : tensor<?x8xf32, #ls> -> tensor<?x8xf32>
    %gh = arith.mulf %g, %h : tensor<?x8xf32>
    %c = arith.constant true
    %in = arith.select %c, %xt, %xt : tensor<?x8xf32>
    %hn = arith.addf %gh, %in : tensor<?x8xf32>
    mmrec.yield %hn : tensor<?x8xf32>
  }
  return %hs : tensor<?x?x8xf32>
}
