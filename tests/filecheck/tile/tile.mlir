// RUN: aimcc opt %s -p tile | filecheck %s --check-prefix=ONE
// RUN: aimcc opt %s -p "tile{rows=8 cols=8}" | filecheck %s --check-prefix=GRID
// RUN: aimcc opt %s -p "tile{rows=8 cols=16}" | filecheck %s --check-prefix=ROWS
// RUN: sed -e 's/preset = "paper-512"/preset = "hermes-256"/' %s > %t.hermes.mlir
// RUN: aimcc opt %t.hermes.mlir -p tile | filecheck %s --check-prefix=HERMES
// RUN: not aimcc opt %s --arch hermes-256 -p tile 2>&1 | filecheck %s --check-prefix=ARCH

// An analog 16x16 layer: on one tile of the arch (512x512), a 2x2 grid of 8x8 tiles, or two
// row tiles whose partial sums the accumulate adds. The arch is the one the module records
// (aimc.arch): hermes-256 has 256x256 tiles; --arch cannot change it.

builtin.module attributes {aimc.arch = {preset = "paper-512"}, aimc.target = "hybrid"} {
  func.func @main(%x: tensor<1x16x16xf32> {onnx.name = "x"}) -> (tensor<1x16x16xf32> {onnx.name = "y"}) {
    %val = graph.weight "val_0" : tensor<16x16xf32> = dense<1.000000e-02>
    %proj_base_layer_bias = graph.weight "proj.base_layer.bias" : tensor<16xf32> = dense<1.000000e-02>
    %val_1 = graph.weight "val_2" : tensor<16x4xf32> = dense<1.000000e-02>
    %val_2 = graph.weight "val_3" : tensor<4x16xf32> = dense<1.000000e-02>
    %y = aimc.matmul %x, %val {layer = "proj"} : (tensor<1x16x16xf32>, tensor<16x16xf32>) -> tensor<1x16x16xf32>
    %y_1 = "digital.kernel"(%x, %y, %val_1, %val_2) <{kind = "lora", params = {scale = 2.000000e+00 : f32, layer = "proj"}}> : (tensor<1x16x16xf32>, tensor<1x16x16xf32>, tensor<16x4xf32>, tensor<4x16xf32>) -> tensor<1x16x16xf32>
    %y_2 = "digital.kernel"(%y_1, %proj_base_layer_bias) <{kind = "bias_add", params = {layer = "proj"}}> : (tensor<1x16x16xf32>, tensor<16xf32>) -> tensor<1x16x16xf32>
    func.return %y_2 : tensor<1x16x16xf32>
  }
}

// ONE-NOT:      aimc.matmul
// ONE:          %y = aimc.program %val rows [0, 16] cols [0, 16] : tensor<16x16xf32> -> !aimc.tile<512x512>
// ONE-NEXT:     %y_1 = aimc.mvm %x, %y : (tensor<1x16x16xf32>, !aimc.tile<512x512>) -> tensor<1x16x16xf32>
// ONE-NEXT:     %y_2 = aimc.accumulate %y_1 grid [1, 1] {layer = "proj"} : (tensor<1x16x16xf32>) -> tensor<1x16x16xf32>
// ONE-NEXT:     %y_3 = "digital.kernel"(%x, %y_2, %val_1, %val_2) <{kind = "lora"

// GRID-NOT:     aimc.matmul
// GRID:         %y = aimc.program %val rows [0, 8] cols [0, 8] : tensor<16x16xf32> -> !aimc.tile<8x8>
// GRID-NEXT:    %y_1 = aimc.mvm %x, %y : (tensor<1x16x16xf32>, !aimc.tile<8x8>) -> tensor<1x16x8xf32>
// GRID-NEXT:    %y_2 = aimc.program %val rows [0, 8] cols [8, 16] : tensor<16x16xf32> -> !aimc.tile<8x8>
// GRID-NEXT:    %y_3 = aimc.mvm %x, %y_2 : (tensor<1x16x16xf32>, !aimc.tile<8x8>) -> tensor<1x16x8xf32>
// GRID-NEXT:    %y_4 = aimc.program %val rows [8, 16] cols [0, 8] : tensor<16x16xf32> -> !aimc.tile<8x8>
// GRID-NEXT:    %y_5 = aimc.mvm %x, %y_4 : (tensor<1x16x16xf32>, !aimc.tile<8x8>) -> tensor<1x16x8xf32>
// GRID-NEXT:    %y_6 = aimc.program %val rows [8, 16] cols [8, 16] : tensor<16x16xf32> -> !aimc.tile<8x8>
// GRID-NEXT:    %y_7 = aimc.mvm %x, %y_6 : (tensor<1x16x16xf32>, !aimc.tile<8x8>) -> tensor<1x16x8xf32>
// GRID-NEXT:    %y_8 = aimc.accumulate %y_1, %y_3, %y_5, %y_7 grid [2, 2] {layer = "proj"} : (tensor<1x16x8xf32>, tensor<1x16x8xf32>, tensor<1x16x8xf32>, tensor<1x16x8xf32>) -> tensor<1x16x16xf32>
// GRID-NEXT:    %y_9 = "digital.kernel"(%x, %y_8, %val_1, %val_2) <{kind = "lora"

// ROWS:         %y = aimc.program %val rows [0, 8] cols [0, 16] : tensor<16x16xf32> -> !aimc.tile<8x16>
// ROWS-NEXT:    %y_1 = aimc.mvm %x, %y : (tensor<1x16x16xf32>, !aimc.tile<8x16>) -> tensor<1x16x16xf32>
// ROWS-NEXT:    %y_2 = aimc.program %val rows [8, 16] cols [0, 16] : tensor<16x16xf32> -> !aimc.tile<8x16>
// ROWS-NEXT:    %y_3 = aimc.mvm %x, %y_2 : (tensor<1x16x16xf32>, !aimc.tile<8x16>) -> tensor<1x16x16xf32>
// ROWS-NEXT:    %y_4 = aimc.accumulate %y_1, %y_3 grid [2, 1] {layer = "proj"} : (tensor<1x16x16xf32>, tensor<1x16x16xf32>) -> tensor<1x16x16xf32>

// HERMES:       builtin.module attributes {aimc.arch = {preset = "hermes-256"}, aimc.target = "hybrid"} {
// HERMES:       %y = aimc.program %val rows [0, 16] cols [0, 16] : tensor<16x16xf32> -> !aimc.tile<256x256>

// ARCH:         aimcc: error: --arch hermes-256: {{.*}}tile.mlir records the architecture it is compiled for (aimc.arch); change its values with --set
