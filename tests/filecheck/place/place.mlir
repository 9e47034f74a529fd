// RUN: aimcc opt %s -p place | filecheck %s

// Tiles numbered in program order; the layer's partial sums and kernels run on the cluster of
// its first tile, recorded on each op.

builtin.module attributes {aimc.arch = {preset = "paper-512"}, aimc.target = "hybrid"} {
  func.func @main(%x: tensor<1x16x16xf32> {onnx.name = "x"}) -> (tensor<1x16x16xf32> {onnx.name = "y"}) {
    %val = graph.weight "val_0" : tensor<16x16xf32> = dense<1.000000e-02>
    %proj_base_layer_bias = graph.weight "proj.base_layer.bias" : tensor<16xf32> = dense<1.000000e-02>
    %val_1 = graph.weight "val_2" : tensor<16x4xf32> = dense<1.000000e-02>
    %val_2 = graph.weight "val_3" : tensor<4x16xf32> = dense<1.000000e-02>
    %y = aimc.program %val rows [0, 8] cols [0, 8] : tensor<16x16xf32> -> !aimc.tile<8x8>
    %y_1 = aimc.mvm %x, %y : (tensor<1x16x16xf32>, !aimc.tile<8x8>) -> tensor<1x16x8xf32>
    %y_2 = aimc.program %val rows [0, 8] cols [8, 16] : tensor<16x16xf32> -> !aimc.tile<8x8>
    %y_3 = aimc.mvm %x, %y_2 : (tensor<1x16x16xf32>, !aimc.tile<8x8>) -> tensor<1x16x8xf32>
    %y_4 = aimc.program %val rows [8, 16] cols [0, 8] : tensor<16x16xf32> -> !aimc.tile<8x8>
    %y_5 = aimc.mvm %x, %y_4 : (tensor<1x16x16xf32>, !aimc.tile<8x8>) -> tensor<1x16x8xf32>
    %y_6 = aimc.program %val rows [8, 16] cols [8, 16] : tensor<16x16xf32> -> !aimc.tile<8x8>
    %y_7 = aimc.mvm %x, %y_6 : (tensor<1x16x16xf32>, !aimc.tile<8x8>) -> tensor<1x16x8xf32>
    %y_8 = aimc.accumulate %y_1, %y_3, %y_5, %y_7 grid [2, 2] {layer = "proj"} : (tensor<1x16x8xf32>, tensor<1x16x8xf32>, tensor<1x16x8xf32>, tensor<1x16x8xf32>) -> tensor<1x16x16xf32>
    %y_9 = "digital.kernel"(%x, %y_8, %val_1, %val_2) <{kind = "lora", params = {scale = 2.000000e+00 : f32, layer = "proj"}}> : (tensor<1x16x16xf32>, tensor<1x16x16xf32>, tensor<16x4xf32>, tensor<4x16xf32>) -> tensor<1x16x16xf32>
    %y_10 = "digital.kernel"(%y_9, %proj_base_layer_bias) <{kind = "bias_add", params = {layer = "proj"}}> : (tensor<1x16x16xf32>, tensor<16xf32>) -> tensor<1x16x16xf32>
    func.return %y_10 : tensor<1x16x16xf32>
  }
}

// CHECK:       builtin.module attributes {aimc.arch = {preset = "paper-512"}, aimc.target = "hybrid", aimc.chips = "automatic"} {
// CHECK:       %y = aimc.program %val rows [0, 8] cols [0, 8] {tile_id = 0 : i64} : tensor<16x16xf32> -> !aimc.tile<8x8>
// CHECK:       %y_2 = aimc.program %val rows [0, 8] cols [8, 16] {tile_id = 1 : i64}
// CHECK:       %y_4 = aimc.program %val rows [8, 16] cols [0, 8] {tile_id = 2 : i64}
// CHECK:       %y_6 = aimc.program %val rows [8, 16] cols [8, 16] {tile_id = 3 : i64}
// CHECK:       %y_8 = aimc.accumulate %y_1, %y_3, %y_5, %y_7 grid [2, 2] {layer = "proj", cluster = 0 : i64}
// CHECK-NEXT:  %y_9 = "digital.kernel"(%x, %y_8, %val_1, %val_2) <{kind = "lora", params = {scale = 2.000000e+00 : f32, layer = "proj"}, cluster = 0 : i64}>
// CHECK-NEXT:  %y_10 = "digital.kernel"(%y_9, %proj_base_layer_bias) <{kind = "bias_add", params = {layer = "proj"}, cluster = 0 : i64}>
