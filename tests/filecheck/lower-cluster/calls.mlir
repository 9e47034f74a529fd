// RUN: %weights %s %t.npz
// RUN: aimcc opt %s --weights %t.npz -p lower-cluster | filecheck %s
// RUN: aimcc opt %s --weights %t.npz -p lower-cluster --set cluster.dtype=fp32 | filecheck %s --check-prefix=F32

// Each digital.kernel becomes a cluster.call listing the RISC-V kernels that compute it, in
// order, with the operands each reads: the LoRA as X.A then .B added in place; attention as
// qk, the mask add, softmax and av (one head each, repeat: the heads); a residual ONNX Add as
// the add kernel. The partial sums of a 2x2 grid of tiles get their kernel on the accumulate
// (one per column of tiles: repeat 2). A reshape is a view (no kernel); an op no kernel
// computes is a call without kernels that says why. The kernels' float data is in the
// cluster's number format: fp16 in the preset (dtype "f16"), "f32" with cluster.dtype=fp32.

builtin.module attributes {aimc.target = "hybrid", aimc.chips = "automatic"} {
  func.func @main(%x: tensor<1x16x16xf32> {onnx.name = "x"}, %mask: tensor<1x1x16x16xf32> {onnx.name = "mask"}) -> (tensor<1x16x16xf32> {onnx.name = "y"}) {
    %val = graph.weight "val_0" : tensor<16x16xf32>
    %val_1 = graph.weight "val_2" : tensor<16x4xf32>
    %val_2 = graph.weight "val_3" : tensor<4x16xf32>
    %shape = graph.weight "shape" : tensor<4xi64>
    %shape2 = graph.weight "shape2" : tensor<3xi64>
    %y = aimc.program %val rows [0, 8] cols [0, 8] {tile_id = 0 : i64} : tensor<16x16xf32> -> !aimc.tile<8x8>
    %y_1 = aimc.mvm %x, %y : (tensor<1x16x16xf32>, !aimc.tile<8x8>) -> tensor<1x16x8xf32>
    %y_2 = aimc.program %val rows [0, 8] cols [8, 16] {tile_id = 1 : i64} : tensor<16x16xf32> -> !aimc.tile<8x8>
    %y_3 = aimc.mvm %x, %y_2 : (tensor<1x16x16xf32>, !aimc.tile<8x8>) -> tensor<1x16x8xf32>
    %y_4 = aimc.program %val rows [8, 16] cols [0, 8] {tile_id = 2 : i64} : tensor<16x16xf32> -> !aimc.tile<8x8>
    %y_5 = aimc.mvm %x, %y_4 : (tensor<1x16x16xf32>, !aimc.tile<8x8>) -> tensor<1x16x8xf32>
    %y_6 = aimc.program %val rows [8, 16] cols [8, 16] {tile_id = 3 : i64} : tensor<16x16xf32> -> !aimc.tile<8x8>
    %y_7 = aimc.mvm %x, %y_6 : (tensor<1x16x16xf32>, !aimc.tile<8x8>) -> tensor<1x16x8xf32>
    %y_8 = aimc.accumulate %y_1, %y_3, %y_5, %y_7 grid [2, 2] {layer = "proj", cluster = 0 : i64} : (tensor<1x16x8xf32>, tensor<1x16x8xf32>, tensor<1x16x8xf32>, tensor<1x16x8xf32>) -> tensor<1x16x16xf32>
    %y_9 = "digital.kernel"(%x, %y_8, %val_1, %val_2) <{kind = "lora", params = {scale = 2.000000e+00 : f32, layer = "proj"}, cluster = 0 : i64}> : (tensor<1x16x16xf32>, tensor<1x16x16xf32>, tensor<16x4xf32>, tensor<4x16xf32>) -> tensor<1x16x16xf32>
    %h = "digital.kernel"(%y_9, %shape) <{kind = "onnx.Reshape", params = {}, cluster = 0 : i64}> : (tensor<1x16x16xf32>, tensor<4xi64>) -> tensor<1x2x16x8xf32>
    %kt = "digital.kernel"(%h) <{kind = "onnx.Transpose", params = {perm = array<i64: 0, 1, 3, 2>}, cluster = 0 : i64}> : (tensor<1x2x16x8xf32>) -> tensor<1x2x8x16xf32>
    %a = "digital.kernel"(%h, %kt, %h, %mask) <{kind = "attention", params = {scale = 0.25 : f32}, cluster = 0 : i64}> : (tensor<1x2x16x8xf32>, tensor<1x2x8x16xf32>, tensor<1x2x16x8xf32>, tensor<1x1x16x16xf32>) -> tensor<1x2x16x8xf32>
    %a_1 = "digital.kernel"(%a, %shape2) <{kind = "onnx.Reshape", params = {}, cluster = 0 : i64}> : (tensor<1x2x16x8xf32>, tensor<3xi64>) -> tensor<1x16x16xf32>
    %g = "digital.kernel"(%a_1) <{kind = "gelu_erf", params = {}, cluster = 0 : i64}> : (tensor<1x16x16xf32>) -> tensor<1x16x16xf32>
    %r = "digital.kernel"(%g, %x) <{kind = "onnx.Add", params = {}, cluster = 0 : i64}> : (tensor<1x16x16xf32>, tensor<1x16x16xf32>) -> tensor<1x16x16xf32>
    %e = "digital.kernel"(%r) <{kind = "onnx.Relu", params = {}, cluster = 0 : i64}> : (tensor<1x16x16xf32>) -> tensor<1x16x16xf32>
    func.return %e : tensor<1x16x16xf32>
  }
}

// CHECK:       %y_8 = aimc.accumulate %y_1, %y_3, %y_5, %y_7 grid [2, 2] {layer = "proj", cluster = 0 : i64, kernel = #cluster.kernel<accumulate f16 [M = 16, N = 8, P = 2] repeat 2 along M>}
// CHECK-NEXT:  %y_9 = cluster.call "lora"(%x, %y_8, %val_1, %val_2) on cluster 0 kernels [#cluster.kernel<lora_xa f16 [K = 16, R = 4, T = 16] along T> reads [0, 2], #cluster.kernel<lora_b_add f16 [N = 16, R = 4, T = 16] {scale = 2.000000e+00} along T> reads [3, 1]] params {scale = 2.000000e+00 : f32, layer = "proj"} : (tensor<1x16x16xf32>, tensor<1x16x16xf32>, tensor<16x4xf32>, tensor<4x16xf32>) -> tensor<1x16x16xf32>
// CHECK-NEXT:  %h = cluster.view "Reshape"(%y_9, %shape) : (tensor<1x16x16xf32>, tensor<4xi64>) -> tensor<1x2x16x8xf32>
// CHECK-NEXT:  %kt = cluster.view "Transpose"(%h) params {perm = array<i64: 0, 1, 3, 2>} : (tensor<1x2x16x8xf32>) -> tensor<1x2x8x16xf32>
// CHECK-NEXT:  %a = cluster.call "attention"(%h, %kt, %h, %mask) on cluster 0 kernels [#cluster.kernel<qk f16 [D = 8, S = 16, S2 = 16] {scale = 2.500000e-01} repeat 2 along S> reads [0, 1], #cluster.kernel<add f16 [M = 16, N = 16] repeat 2 along M> reads [3], #cluster.kernel<softmax f16 [M = 16, N = 16] repeat 2 along M> reads [], #cluster.kernel<av f16 [D = 8, S = 16, S2 = 16] repeat 2 along S> reads [2]] params {scale = 2.500000e-01 : f32}
// CHECK-NEXT:  %a_1 = cluster.view "Reshape"(%a, %shape2)
// CHECK-NEXT:  %g = cluster.call "gelu_erf"(%a_1) on cluster 0 kernels [#cluster.kernel<gelu_erf f16 [N = 256] along N unit 16> reads [0]] : (tensor<1x16x16xf32>) -> tensor<1x16x16xf32>
// CHECK-NEXT:  %r = cluster.call "onnx.Add"(%g, %x) on cluster 0 kernels [#cluster.kernel<add f16 [M = 16, N = 16] along M> reads [0, 1]]
// CHECK-NEXT:  %e = cluster.call "onnx.Relu"(%r) on cluster 0 unsupported "no RISC-V kernel for onnx.Relu" : (tensor<1x16x16xf32>) -> tensor<1x16x16xf32>
// CHECK-NOT:   digital.kernel

// F32-NOT:     {{ f16 \[}}
// F32:         #cluster.kernel<gelu_erf f32 [
// F32-NOT:     {{ f16 \[}}
