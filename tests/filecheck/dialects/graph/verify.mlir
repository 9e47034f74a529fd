// RUN: %weights %s %t.npz
// RUN: aimcc opt %s --weights %t.npz --split-input-file --verify-diagnostics | filecheck %s

// The graph dialect: a node's op type is an ONNX op type (capitalised), and a weight's key must
// be in the weight store beside the IR.

builtin.module {
  func.func @main(%x: tensor<4x8xf32>) -> tensor<4x8xf32> {
    %w = graph.weight "w" : tensor<4x8xf32>
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
