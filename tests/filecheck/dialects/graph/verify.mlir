// RUN: aimcc opt %s --split-input-file --verify-diagnostics | filecheck %s

// The graph dialect: a node's op type is an ONNX op type (capitalised); a weight's key must be
// in the weight store beside the IR unless the weight's value is inline, of the weight's type.

builtin.module {
  func.func @main(%x: tensor<4x8xf32>) -> tensor<4x8xf32> {
    %w = graph.weight "w" : tensor<4x8xf32> = dense<1.000000e-02>
    %y = "graph.node"(%x, %w) <{op_type = "Add", params = {}}> : (tensor<4x8xf32>, tensor<4x8xf32>) -> tensor<4x8xf32>
    func.return %y : tensor<4x8xf32>
  }
}
// CHECK:      %y = "graph.node"(%x, %w) <{op_type = "Add", params = {}}>
// CHECK:      // -----

// -----
builtin.module {
  func.func @main(%x: tensor<4x8xf32>) -> tensor<4x8xf32> {
    %y = "graph.node"(%x) <{op_type = "relu", params = {}}> : (tensor<4x8xf32>) -> tensor<4x8xf32>
    func.return %y : tensor<4x8xf32>
  }
}
// CHECK-NEXT: error: {{.*}}: IR does not verify: graph.node: bad ONNX op type 'relu'
// CHECK-NEXT: // -----

// -----
builtin.module {
  func.func @main(%x: tensor<4x8xf32>) -> tensor<4x8xf32> {
    %y = "graph.node"(%x) <{op_type = "", params = {}}> : (tensor<4x8xf32>) -> tensor<4x8xf32>
    func.return %y : tensor<4x8xf32>
  }
}
// CHECK-NEXT: error: {{.*}}: IR does not verify: graph.node: bad ONNX op type ''
// CHECK-NEXT: // -----

// -----
builtin.module {
  func.func @main() -> tensor<4xf32> {
    %w = "graph.weight"() <{key = "w_missing_from_the_store"}> : () -> tensor<4xf32>
    func.return %w : tensor<4xf32>
  }
}
// CHECK-NEXT: error: {{.*}}: weight 'w_missing_from_the_store' is not in the weight store (1 missing)
// CHECK-NEXT: // -----

// -----
builtin.module {
  func.func @main() -> tensor<4xf32> {
    %w = "graph.weight"() <{key = "w", value = dense<1.000000e+00> : tensor<2xf32>}> : () -> tensor<4xf32>
    func.return %w : tensor<4xf32>
  }
}
// CHECK-NEXT: error: {{.*}}: IR does not verify: graph.weight 'w': value of type tensor<2xf32> for a result of type tensor<4xf32>
// CHECK-NEXT: // -----

// -----
builtin.module {
  func.func @main() -> tensor<4xf32> {
    %w = graph.weight "w" : tensor<4xf32> = dense<[1.0, 2.0]>
    func.return %w : tensor<4xf32>
  }
}
// CHECK-NEXT: error: {{.*}}verify.mlir:{{[0-9:]+}} Shape mismatch in dense literal. Expected [4] shape from the type, but got [2] shape.
// CHECK-NOT:  // -----
