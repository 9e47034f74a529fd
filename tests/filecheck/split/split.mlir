// RUN: aimcc opt %s -p lower-cluster,split | filecheck %s --check-prefix=FITS
// RUN: aimcc opt %s -p lower-cluster,split --set cluster.tcdm_kib=1 | filecheck %s --check-prefix=SPLIT

// The placed, lowered LoRA layer (bias not fused): its digital work fits the arch's 128 KiB TCDM and is not split; with
// 1 KiB, the accumulation and the bias are spread over 2 clusters by output columns (the lora
// kernel is not splittable).

builtin.module attributes {aimc.arch = {preset = "paper-512"}, aimc.target = "hybrid", aimc.chips = "automatic"} {
  func.func @main(%x: tensor<1x16x16xf32> {onnx.name = "x"}) -> (tensor<1x16x16xf32> {onnx.name = "y"}) {
    %val = graph.weight "val_0" : tensor<16x16xf32> = dense<1.000000e-02>
    %proj_base_layer_bias = graph.weight "proj.base_layer.bias" : tensor<16xf32> = dense<1.000000e-02>
    %val_1 = graph.weight "val_2" : tensor<16x4xf32> = dense<1.000000e-02>
    %val_2 = graph.weight "val_3" : tensor<4x16xf32> = dense<1.000000e-02>
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
    %y_10 = "digital.kernel"(%y_9, %proj_base_layer_bias) <{kind = "bias_add", params = {layer = "proj"}, cluster = 0 : i64}> : (tensor<1x16x16xf32>, tensor<16xf32>) -> tensor<1x16x16xf32>
    func.return %y_10 : tensor<1x16x16xf32>
  }
}

// FITS-NOT:   split =

// The --set is recorded with the arch: the output compiles as it was split.
// SPLIT:      builtin.module attributes {aimc.arch = {preset = "paper-512", cluster.tcdm_kib = 1 : i64}, aimc.target = "hybrid", aimc.chips = "automatic"} {
// SPLIT:      %y_8 = aimc.accumulate %y_1, %y_3, %y_5, %y_7 grid [2, 2] {split = 2 : i64, layer = "proj", cluster = 0 : i64, kernel = #cluster.kernel<accumulate f16 [M = 16, N = 8, P = 2] repeat 2 along M>}
// SPLIT-NEXT: %y_9 = cluster.call "lora"(%x, %y_8, %val_1, %val_2) on cluster 0 kernels [{{.*}}]
// SPLIT-NEXT: %y_10 = cluster.call "bias_add"(%y_9, %proj_base_layer_bias) on cluster 0 split 2 kernels [#cluster.kernel<bias_add f16 [M = 16, N = 16] along M> reads [0, 1]] params {layer = "proj"}
