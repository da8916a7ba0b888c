func.func @f(%l: tensor<4x!x, #mmrec.logspace<min = -50.0, max = 0.0>>)
