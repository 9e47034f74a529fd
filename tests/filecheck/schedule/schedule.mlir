// RUN: aimcc opt %s -p lower-cluster,schedule | filecheck %s --check-prefix=AUTO
// RUN: aimcc opt %s -p "lower-cluster,schedule{pipeline=serial}" | filecheck %s --check-prefix=SERIAL
// RUN: aimcc opt %s -p "lower-cluster,schedule{pipeline=cross tokens=8}" | filecheck %s --check-prefix=CROSS

// The schedule of one placed, lowered LoRA layer on 4 tiles (bias not fused: its call is a
// stage), recorded as the module attribute aimc.schedule (the ops are unchanged). auto picks intra here: the tiles' second chunk
// overlaps the cluster's LoRA and bias of the first; serial runs one chunk of all 16 tokens.

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

// AUTO:        builtin.module attributes {aimc.arch = {preset = "paper-512"}, aimc.target = "hybrid", aimc.chips = "automatic", aimc.schedule = {strategy = "intra", clusters_per_tile = 1 : i64, tokens = 16 : i64, chunks = {"0" = 8 : i64}, makespan_ns = 8878 : i64, energy_pj = 2538923 : i64, busy_bound_ns = 8480 : i64, critical_path_ns = 4638 : i64, chain_bound_ns = 8878 : i64}} {
// AUTO:        %y = aimc.program %val rows [0, 8] cols [0, 8] {tile_id = 0 : i64}
// AUTO:        cluster.call "bias_add"(%y_9, %proj_base_layer_bias) on cluster 0

// SERIAL:      aimc.schedule = {strategy = "serial", clusters_per_tile = 1 : i64, tokens = 16 : i64, chunks = {"0" = 16 : i64}, makespan_ns = 9156 : i64, energy_pj = 2476800 : i64, busy_bound_ns = 8480 : i64, critical_path_ns = 9004 : i64, chain_bound_ns = 9004 : i64}

// CROSS:       aimc.schedule = {strategy = "cross", clusters_per_tile = 1 : i64, tokens = 8 : i64, chunks = {"0" = 8 : i64}, makespan_ns = 4754 : i64, energy_pj = 1269461 : i64, busy_bound_ns = 4240 : i64, critical_path_ns = 4638 : i64, chain_bound_ns = 4638 : i64}
