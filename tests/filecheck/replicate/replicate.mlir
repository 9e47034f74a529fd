// RUN: %weights %s %t.npz
// RUN: aimcc opt %s --weights %t.npz -p lower-cluster,replicate | filecheck %s --check-prefix=AUTO
// RUN: aimcc opt %s --weights %t.npz -p "lower-cluster,replicate{replicas=2}" | filecheck %s --check-prefix=TWO
// RUN: aimcc opt %s --weights %t.npz -p "lower-cluster,replicate{replicas=off}" | filecheck %s --check-prefix=OFF
// RUN: aimcc opt %s --weights %t.npz -p "lower-cluster,replicate{pipeline=serial}" | filecheck %s --check-prefix=OFF
// RUN: aimcc opt %s --weights %t.npz -p lower-cluster,replicate --set tile.count=4 | filecheck %s --check-prefix=FULL
// RUN: aimcc opt %s --weights %t.npz -p lower-cluster,replicate,replicate | filecheck %s --check-prefix=AUTO

// One placed LoRA layer (64 tokens) on 4 tiles (0-3) whose tiles hold up the pipeline:
// replicate copies it onto free tiles (4-7, 8-11, ...: one copy per chunk of 8 tokens),
// recorded as the first tile of each copy, and the latency it started from as
// aimc.unreplicated_ns. At most 2 copies gives one more; off, the serial pipeline (one task
// at a time) and a chip with no free tile give none; a second run leaves the choice as it is.

builtin.module attributes {aimc.target = "hybrid", aimc.chips = "automatic"} {
  func.func @main(%x: tensor<1x64x16xf32> {onnx.name = "x"}) -> (tensor<1x64x16xf32> {onnx.name = "y"}) {
    %val = graph.weight "val_0" : tensor<16x16xf32>
    %proj_base_layer_bias = graph.weight "proj.base_layer.bias" : tensor<16xf32>
    %val_1 = graph.weight "val_2" : tensor<16x4xf32>
    %val_2 = graph.weight "val_3" : tensor<4x16xf32>
    %y = aimc.program %val rows [0, 8] cols [0, 8] {tile_id = 0 : i64} : tensor<16x16xf32> -> !aimc.tile<8x8>
    %y_1 = aimc.mvm %x, %y : (tensor<1x64x16xf32>, !aimc.tile<8x8>) -> tensor<1x64x8xf32>
    %y_2 = aimc.program %val rows [0, 8] cols [8, 16] {tile_id = 1 : i64} : tensor<16x16xf32> -> !aimc.tile<8x8>
    %y_3 = aimc.mvm %x, %y_2 : (tensor<1x64x16xf32>, !aimc.tile<8x8>) -> tensor<1x64x8xf32>
    %y_4 = aimc.program %val rows [8, 16] cols [0, 8] {tile_id = 2 : i64} : tensor<16x16xf32> -> !aimc.tile<8x8>
    %y_5 = aimc.mvm %x, %y_4 : (tensor<1x64x16xf32>, !aimc.tile<8x8>) -> tensor<1x64x8xf32>
    %y_6 = aimc.program %val rows [8, 16] cols [8, 16] {tile_id = 3 : i64} : tensor<16x16xf32> -> !aimc.tile<8x8>
    %y_7 = aimc.mvm %x, %y_6 : (tensor<1x64x16xf32>, !aimc.tile<8x8>) -> tensor<1x64x8xf32>
    %y_8 = aimc.accumulate %y_1, %y_3, %y_5, %y_7 grid [2, 2] {layer = "proj", cluster = 0 : i64} : (tensor<1x64x8xf32>, tensor<1x64x8xf32>, tensor<1x64x8xf32>, tensor<1x64x8xf32>) -> tensor<1x64x16xf32>
    %y_9 = "digital.kernel"(%x, %y_8, %val_1, %val_2) <{kind = "lora", params = {scale = 2.000000e+00 : f32, layer = "proj"}, cluster = 0 : i64}> : (tensor<1x64x16xf32>, tensor<1x64x16xf32>, tensor<16x4xf32>, tensor<4x16xf32>) -> tensor<1x64x16xf32>
    %y_10 = "digital.kernel"(%y_9, %proj_base_layer_bias) <{kind = "bias_add", params = {layer = "proj"}, cluster = 0 : i64}> : (tensor<1x64x16xf32>, tensor<16xf32>) -> tensor<1x64x16xf32>
    func.return %y_10 : tensor<1x64x16xf32>
  }
}

// AUTO:      builtin.module attributes {aimc.target = "hybrid", aimc.chips = "automatic", aimc.arch = {preset = "paper-512"}, aimc.unreplicated_ns = {{[0-9]+}} : i64} {
// AUTO:      aimc.accumulate %y_1, %y_3, %y_5, %y_7 grid [2, 2] {replicas = array<i64: 4, 8, 12, 16, 20, 24, 28>, layer = "proj", cluster = 0 : i64, kernel = #cluster.kernel<accumulate

// TWO:       aimc.accumulate %y_1, %y_3, %y_5, %y_7 grid [2, 2] {replicas = array<i64: 4>, layer = "proj", cluster = 0 : i64, kernel = #cluster.kernel<accumulate

// OFF-NOT:   replicas
// OFF-NOT:   aimc.unreplicated_ns

// FULL-NOT:  replicas =
