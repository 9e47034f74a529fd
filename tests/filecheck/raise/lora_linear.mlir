// RUN: aimcc opt %s -p raise | filecheck %s

// A LoRA linear as the exporter writes it (MatMul + Add, A/B MatMuls, scale Mul, Add) is
// raised to one nn.linear that keeps the adapter and its scale.

builtin.module {
  func.func @main(%x: tensor<1x16x16xf32> {onnx.name = "x"}) -> (tensor<1x16x16xf32> {onnx.name = "y"}) {
    %val = graph.weight "val_0" : tensor<16x16xf32> = dense<1.000000e-02>
    %val_1 = "graph.node"(%x, %val) <{op_type = "MatMul", params = {}, node_name = "node_MatMul_1", scope = "proj.base_layer"}> : (tensor<1x16x16xf32>, tensor<16x16xf32>) -> tensor<1x16x16xf32>
    %proj_base_layer_bias = graph.weight "proj.base_layer.bias" : tensor<16xf32> = dense<1.000000e-02>
    %linear = "graph.node"(%val_1, %proj_base_layer_bias) <{op_type = "Add", params = {}, node_name = "node_linear", scope = "proj.base_layer"}> : (tensor<1x16x16xf32>, tensor<16xf32>) -> tensor<1x16x16xf32>
    %val_2 = graph.weight "val_2" : tensor<16x4xf32> = dense<1.000000e-02>
    %linear_1 = "graph.node"(%x, %val_2) <{op_type = "MatMul", params = {}, node_name = "node_linear_1", scope = "proj.lora_A.default"}> : (tensor<1x16x16xf32>, tensor<16x4xf32>) -> tensor<1x16x4xf32>
    %val_3 = graph.weight "val_3" : tensor<4x16xf32> = dense<1.000000e-02>
    %linear_2 = "graph.node"(%linear_1, %val_3) <{op_type = "MatMul", params = {}, node_name = "node_linear_2", scope = "proj.lora_B.default"}> : (tensor<1x16x4xf32>, tensor<4x16xf32>) -> tensor<1x16x16xf32>
    %val_4 = graph.weight "val_4" : tensor<f32> = dense<2.000000e+00>
    %mul = "graph.node"(%linear_2, %val_4) <{op_type = "Mul", params = {}, node_name = "node_mul_9", scope = "proj"}> : (tensor<1x16x16xf32>, tensor<f32>) -> tensor<1x16x16xf32>
    %y = "graph.node"(%linear, %mul) <{op_type = "Add", params = {}, node_name = "node_add_16", scope = "proj"}> : (tensor<1x16x16xf32>, tensor<1x16x16xf32>) -> tensor<1x16x16xf32>
    func.return %y : tensor<1x16x16xf32>
  }
}

// CHECK:       func.func @main(%x: tensor<1x16x16xf32> {onnx.name = "x"})
// CHECK-NOT:   graph.node
// CHECK:       %y = nn.linear %x, %val bias %proj_base_layer_bias lora(%val_1, %val_2) {lora_scale = 2.000000e+00 : f32, layer = "proj"} : (tensor<1x16x16xf32>, tensor<16x16xf32>, tensor<16xf32>, tensor<16x4xf32>, tensor<4x16xf32>) -> tensor<1x16x16xf32>
// CHECK-NOT:   graph.node
// CHECK-NEXT:  func.return %y : tensor<1x16x16xf32>
