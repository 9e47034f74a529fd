// RUN: %weights %s %t.npz
// RUN: aimcc opt %s --weights %t.npz -p raise | filecheck %s
// RUN: sed -e "s/WEIGHT half = 0.5/WEIGHT half = 0.25/" %s > %t.other.mlir
// RUN: %weights %t.other.mlir %t.other.npz
// RUN: aimcc opt %s --weights %t.other.npz -p raise | filecheck %s --check-prefix=OTHER

// GELU written out with erf, 0.5 * x * (1 + erf(x / sqrt(2))), is raised to one
// nn.activation: the pattern evaluates the region on probe points, so the constants' values
// decide. With 0.25 for the 0.5 the region is not GELU and stays as ONNX nodes.
// WEIGHT sqrt2 = 1.4142135623730951
// WEIGHT one = 1.0
// WEIGHT half = 0.5

builtin.module {
  func.func @main(%x: tensor<1x4x16xf32>) -> tensor<1x4x16xf32> {
    %sqrt2 = graph.weight "sqrt2" : tensor<f32>
    %one = graph.weight "one" : tensor<f32>
    %half = graph.weight "half" : tensor<f32>
    %d = "graph.node"(%x, %sqrt2) <{op_type = "Div", params = {}}> : (tensor<1x4x16xf32>, tensor<f32>) -> tensor<1x4x16xf32>
    %e = "graph.node"(%d) <{op_type = "Erf", params = {}}> : (tensor<1x4x16xf32>) -> tensor<1x4x16xf32>
    %a = "graph.node"(%e, %one) <{op_type = "Add", params = {}}> : (tensor<1x4x16xf32>, tensor<f32>) -> tensor<1x4x16xf32>
    %m = "graph.node"(%x, %a) <{op_type = "Mul", params = {}}> : (tensor<1x4x16xf32>, tensor<1x4x16xf32>) -> tensor<1x4x16xf32>
    %y = "graph.node"(%m, %half) <{op_type = "Mul", params = {}}> : (tensor<1x4x16xf32>, tensor<f32>) -> tensor<1x4x16xf32>
    func.return %y : tensor<1x4x16xf32>
  }
}

// CHECK-NOT:   graph.node
// CHECK:       %y = nn.activation "gelu_erf" %x : tensor<1x4x16xf32>
// CHECK-NEXT:  func.return %y : tensor<1x4x16xf32>

// OTHER-NOT:   nn.activation
// OTHER:       "graph.node"(%d) <{op_type = "Erf", params = {}}>
// OTHER:       %y = "graph.node"(%m, %half) <{op_type = "Mul", params = {}}>
