// RUN: %weights %s %t.npz
// RUN: aimcc opt %s --weights %t.npz -p fuse-bias -o %t.fused.mlir
// RUN: filecheck %s < %t.fused.mlir
// RUN: aimcc opt %t.fused.mlir | filecheck %s

// The bias of an analog layer goes into its tiles' post-processing: after the LoRA (which is
// linear in the layer's output) as on a plain layer. The bias_add is gone and its weight is the
// accumulate's `bias` operand (moved up when it came later), printed inline as any small weight:
// the output is a complete test case (it reads back with no weight store). A bias added to a
// computed value (not a weight) stays.

builtin.module attributes {aimc.target = "hybrid"} {
  func.func @main(%x: tensor<1x16x16xf32> {onnx.name = "x"}, %b: tensor<16xf32> {onnx.name = "b"}) -> (tensor<1x16x16xf32> {onnx.name = "y"}, tensor<1x16x16xf32> {onnx.name = "z"}) {
    %val = graph.weight "val_0" : tensor<16x16xf32>
    %proj_base_layer_bias = graph.weight "proj.base_layer.bias" : tensor<16xf32>
    %val_1 = graph.weight "val_2" : tensor<16x4xf32>
    %val_2 = graph.weight "val_3" : tensor<4x16xf32>
    %y = aimc.program %val rows [0, 16] cols [0, 16] : tensor<16x16xf32> -> !aimc.tile<16x16>
    %y_1 = aimc.mvm %x, %y : (tensor<1x16x16xf32>, !aimc.tile<16x16>) -> tensor<1x16x16xf32>
    %y_8 = aimc.accumulate %y_1 grid [1, 1] {layer = "proj"} : (tensor<1x16x16xf32>) -> tensor<1x16x16xf32>
    %y_9 = "digital.kernel"(%x, %y_8, %val_1, %val_2) <{kind = "lora", params = {scale = 2.000000e+00 : f32, layer = "proj"}}> : (tensor<1x16x16xf32>, tensor<1x16x16xf32>, tensor<16x4xf32>, tensor<4x16xf32>) -> tensor<1x16x16xf32>
    %y_10 = "digital.kernel"(%y_9, %proj_base_layer_bias) <{kind = "bias_add", params = {layer = "proj"}}> : (tensor<1x16x16xf32>, tensor<16xf32>) -> tensor<1x16x16xf32>
    %p = aimc.program %val rows [0, 16] cols [0, 16] : tensor<16x16xf32> -> !aimc.tile<16x16>
    %p_1 = aimc.mvm %y_10, %p : (tensor<1x16x16xf32>, !aimc.tile<16x16>) -> tensor<1x16x16xf32>
    %p_2 = aimc.accumulate %p_1 grid [1, 1] {layer = "plain"} : (tensor<1x16x16xf32>) -> tensor<1x16x16xf32>
    %plain_bias = graph.weight "plain.bias" : tensor<16xf32>
    %p_3 = "digital.kernel"(%p_2, %plain_bias) <{kind = "bias_add", params = {}}> : (tensor<1x16x16xf32>, tensor<16xf32>) -> tensor<1x16x16xf32>
    %z = "digital.kernel"(%p_3, %b) <{kind = "bias_add", params = {}}> : (tensor<1x16x16xf32>, tensor<16xf32>) -> tensor<1x16x16xf32>
    func.return %y_10, %z : tensor<1x16x16xf32>, tensor<1x16x16xf32>
  }
}

// CHECK:       %proj_base_layer_bias = graph.weight "proj.base_layer.bias" : tensor<16xf32> = dense<[
// CHECK:       %[[ACC:.*]] = aimc.accumulate %{{.*}} bias %proj_base_layer_bias grid [1, 1] {layer = "proj"} : (tensor<1x16x16xf32>, tensor<16xf32>) -> tensor<1x16x16xf32>
// CHECK-NEXT:  %[[LORA:.*]] = "digital.kernel"(%x, %[[ACC]], %val_1, %val_2) <{kind = "lora"
// CHECK-NEXT:  %p = aimc.program
// CHECK-NEXT:  %p_1 = aimc.mvm %[[LORA]], %p
// CHECK-NEXT:  %plain_bias = graph.weight "plain.bias" : tensor<16xf32> = dense<[
// CHECK-NEXT:  %p_2 = aimc.accumulate %p_1 bias %plain_bias grid [1, 1] {layer = "plain"}
// CHECK-NEXT:  %z = "digital.kernel"(%p_2, %b) <{kind = "bias_add", params = {}}>
// CHECK-NEXT:  func.return %[[LORA]], %z
// CHECK-NOT:   bias_add
